"""Which event times callsync believes (worker/core/timebounds.py): within the replay window,
not ahead of our clock by more than the skew; a close out of bounds still closes, dated now."""

from __future__ import annotations

import pytest

from worker.core.events import HmsEvent
from worker.core.timebounds import (
    FUTURE_SKEW_SECONDS,
    REPLAY_WINDOW_SECONDS,
    STREAM_WINDOW_SECONDS,
    admit_hms_event,
    in_bounds,
    stream_delivery_is_current,
    stream_event_time,
)

CALL = "call-messaging:general"
DAY = 86400.0
NOW = 2_000_000_000.0


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (None, False),
        (NOW, True),
        (NOW - REPLAY_WINDOW_SECONDS, True),
        (NOW - REPLAY_WINDOW_SECONDS - 1, False),
        (NOW + FUTURE_SKEW_SECONDS, True),
        (NOW + FUTURE_SKEW_SECONDS + 1, False),
    ],
)
def test_a_time_is_in_bounds_from_the_window_back_to_the_skew_ahead(at, expected):
    assert in_bounds(at, NOW) is expected


def test_events_older_than_the_replay_window_open_and_close_nothing():
    now = 2_000_000_000.0
    old = now - REPLAY_WINDOW_SECONDS - 60
    opened = HmsEvent("e", "session.open.success", "r", CALL, "s", old, old, True)
    closed = HmsEvent("e", "session.close.success", "r", CALL, "s", old, old, True)
    assert admit_hms_event(opened, now) is None and admit_hms_event(closed, now) is None
    recent = HmsEvent("e", "session.open.success", "r", CALL, "s", now - 3 * DAY, now - 3 * DAY, True)
    assert admit_hms_event(recent, now) == recent  # within the window: judged on its merits


def test_a_future_dated_close_still_closes_but_dates_nothing():
    now = 2_000_000_000.0
    close = HmsEvent("e", "session.close.success", "r", CALL, "s", now + 10 * DAY, now + 10 * DAY, False)
    admitted = admit_hms_event(close, now)
    assert admitted is not None and admitted.closes and admitted.at == now and admitted.started_at is None


def test_an_open_with_one_time_out_of_bounds_is_not_admitted():
    opened = HmsEvent("e", "session.open.success", "r", CALL, "s", NOW - DAY, NOW + 10 * DAY, False)
    assert admit_hms_event(opened, NOW) is None


@pytest.mark.parametrize(
    ("created_at", "current"),
    [
        (None, True),  # undated: judged by the receiver's own clock
        (NOW - 10, True),
        (NOW - STREAM_WINDOW_SECONDS - 1, False),  # a captured body replayed after its dedupe keys expired
        (NOW + FUTURE_SKEW_SECONDS + 1, False),
    ],
)
def test_a_stream_delivery_is_current_only_within_streams_retry_window(created_at, current):
    assert stream_delivery_is_current(created_at, NOW) is current


def test_a_stream_event_is_ordered_by_its_own_time_unless_missing_or_from_the_future():
    assert stream_event_time(NOW - 5, NOW) == NOW - 5
    assert stream_event_time(None, NOW) == NOW
    assert stream_event_time(NOW + FUTURE_SKEW_SECONDS, NOW) == NOW + FUTURE_SKEW_SECONDS
    assert stream_event_time(NOW + FUTURE_SKEW_SECONDS + 1, NOW) == NOW
