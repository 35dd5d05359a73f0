"""Which event times callsync believes: none older than the platforms replay, none from the future.

100ms re-sends the deliveries of the last 30 days on request (`POST /analytics/webhooks/replay`,
100mslive/100ms-docs, api-reference/analytics/replay-webhook-events.mdx), flagged `is_replay`;
Stream retries a delivery for at most 15 s. An event dated outside those bounds (a replay past
the window, a clock bug, a forgery by whoever holds the 100ms header secret) may not open,
extend or date anything: otherwise one year-9999 join would pin a channel and an index entry
for good.
"""

from __future__ import annotations

from dataclasses import replace

from worker.core.events import HmsEvent

REPLAY_WINDOW_SECONDS = 30 * 86400  # 100ms replays deliveries of the last 30 days
STREAM_WINDOW_SECONDS = 3600  # Stream retries for 15 s; an hour allows for its queues and clocks
FUTURE_SKEW_SECONDS = 60.0  # how far ahead of ours a platform's clock may run


def in_bounds(at: float | None, now: float, window: float = REPLAY_WINDOW_SECONDS) -> bool:
    """Whether `at` is a time callsync may act on: within `window` before now, not after now + skew."""
    return at is not None and now - window <= at <= now + FUTURE_SKEW_SECONDS


def admit_hms_event(event: HmsEvent, now: float) -> HmsEvent | None:
    """The event as callsync may act on it at `now`, or None when it may change nothing.

    An event that opens (or shows a session open) must have every time it carries in bounds.
    A close still closes its session when its times are not, but is dated by `now` and says
    nothing about the start: a close can only end a session earlier than it would have ended.
    """
    times = [t for t in (event.started_at, event.at) if t is not None]
    if all(in_bounds(t, now) for t in times):
        return event
    if not event.closes or any(t < now - REPLAY_WINDOW_SECONDS for t in times):
        return None
    started = event.started_at if in_bounds(event.started_at, now) else None
    return replace(event, started_at=started, at=now)


def stream_delivery_is_current(created_at: float | None, now: float) -> bool:
    """Whether a Stream delivery is one Stream could be making at `now` (it retries for 15 s):
    a captured body replayed once its dedupe keys expired is not, nor one dated ahead of us."""
    return created_at is None or in_bounds(created_at, now, STREAM_WINDOW_SECONDS)


def stream_event_time(created_at: float | None, now: float) -> float:
    """The time that orders a Stream event: its own `created_at`, unless that is missing or
    later than our clock allows (then it is dated `now`, when callsync saw it)."""
    if created_at is None or created_at > now + FUTURE_SKEW_SECONDS:
        return now
    return created_at
