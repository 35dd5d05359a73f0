"""The shared Stream update ceiling (docs/behaviour.md, rule 8), on fakeredis and real Redis."""

from __future__ import annotations

import time

from worker.settings import Rate
from worker.store.ratelimit import HOLD, RateLimiter


def test_grants_up_to_the_ceiling_then_says_how_long_to_wait(redis_client):
    limiter = RateLimiter(redis_client, "cs:rate:test", Rate(3, 1.0))
    for n in range(3):
        with limiter.update() as grant:
            assert grant.wait == 0, n
    with limiter.update() as grant:
        assert 0 < grant.wait <= 1.0


def test_requests_in_flight_fill_the_window_until_answered(redis_client):
    limiter = RateLimiter(redis_client, "cs:rate:test", Rate(2, 0.2))
    assert limiter.acquire("a") == 0 and limiter.acquire("b") == 0
    time.sleep(0.25)  # a whole window later, both are still in flight: no third grant yet
    assert 0 < limiter.acquire("c") < 0.2
    limiter.release("a")
    time.sleep(0.25)  # a window after "a" was answered it no longer counts; "b" still does
    assert limiter.acquire("c") == 0
    assert 0 < limiter.acquire("d") < 0.2
    assert redis_client.pttl("cs:rate:test") <= (0.2 + HOLD) * 1000


def test_release_of_an_unknown_grant_adds_nothing(redis_client):
    limiter = RateLimiter(redis_client, "cs:rate:test", Rate(1, 1.0))
    limiter.release("never-granted")
    assert redis_client.zcard("cs:rate:test") == 0


def test_a_release_sent_with_other_steps_is_not_sent_again(redis_client):
    from worker.store import scripts

    limiter = RateLimiter(redis_client, "cs:rate:test", Rate(2, 60.0))
    with limiter.update() as grant:
        assert grant.wait == 0
        scripts.run(redis_client, [limiter.release_call(grant.token)])
        grant.released = True
        [(_, answered)] = redis_client.zrange("cs:rate:test", 0, -1, withscores=True)
    assert redis_client.zrange("cs:rate:test", 0, -1, withscores=True) == [(grant.token.encode(), answered)]
    assert answered <= time.time() + 1  # logged at its answer, not HOLD ahead
