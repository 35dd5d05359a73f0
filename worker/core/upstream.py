"""How to treat an upstream answer that is not a success (docs/behaviour.md, rule 7)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from enum import Enum

from worker.core.pacing import reported_limit

MAX_WAIT_SECONDS = 300.0  # never trust a reset header further out than this


class Retry(Enum):
    NEVER = "never"  # dead letter at once
    AFTER = "after"  # wait `retry_after` (rate limited), then again
    BACKOFF = "backoff"  # exponential backoff with jitter, bounded


class UpstreamError(Exception):
    """A non-2xx answer or a transport failure, with what to do about it."""

    def __init__(
        self,
        api: str,
        status: int | None,
        message: str,
        retry: Retry,
        retry_after: float | None = None,
        reported_limit: int | None = None,
    ):
        super().__init__(f"{api} {status or 'transport'}: {message}")
        self.api, self.status, self.message = api, status, message
        self.retry, self.retry_after = retry, retry_after
        self.reported_limit = reported_limit  # X-RateLimit-Limit, when the answer had it


def wait_from_headers(headers: Mapping[str, str], now: float, rate_limit_reset: bool = True) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date) or, when `rate_limit_reset`,
    `X-RateLimit-Reset` (unix seconds); None when neither says something usable.

    RFC 9110 §10.2.3 allows only a non-negative number of seconds or a date: `nan`, `inf` or a
    negative count is junk and treated as absent (a NaN countdown cannot even be published).
    A date or a reset time already past means "now".
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    value = lowered.get("retry-after", "").strip()
    wait: float | None = None
    if value:
        wait = _seconds(value)
        if wait is None:
            try:
                wait = max(parsedate_to_datetime(value).timestamp() - now, 0.0)
            except (TypeError, ValueError, IndexError, OverflowError):
                wait = None
    reset = lowered.get("x-ratelimit-reset", "").strip()
    if wait is None and rate_limit_reset and reset:
        at = _seconds(reset)
        wait = None if at is None else max(at - now, 0.0)
    if wait is None or not math.isfinite(wait):
        return None
    return min(wait, MAX_WAIT_SECONDS)


def _seconds(value: str) -> float | None:
    """A finite, non-negative number, or None."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def classify(api: str, status: int, headers: Mapping[str, str], message: str, now: float) -> UpstreamError:
    """The one mapping from a non-2xx status to a retry decision.

    A 401/403 reaching here already had its one retry with a fresh token (the clients'
    `httpx.Auth` does that), so it is final like any other 4xx.
    """
    if status == 429:
        limit = reported_limit(headers)
        return UpstreamError(api, status, message, Retry.AFTER, wait_from_headers(headers, now) or 1.0, limit)
    if status == 408 or status >= 500:
        # Stream sends X-RateLimit-Reset on every answer: for a 5xx it only says when the
        # minute's quota renews, not when to retry, so only Retry-After counts here.
        return UpstreamError(api, status, message, Retry.BACKOFF, wait_from_headers(headers, now, rate_limit_reset=False))
    return UpstreamError(api, status, message, Retry.NEVER)


def transport_failure(api: str, message: str) -> UpstreamError:
    """Timeouts and connection errors are retried like a 5xx."""
    return UpstreamError(api, None, message, Retry.BACKOFF)


def backoff_seconds(attempt: int, jitter: float, base: float = 1.0, cap: float = 300.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^attempt)]; `jitter` ∈ [0, 1)."""
    return float(min(cap, base * 2.0 ** min(attempt, 30)) * jitter)


MAX_ATTEMPTS = 10  # retries before a retryable failure becomes a dead letter


def retry_delay(error: UpstreamError, attempt: int, jitter: float, max_retries: int = MAX_ATTEMPTS) -> float | None:
    """Seconds until the next try after `attempt` failed ones, or None: dead letter."""
    if error.retry is Retry.NEVER or attempt >= max_retries:
        return None
    told = error.retry_after if error.retry_after is not None and math.isfinite(error.retry_after) else None
    if error.retry is Retry.AFTER:
        # Spread the herd a little past the reset instead of all at once on it.
        return min(max(told or 1.0, 0.0), MAX_WAIT_SECONDS) + jitter
    return max(min(told or 0.0, MAX_WAIT_SECONDS), backoff_seconds(attempt, jitter))


# Redis is the state store and the broker: while it is gone no step can run, so a step that met
# a Redis error waits for it longer than for a platform, then becomes a dead letter.
REDIS_RETRIES = 20
REDIS_BACKOFF_CAP_SECONDS = 60.0


def redis_retry_delay(attempt: int, jitter: float, max_retries: int = REDIS_RETRIES) -> float | None:
    """Seconds until the next try after `attempt` failed ones on a Redis error, or None: dead letter."""
    if attempt >= max_retries:
        return None
    return backoff_seconds(attempt, jitter, cap=REDIS_BACKOFF_CAP_SECONDS)
