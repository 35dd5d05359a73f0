"""docs/operations.md and docs/behaviour.md, rule 9: any number of beat processes schedule the sweep as one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis

from tests.support.servers import real_redis, real_url
from worker.store.enqueue import QUEUE

pytestmark = pytest.mark.redis


def sweeps_queued(client) -> int:
    return sum(1 for raw in client.lrange(QUEUE, 0, -1) if b'"callsync.sweep"' in raw)


def test_two_beat_processes_schedule_the_sweep_once_per_interval():
    client = real_redis()
    env = {**os.environ, "REDIS_URL": real_url(), "CALLSYNC_SWEEP_INTERVAL_SECONDS": "1"}
    beats = [
        subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "beat"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 20
        while sweeps_queued(client) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        first = time.monotonic()
        time.sleep(6)
        elapsed = time.monotonic() - first
        count = sweeps_queued(client)
    finally:
        for beat in beats:
            beat.terminate()
        for beat in beats:
            beat.wait(timeout=15)
        client.flushdb()
    # One active scheduler: about one sweep a second. Two would queue about twice as many.
    assert 1 <= count <= elapsed + 2, (count, elapsed)


def test_beat_processes_outlive_a_redis_restart(tmp_path):
    """Regression (bench/chaos.py): RedBeat's tick raised on the lost connection and both beats exited."""
    from tests.support.chaos.redis_server import RedisServer
    from worker.cli import launch

    store = RedisServer(tmp_path, launch.free_port())
    store.start()
    client = redis.Redis.from_url(store.url)
    env = {**os.environ, "REDIS_URL": store.url, "CALLSYNC_SWEEP_INTERVAL_SECONDS": "1"}
    beats = [launch.start(f"beat{n}", launch.role_argv("beat"), env, tmp_path) for n in range(2)]
    try:
        launch.wait_for(lambda: sweeps_queued(client), 20, "a sweep before the restart")
        store.kill()
        time.sleep(3)
        store.start()
        client.delete(QUEUE)
        launch.wait_for(lambda: sweeps_queued(client), 30, "a sweep after the restart")
        assert all(beat.alive() for beat in beats), [beat.process.returncode for beat in beats]
    finally:
        launch.stop(beats)
        client.close()
        store.kill()
