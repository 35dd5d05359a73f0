#!/usr/bin/env python3
"""One sweep pass over many open sessions of which few are due, and Redis memory per session.

    .venv/bin/python bench/sweep.py [--big 1000000] [--small 10000] [--due 1000]

Uses a real Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379/10; flushed). Sessions
are written with callsync's own storage code (State) in pipelines; the pass is the real
`sweeps.sweep` with the follow-up tasks recorded, not sent (API calls excluded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.core.sessions import Session
from worker.settings import Settings
from worker.steps import sweep as sweeps
from worker.steps.runtime import build_runtime
from worker.store.codec import session_to_hash
from worker.store.indexes import session_moves
from worker.store.keys import CLOSED_TTL, call_key
from worker.store.state import State

HOUR = 3600.0


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def populate(state: State, total: int, due: int, now: float) -> None:
    """`total` open sessions, `due` of them started 13 h ago, the rest within the last hour."""
    pipe = state.redis.pipeline(transaction=False)
    for n in range(total):
        started = now - 13 * HOUR - n if n < due else now - (n % 3600)
        name = f"call-messaging:ch{n:07d}"
        session = Session(f"{n:024x}", f"{n + 1 << 64:024x}", name, "open", started)
        # callsync's own layout for an open session: its record, and the index moves that go with it
        pipe.hset(call_key(name), mapping=session_to_hash(session))
        for command in session_moves(name, None, session)[1]:
            pipe.execute_command(*command)
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def run(client: redis.Redis, total: int, due: int) -> tuple[float, float, int]:
    client.flushdb()
    now = time.time()
    scheduled: list[tuple[str, tuple[object, ...]]] = []
    rt = build_runtime(
        Settings(redis_url="redis://unused", sweep_interval_seconds=60, session_checks_per_minute=60),
        lambda task, args, countdown=None: scheduled.append((task, args)),
        redis_client=client,
        clock=lambda: now,
    )
    sweeps.sweep(rt)  # warm: loads the sweep's scripts into Redis, as any running beat has
    client.delete(sweeps.LAST_SWEEP, sweeps.CHECK_CURSOR)
    base = used_memory(client)
    populate(rt.state, total, due, now)
    per_session = (used_memory(client) - base) / total
    started = time.perf_counter()
    result = sweeps.sweep(rt)
    elapsed = time.perf_counter() - started
    assert result.ended == due, result
    assert rt.state.open_summary()[0] == total - due
    ended_ttls = [client.ttl(call_key(f"call-messaging:ch{n:07d}")) for n in range(0, due, max(1, due // 50))]
    assert all(0 < ttl <= CLOSED_TTL for ttl in ended_ttls), ended_ttls
    return elapsed, per_session, len(scheduled)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1000)
    args = parser.parse_args()
    client = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10"))
    try:
        small, small_mem, _ = run(client, args.small, args.due)
        big, big_mem, tasks = run(client, args.big, args.due)
    finally:
        client.flushdb()
    print(
        f"{args.small:>9,} open, {args.due} due: sweep pass {small * 1000:7.1f} ms; Redis {small_mem:5.0f} bytes per open session"
    )
    print(f"{args.big:>9,} open, {args.due} due: sweep pass {big * 1000:7.1f} ms; Redis {big_mem:5.0f} bytes per open session")
    print(
        f"pass at {args.big:,} / pass at {args.small:,}: {big / small:.2f}x (target <= 1.5x); at {args.big:,}: target <= 500 ms"
    )
    print(f"the pass scheduled {tasks} tasks (end-room for each due session, plus the bounded re-checks)")
    print(f"ended sessions carry a TTL of at most {CLOSED_TTL} s and left the open index: they leave nothing after expiry")


if __name__ == "__main__":
    main()
