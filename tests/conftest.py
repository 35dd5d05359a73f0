"""Shared fixtures. State tests run on fakeredis, and on a real Redis when
CALLSYNC_TEST_REDIS_URL is set (`.ci/run` sets it and CALLSYNC_REQUIRE_REDIS=1, which
turns a missing Redis into a failure instead of a skip)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

REAL_URL = os.environ.get("CALLSYNC_TEST_REDIS_URL", "")
REQUIRE_REAL = os.environ.get("CALLSYNC_REQUIRE_REDIS") == "1"


def real_redis_or_skip() -> redis.Redis:
    if not REAL_URL:
        if REQUIRE_REAL:
            pytest.fail("CALLSYNC_REQUIRE_REDIS=1 but CALLSYNC_TEST_REDIS_URL is not set")
        pytest.skip("real Redis not configured (set CALLSYNC_TEST_REDIS_URL)")
    client = redis.Redis.from_url(REAL_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        if REQUIRE_REAL:
            pytest.fail(f"real Redis at {REAL_URL} does not answer: {exc}")
        pytest.skip(f"real Redis at {REAL_URL} does not answer")
    client.flushdb()
    return client


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def redis_client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A Redis for state tests: fakeredis, then the real one (marked `redis`)."""
    if request.param == "fakeredis":
        client: redis.Redis = fakeredis.FakeRedis()
    else:
        client = real_redis_or_skip()
    yield client
    client.flushdb()
    client.close()


class Recorder:
    """A `schedule` that records follow-up tasks instead of enqueueing them."""

    def __init__(self) -> None:
        self.tasks: list[tuple[str, tuple[Any, ...], float | None]] = []

    def __call__(self, task: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        self.tasks.append((task, args, countdown))

    def take(self) -> list[tuple[str, tuple[Any, ...], float | None]]:
        tasks, self.tasks = self.tasks, []
        return tasks
