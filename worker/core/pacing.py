"""The pace of writes to one upstream endpoint (docs/behaviour.md, rule 8): even spacing, a pause.

Stream counts an endpoint's calls per app on a 1-minute window and, per its rate-limit docs,
caps any second at the minute's limit divided by 30 (https://getstream.io/docs/platform/rate-limits.md;
"Update Channel" is 300 a minute, https://getstream.io/chat/docs/react/rate-limits/). A
limiter that admits the minute's quota at once breaks the per-second cap; one that spaces
writes evenly at `period / count` keeps both: a minute holds at most `count`, a second at most
`count / 60`, half the per-second cap. This is GCRA with no burst tolerance: `next_at` (the
theoretical arrival time) is the earliest start of the next write, and each admitted write
moves it one interval past the later of itself and now.

Stream reports the endpoint's limit on every answer (`X-RateLimit-Limit`, requests per minute;
same page: limits may be lowered dynamically, so watch the headers): when lower than the
setting it is adopted for REPORTED_SECONDS, renewed by each answer. A 429 pauses the whole
endpoint until its `Retry-After` / `X-RateLimit-Reset` (core.upstream.wait_from_headers).

worker/store/lua/wq_*.lua apply these rules in Redis; tests/store/test_writequeue.py holds
them to this module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

WINDOW_SECONDS = 60.0  # the window X-RateLimit-Limit counts in (Stream's limits are per minute)
REPORTED_SECONDS = 120.0  # a reported limit holds this long past the last answer that said it


@dataclass(frozen=True)
class Pace:
    """An endpoint's pacing state: when the next write may start, a pause, the reported limit."""

    next_at: float = 0.0
    paused_until: float = 0.0
    reported: int | None = None  # X-RateLimit-Limit, per WINDOW_SECONDS
    reported_until: float = 0.0


def interval(count: int, period: float, pace: Pace, now: float) -> float:
    """Seconds between two writes: the setting's `period / count`, or the reported limit's
    spacing when that is slower and still current."""
    spacing = period / count
    if pace.reported is not None and pace.reported > 0 and now < pace.reported_until:
        spacing = max(spacing, WINDOW_SECONDS / pace.reported)
    return spacing


def wait(pace: Pace, now: float) -> float:
    """Seconds until a write may start (0: now)."""
    return max(pace.next_at - now, pace.paused_until - now, 0.0)


def admit(pace: Pace, count: int, period: float, now: float) -> tuple[float, Pace]:
    """Take the slot if it is free now: (0, the pace after it), else (seconds to wait, pace unchanged)."""
    left = wait(pace, now)
    if left > 0:
        return left, pace
    return 0.0, replace(pace, next_at=max(pace.next_at, now) + interval(count, period, pace, now))


def paused(pace: Pace, until: float) -> Pace:
    """A 429: no write starts before `until` (a later pause already set stands)."""
    return replace(pace, paused_until=max(pace.paused_until, until))


def reported(pace: Pace, limit: int | None, now: float) -> Pace:
    """Stream's `X-RateLimit-Limit` on an answer at `now` (None: the answer had none)."""
    if limit is None or limit <= 0:
        return pace
    return replace(pace, reported=limit, reported_until=now + REPORTED_SECONDS)


def reported_limit(headers: Mapping[str, str]) -> int | None:
    """`X-RateLimit-Limit` as a positive whole number, or None (absent or junk)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    try:
        value = float(lowered.get("x-ratelimit-limit", "").strip())
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value >= 1 else None
