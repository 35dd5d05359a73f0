"""Both stand-ins served on real sockets, and the settings that point callsync's roles at them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .credentials import HMS_KEY, HMS_SECRET, HOOK_SECRET, STREAM_KEY, STREAM_SECRET
from .hms import FakeHms
from .serve import serve
from .stream import FakeStream


@dataclass
class Platforms:
    stream: FakeStream
    hms: FakeHms
    stream_url: str
    hms_url: str

    def settings(self) -> dict[str, str]:
        """The settings (docs/configuration.md) that point callsync's roles at these stand-ins."""
        return platform_settings(self.stream_url, self.hms_url)

    def send_webhooks_to(self, receiver: str) -> None:
        """Deliver both platforms' webhooks to callsync's receiver at `receiver` (a base URL)."""
        receiver = receiver.rstrip("/")
        self.stream.webhook_url, self.hms.webhook_url = f"{receiver}/webhooks/stream", f"{receiver}/webhooks/hms"


def platform_settings(stream_url: str, hms_url: str) -> dict[str, str]:
    """The settings that point callsync's roles at stand-ins serving at these URLs under the
    stand-ins' credentials (for stand-ins run in another process, as the benches do)."""
    return {
        "STREAM_BASE_URL": stream_url,
        "STREAM_API_KEY": STREAM_KEY,
        "STREAM_API_SECRET": STREAM_SECRET,
        "HMS_BASE_URL": hms_url,
        "HMS_ACCESS_KEY": HMS_KEY,
        "HMS_APP_SECRET": HMS_SECRET,
        "HMS_WEBHOOK_SECRET": HOOK_SECRET,
    }


@contextlib.contextmanager
def running(*, stream_port: int = 0, hms_port: int = 0, **stream_options: Any) -> Iterator[Platforms]:
    """Serve a FakeStream (with `stream_options`) and a FakeHms under the stand-ins' credentials."""
    stream = FakeStream(STREAM_KEY, STREAM_SECRET, **stream_options)
    hms = FakeHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK_SECRET)
    stream_url, stop_stream = serve(stream.app, port=stream_port)
    try:
        hms_url, stop_hms = serve(hms.app, port=hms_port)
        try:
            yield Platforms(stream, hms, stream_url, hms_url)
        finally:
            stop_hms()
    finally:
        stop_stream()
