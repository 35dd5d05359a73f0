"""The write queue with real processes (docs/behaviour.md, rule 8): a burst over the ceiling is
written once per channel at the ceiling's pace, and a worker SIGKILLed mid-burst strands only
what it was writing: its turn passes on within seconds (issue 20: 40 sessions opened at once at
10 updates a second, the worker killed 0.3 s later; before the queue 19 of 40 were right 60 s
later, the rest in the dead worker's deferred tasks until the visibility timeout)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from standins import Platforms, running
from tests.support.roles import environment
from tests.support.servers import real_redis, real_url
from worker.cli import launch
from worker.steps import sync
from worker.store.keys import lock_key

pytestmark = pytest.mark.redis

RATE, CHANNELS = 10, 40


class Run:
    def __init__(self, platforms: Platforms, tmp: Path):
        self.store = real_redis()
        self.stream, self.hms = platforms.stream, platforms.hms
        self.stream.update_limit = RATE * 60  # what Stream would report for this ceiling
        port = launch.free_port()
        self.web = f"http://127.0.0.1:{port}"
        platforms.send_webhooks_to(self.web)
        self.env = environment(
            platforms,
            real_url(),
            CALLSYNC_STREAM_UPDATE_RATE=f"{RATE}/s",
            CALLSYNC_SWEEP_INTERVAL_SECONDS=2,
            WEB_CONCURRENCY=1,
            CALLSYNC_WORKER_CONCURRENCY=2,
            PORT=port,
        )
        self.logs = tmp
        self.children: list[launch.Child] = []
        self.workers = 0

    def start(self, role: str) -> launch.Child:
        argv = launch.role_argv(role, *(["--port", self.env["PORT"]] if role == "web" else []))
        self.workers += role == "worker"
        child = launch.start(f"{role}{self.workers if role == 'worker' else ''}", argv, self.env, self.logs)
        self.children.append(child)
        return child

    def close(self) -> None:
        launch.stop(self.children)
        self.store.flushdb()
        self.store.close()

    def burst(self, tag: str) -> list[str]:
        cids = [f"messaging:{tag}-{n}" for n in range(CHANNELS)]
        for cid in cids:
            self.stream.create_channel(cid)
        for cid in cids:
            self.hms.open_session(self.hms.create_room(f"call-{cid}")["id"])  # its webhook goes out at once
        return cids

    def right(self, cids: list[str]) -> int:
        return sum(self.stream.call_fields(cid).get("callId") == f"call-{cid}" for cid in cids)

    def accounted(self, cids: list[str]) -> int:
        """Channels right, waiting in the write queue or in the drainer's hands."""
        waiting = {k.decode() for k in [*self.store.zrange("cs:wq:channels", 0, -1), *self.store.hkeys("cs:wq:channels:proc")]}
        return sum(cid in waiting or self.stream.call_fields(cid).get("callId") == f"call-{cid}" for cid in cids)

    def patches(self, cids: list[str]) -> int:
        paths = {"/channels/" + cid.replace(":", "/") for cid in cids}
        return sum(method == "PATCH" and path in paths for method, path, _ in self.stream.calls)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    with running() as platforms:
        system = Run(platforms, tmp_path)
        try:
            system.start("web")
            system.start("beat")
            launch.wait_for(lambda: launch.http_ok(f"{system.web}/readyz"), 30, "the receiver")
            yield system
        finally:
            system.close()


def test_a_burst_over_the_ceiling_is_written_once_per_channel_at_its_pace(run: Run) -> None:
    run.start("worker")
    started = time.monotonic()
    cids = run.burst("burst")
    launch.wait_for(lambda: run.right(cids) == CHANNELS, 60, "every channel right")
    took = time.monotonic() - started
    assert run.patches(cids) == CHANNELS  # one write each
    floor = CHANNELS / RATE
    assert took <= 1.1 * floor + 3, took  # the target: within 1.1 x the floor + 2 s (+1 s of start-up)


def test_a_worker_killed_mid_burst_passes_its_turn_on(run: Run) -> None:
    victim = run.start("worker")
    launch.wait_for(lambda: run.store.zcard("cs:workers") >= 1, 30, "the worker's heartbeat")
    cids = run.burst("killed")
    started = time.monotonic()
    launch.wait_for(lambda: run.store.exists("cs:wq:channels:turn"), 10, "a drain to hold the turn")
    # Every open recorded: each channel is right, waiting in the queue or being written. What
    # the victim still held as prefetched tasks would wait for the visibility timeout, and the
    # issue's point is what waits in Redis rather than in a worker (a loaded machine may take
    # longer than the 0.3 s to take 40 opens).
    launch.wait_for(lambda: run.accounted(cids) == CHANNELS, 20, "every open recorded")
    time.sleep(0.3)
    os.killpg(victim.process.pid, signal.SIGKILL)
    # What the victim was running when it died: a channel its drain was writing is taken back by
    # the next turn at once (the lock is the queue entry's); one a reconcile task of its held
    # (its token the task's, redelivered only after the visibility timeout) waits out the lock.
    holders = {cid: run.store.get(lock_key(cid)) for cid in cids}
    kept = [cid for cid, holder in holders.items() if holder is None or holder.startswith(b"wq:")]
    run.start("worker")
    what = f"every channel but a dead task's right ({run.right(kept)} of {len(kept)})"
    launch.wait_for(lambda: run.right(kept) == len(kept), 60, what)
    took = time.monotonic() - started
    print(f"\nworker SIGKILLed mid-burst: {len(kept)} of {CHANNELS} right after {took:.1f} s (floor {CHANNELS / RATE:.0f} s)")
    assert took < 30, took
    launch.wait_for(lambda: run.right(cids) == CHANNELS, sync.LOCK_SECONDS + 15, "the rest, once the dead task's lock lapsed")
    print(f"all {CHANNELS} right after {time.monotonic() - started:.1f} s ({CHANNELS - len(kept)} waited out a dead task's lock)")
