"""Run both stand-ins as one process, for trying callsync by hand against them.

    python -m standins --stream-port 8101 --hms-port 8102 --receiver http://127.0.0.1:8000 \
        --channel messaging:general

prints the environment that points callsync at them, then serves until Ctrl-C. Drive them
from Python (`standins.FakeStream`, `FakeHms`) for anything scripted: tests, `callsync demo`.
"""

from __future__ import annotations

import argparse
import threading

from worker.cli.launch import platform_settings

from .hms import FakeHms
from .serve import serve
from .stream import FakeStream

STREAM_KEY = "standin-stream-key"
STREAM_SECRET = "standin-stream-secret-0123456789abcdef"  # noqa: S105 - a stand-in's public value
HMS_KEY = "standin-hms-access-key"
HMS_SECRET = "standin-hms-app-secret-0123456789abcdef"  # noqa: S105 - a stand-in's public value
HOOK_SECRET = "standin-hms-webhook-secret"  # noqa: S105 - a stand-in's public value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m standins", description=__doc__.split("\n")[0])
    parser.add_argument("--stream-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--hms-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--receiver", default="http://127.0.0.1:8000", help="where callsync receives webhooks")
    parser.add_argument("--channel", action="append", default=[], help="a channel cid to create (repeatable)")
    args = parser.parse_args(argv)
    receiver = args.receiver.rstrip("/")
    stream = FakeStream(STREAM_KEY, STREAM_SECRET, webhook_url=f"{receiver}/webhooks/stream")
    hms = FakeHms(HMS_KEY, HMS_SECRET, webhook_url=f"{receiver}/webhooks/hms", webhook_secret=HOOK_SECRET)
    for cid in args.channel:
        stream.create_channel(cid)
    stream_url, stop_stream = serve(stream.app, port=args.stream_port)
    hms_url, stop_hms = serve(hms.app, port=args.hms_port)
    env = platform_settings(
        stream_url=stream_url,
        stream_key=STREAM_KEY,
        stream_secret=STREAM_SECRET,
        hms_url=hms_url,
        hms_key=HMS_KEY,
        hms_secret=HMS_SECRET,
        hook_secret=HOOK_SECRET,
    )
    print("# stand-ins serving; point callsync at them with:", flush=True)
    for name, value in env.items():
        print(f"export {name}={value}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_stream()
        stop_hms()


if __name__ == "__main__":
    main()
