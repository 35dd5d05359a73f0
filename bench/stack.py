"""What the benches that run callsync's real roles against stand-ins in their own process share
(bench/burst.py, bench/scale.py): one `callsync web` and one `callsync worker` started against
the given stand-ins and a Redis, and Redis's command count."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from standins import FakeHms, FakeStream, serve
from standins.running import platform_settings
from worker.cli import launch


def commands(client: redis.Redis) -> int:
    """Every command the server has run so far (those run inside Lua included)."""
    return int(client.info("stats")["total_commands_processed"])


@dataclass
class Roles:
    web: str  # the receiver's base URL
    env: dict[str, str]  # the roles' environment
    children: list[launch.Child]  # web, worker

    @property
    def groups(self) -> dict[str, int]:
        """Process group of each role, for e2e.cpu_seconds."""
        return {"web": self.children[0].process.pid, "worker": self.children[1].process.pid}


@contextlib.contextmanager
def roles(
    url: str, stream: FakeStream, hms: FakeHms, rate: str, tag: str, logs: Path, extra: Mapping[str, str] = {}
) -> Iterator[Roles]:
    """Serve both stand-ins (built with standins.credentials), point their webhooks at a new `callsync web`, start it and one
    `callsync worker` (CALLSYNC_STREAM_UPDATE_RATE=`rate`, `extra` settings, logs in `logs` named
    by `tag`) on the Redis at `url`, wait until both are ready; stop everything on the way out."""
    store = redis.Redis.from_url(url)
    stream_url, stop_stream = serve(stream.app)
    hms_url, stop_hms = serve(hms.app)
    port = launch.free_port()
    web = f"http://127.0.0.1:{port}"
    stream.webhook_url, hms.webhook_url = f"{web}/webhooks/stream", f"{web}/webhooks/hms"
    env = {
        **launch.clean_environment(),
        "REDIS_URL": url,
        **platform_settings(stream_url, hms_url),
        "CALLSYNC_STREAM_UPDATE_RATE": rate,
        **extra,
    }
    children = [
        launch.start(f"{tag}-web", launch.role_argv("web", "--port", port), env, logs),
        launch.start(f"{tag}-worker", launch.role_argv("worker"), env, logs),
    ]
    try:
        launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver")
        launch.wait_for(lambda: store.zcard("cs:workers") >= 1, 60, "the worker")
        time.sleep(1.0)
        yield Roles(web, env, children)
    finally:
        launch.stop(children)
        stop_stream()
        stop_hms()
