"""CONTRACT §4 rule 8: the Stream update ceiling, shared through Redis."""

from __future__ import annotations

import uuid

from worker.ratelimit import RateLimiter, window_seconds
from worker.settings import Rate


def test_grants_up_to_the_count_then_says_how_long_to_wait(redis_client):
    limiter = RateLimiter(redis_client, "cs:rate:test", Rate(5, 1.0))
    assert [limiter.acquire(str(uuid.uuid4())) for _ in range(5)] == [0.0] * 5
    wait = limiter.acquire(str(uuid.uuid4()))
    assert 1.0 < wait <= window_seconds(Rate(5, 1.0))


def test_the_window_has_a_margin_for_arrival_jitter():
    # Regression (bench/chaos.py): 21 updates arrived at Stream within 1.002 s under 20/s.
    assert window_seconds(Rate(20, 1.0)) == 1.05
    assert window_seconds(Rate(300, 60.0)) == 61.0
    assert window_seconds(Rate(1000, 3600.0)) == 3601.0
