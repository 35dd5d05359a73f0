"""The extra cost of call messages (rule 13) per call: Redis commands, CPU, Stream and 100ms calls,
with CALLSYNC_CALL_MESSAGES on against off, in the same run.

Each call is what the worker steps do for one session: its open, two peers joining, its close
(webhooks handed to the steps as the tasks would), and every follow-up task run to the end. The
steps run in this process on a private embedded Valkey (the test suite's, so INFO commandstats
counts callsync's commands only), with the platform stand-ins served in-process through httpx's
WSGI transport: the CPU figure includes the stand-ins' share of each request.

    .venv/bin/python bench/messages.py [--calls 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.servers import real_url, stop_embedded
from tests.support.world import World
from worker.settings import Rate
from worker.steps import messages


def commands(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info", "cmdstat_config|resetstat"))


def one_mode(client: redis.Redis, on: bool, calls: int) -> dict[str, float]:
    client.flushdb()
    # The ceilings are on the Redis clock (real time): out of the way, to measure the work alone.
    unbounded = Rate(10_000_000, 60.0)
    world = World(client, call_messages=on, stream_update_rate=unbounded, stream_message_rate=unbounded)
    if on:
        messages.upsert_message_user(world.rt)
    cids = []
    for n in range(calls):
        cid = f"messaging:bench-{n}"
        world.stream.create_channel(cid)
        cids.append(cid)
    client.config_resetstat()
    stream_before, hms_before = len(world.stream.calls), len(world.hms.calls)
    cpu = time.process_time()
    for cid in cids:
        room = world.hms.create_room(f"call-{cid}")
        session = world.hms.open_session(room["id"], started_at=world.now)
        world.deliver_hms(world.hms_event("session.open.success", session, room))
        for user in ("alice", "bob"):
            peer = world.hms.join_peer(session["id"], user, webhook=False)
            joined = world.hms.sessions[session["id"]]["peers"][peer]["joined_at"]
            world.deliver_hms(world.hms_event("peer.join.success", session, room, peer_id=peer, user_id=user, joined_at=joined))
        world.now += 60
        world.hms.close_session(session["id"])
        world.deliver_hms(world.hms_event("session.close.success", session, room))
        world.now += 120  # past any recheck the close left
        world.drain()
    cpu = time.process_time() - cpu
    if on:
        assert sum(len(world.stream.messages_in(c)) for c in cids) == calls
    return {
        "redis": commands(client) / calls,
        "cpu_ms": cpu * 1000 / calls,
        "stream": (len(world.stream.calls) - stream_before) / calls,
        "hms": (len(world.hms.calls) - hms_before) / calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    client = redis.Redis.from_url(real_url())
    results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    try:
        one_mode(client, True, 10)  # warm up: scripts loaded, imports done
        for _ in range(args.rounds):
            for on in (False, True):
                results[on].append(one_mode(client, on, args.calls))
    finally:
        client.close()
        stop_embedded()
    print(f"{args.calls} calls per round, {args.rounds} rounds, medians per call")
    print(f"{'':14}{'off':>10}{'on':>10}{'extra':>10}{'ratio':>8}")
    for name in ("redis", "cpu_ms", "stream", "hms"):
        off = statistics.median(r[name] for r in results[False])
        on = statistics.median(r[name] for r in results[True])
        print(f"{name:14}{off:10.2f}{on:10.2f}{on - off:10.2f}{(on / off if off else float('inf')):8.2f}")


if __name__ == "__main__":
    main()
