"""Run both stand-ins as one process, for trying callsync by hand against them.

    python -m standins --stream-port 8101 --hms-port 8102 --receiver http://127.0.0.1:8000 \
        --channel messaging:general

prints the environment that points callsync at them, then serves until Ctrl-C. Drive them
from Python (`standins.FakeStream`, `FakeHms`) for anything scripted: tests, `callsync demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import threading

from .running import running


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m standins", description=__doc__.split("\n")[0])
    parser.add_argument("--stream-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--hms-port", type=int, default=0, help="0: a free port")
    parser.add_argument("--receiver", default="http://127.0.0.1:8000", help="where callsync receives webhooks")
    parser.add_argument("--channel", action="append", default=[], help="a channel cid to create (repeatable)")
    args = parser.parse_args(argv)
    with running(stream_port=args.stream_port, hms_port=args.hms_port) as platforms:
        platforms.send_webhooks_to(args.receiver)
        for cid in args.channel:
            platforms.stream.create_channel(cid)
        print("# stand-ins serving; point callsync at them with:", flush=True)
        for name, value in platforms.settings().items():
            print(f"export {name}={value}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
