import pytest

from worker.core.upstream import (
    MAX_ATTEMPTS,
    REDIS_BACKOFF_CAP_SECONDS,
    REDIS_RETRIES,
    Retry,
    UpstreamError,
    backoff_seconds,
    classify,
    redis_retry_delay,
    retry_delay,
    transport_failure,
    wait_from_headers,
)

NOW = 1_000_000.0


def test_wait_from_retry_after_seconds_date_and_reset():
    assert wait_from_headers({"Retry-After": "7"}, NOW) == 7.0
    assert wait_from_headers({"retry-after": "Mon, 12 Jan 1970 13:46:50 GMT"}, NOW) == 10.0
    assert wait_from_headers({"X-RateLimit-Reset": str(int(NOW) + 42)}, NOW) == 42.0
    assert wait_from_headers({"X-RateLimit-Reset": str(int(NOW) - 5)}, NOW) == 0.0
    assert wait_from_headers({"Retry-After": "99999"}, NOW) == 300.0  # capped
    assert wait_from_headers({"Retry-After": "soon"}, NOW) is None
    assert wait_from_headers({}, NOW) is None


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (429, Retry.AFTER),
        (500, Retry.BACKOFF),
        (503, Retry.BACKOFF),
        (408, Retry.BACKOFF),
        (400, Retry.NEVER),
        (401, Retry.NEVER),
        (403, Retry.NEVER),
        (404, Retry.NEVER),
    ],
)
def test_classify(status, retry):
    assert classify("stream", status, {}, "m", NOW).retry is retry


def test_rate_limited_waits_as_told_then_retries():
    error = classify("stream", 429, {"X-RateLimit-Reset": str(int(NOW) + 30)}, "Too many requests", NOW)
    assert error.retry_after == 30.0
    assert retry_delay(error, 0, 0.5) == 30.5


def test_backoff_is_exponential_jittered_and_bounded():
    assert backoff_seconds(0, 0.999) < 1.0
    assert backoff_seconds(3, 0.5) == 4.0
    assert backoff_seconds(30, 0.999) <= 300.0
    error = transport_failure("hms", "timeout")
    delays = [retry_delay(error, attempt, 0.999) for attempt in range(MAX_ATTEMPTS)]
    assert delays == sorted(delays) and delays[-1] <= 300.0
    assert retry_delay(error, MAX_ATTEMPTS, 0.5) is None


def test_other_client_errors_are_dead_letters_at_once():
    assert retry_delay(classify("stream", 400, {}, "bad", NOW), 0, 0.5) is None


def test_a_5xx_backs_off_whatever_the_rate_limit_reset_says():
    # Stream sends X-RateLimit-Reset (the next minute) on every answer, 5xx included.
    headers = {"X-RateLimit-Reset": str(int(NOW) + 55), "X-RateLimit-Remaining": "299"}
    error = classify("stream", 503, headers, "unavailable", NOW)
    assert error.retry_after is None
    assert retry_delay(error, 0, 0.5) == 0.5
    assert classify("stream", 503, {**headers, "Retry-After": "3"}, "unavailable", NOW).retry_after == 3.0


@pytest.mark.parametrize("junk", ["nan", "NaN", "inf", "-inf", "1e999", "-5", "-0.5", "soon", ""])
def test_junk_waits_are_treated_as_absent(junk):
    # Retry-After: nan lost the task: a NaN countdown cannot be published (issue 12, item 4).
    assert wait_from_headers({"Retry-After": junk}, NOW) is None
    assert wait_from_headers({"X-RateLimit-Reset": junk}, NOW) is None
    limited = classify("stream", 429, {"Retry-After": junk, "X-RateLimit-Reset": junk}, "slow down", NOW)
    assert limited.retry_after == 1.0 and retry_delay(limited, 0, 0.5) == 1.5
    failing = classify("hms", 503, {"Retry-After": junk}, "unavailable", NOW)
    assert failing.retry_after is None and retry_delay(failing, 3, 0.5) == 4.0


def test_a_junk_wait_falls_back_to_the_reset_and_a_past_date_means_now():
    assert wait_from_headers({"Retry-After": "nan", "X-RateLimit-Reset": str(int(NOW) + 9)}, NOW) == 9.0
    assert wait_from_headers({"Retry-After": "Mon, 12 Jan 1970 13:00:00 GMT"}, NOW) == 0.0


def test_a_retry_delay_is_finite_whatever_the_error_carries():
    for told in (float("nan"), float("inf"), -3.0):
        for retry in (Retry.AFTER, Retry.BACKOFF):
            delay = retry_delay(UpstreamError("stream", 429, "m", retry, told), 0, 0.5)
            assert delay is not None and 0 <= delay <= 300.5


def test_a_redis_error_is_retried_with_capped_backoff_then_dead_lettered():
    assert redis_retry_delay(0, 0.5) == 0.5
    assert redis_retry_delay(10, 0.999) is not None and redis_retry_delay(10, 0.999) <= REDIS_BACKOFF_CAP_SECONDS
    assert redis_retry_delay(REDIS_RETRIES - 1, 0.5) == REDIS_BACKOFF_CAP_SECONDS / 2
    assert redis_retry_delay(REDIS_RETRIES, 0.5) is None  # past the budget: a dead letter
    assert redis_retry_delay(3, 0.5, max_retries=3) is None
