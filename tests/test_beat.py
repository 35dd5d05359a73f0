"""CONTRACT §1 and §4 rule 9: any number of beat processes schedule the sweep as one."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REAL_URL, real_redis_or_skip
from worker.queue import QUEUE

pytestmark = pytest.mark.redis


def sweeps_queued(client) -> int:
    return sum(1 for raw in client.lrange(QUEUE, 0, -1) if b'"callsync.sweep"' in raw)


def test_two_beat_processes_schedule_the_sweep_once_per_interval():
    client = real_redis_or_skip()
    env = {**os.environ, "REDIS_URL": REAL_URL, "CALLSYNC_SWEEP_INTERVAL_SECONDS": "1"}
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
