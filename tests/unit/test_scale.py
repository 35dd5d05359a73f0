"""bench/scale.py's pure parts (tests/support/scale.py): the perfect queue that gives the floor of
time-to-right and the minimum number of writes, time-to-right itself, and the event mix."""

from __future__ import annotations

import math

import pytest

from tests.support.scale import (
    CLOSE,
    JOIN,
    LEAVE,
    OPEN,
    Change,
    Mix,
    kinds_count,
    live_at,
    minimum_writes,
    percentile,
    perfect_queue,
    schedule,
    shown_value,
    times_to_right,
)


def test_a_channel_wrong_on_an_idle_queue_is_written_at_once() -> None:
    changes = [Change(10.0, "a", "call-a")]
    assert perfect_queue(changes, 0.05) == [Change(10.0, "a", "call-a")]
    assert times_to_right(changes, perfect_queue(changes, 0.05)).durations == [0.0]


def test_writes_are_spaced_one_interval_apart_in_the_order_channels_became_wrong() -> None:
    changes = [Change(0.0, "a", "A"), Change(0.0, "b", "B"), Change(0.1, "c", "C"), Change(2.5, "d", "D")]
    writes = perfect_queue(changes, 1.0)
    assert writes == [Change(0.0, "a", "A"), Change(1.0, "b", "B"), Change(2.0, "c", "C"), Change(3.0, "d", "D")]
    assert times_to_right(changes, writes).durations == pytest.approx([0.0, 1.0, 1.9, 0.5])


def test_a_call_that_opened_and_closed_while_its_channel_waited_needs_no_write() -> None:
    changes = [Change(0.0, "a", "A"), Change(0.0, "b", "B"), Change(0.5, "b", None)]
    assert perfect_queue(changes, 1.0) == [Change(0.0, "a", "A")]
    assert minimum_writes(changes, 1.0) == 1
    # b was wrong from its open until its close made what it shows (nothing) right again.
    assert sorted(times_to_right(changes, perfect_queue(changes, 1.0)).durations) == [0.0, 0.5]


def test_a_channel_is_queued_once_keeps_its_place_and_is_written_with_what_it_wants_at_its_turn() -> None:
    # a shows A0; its call ends at 0.1 (its place in line), b goes wrong at 0.2, a's next call
    # starts at 0.3 while a is still wrong: one write of the newest call, still ahead of b.
    changes = [Change(0.0, "a", "A0"), Change(0.1, "a", None), Change(0.2, "b", "B"), Change(0.3, "a", "A1")]
    assert perfect_queue(changes, 1.0) == [Change(0.0, "a", "A0"), Change(1.0, "a", "A1"), Change(2.0, "b", "B")]


def test_a_channel_right_again_in_between_goes_to_the_back_of_the_line() -> None:
    # a's first call opened and closed while it waited (right again: it shows nothing); its
    # next call makes it wrong after b.
    changes = [
        Change(0.0, "x", "X"),
        Change(0.1, "a", "A1"),
        Change(0.2, "b", "B"),
        Change(0.3, "a", None),
        Change(0.4, "a", "A2"),
    ]
    assert perfect_queue(changes, 1.0) == [Change(0.0, "x", "X"), Change(1.0, "b", "B"), Change(2.0, "a", "A2")]


def test_a_channel_that_comes_back_to_what_it_shows_leaves_the_line() -> None:
    # a shows A; its call closes and the same call id opens again before a's turn: nothing to write.
    changes = [Change(0.0, "a", "A"), Change(0.0, "b", "B"), Change(0.2, "a", None), Change(0.3, "a", "A")]
    assert perfect_queue(changes, 1.0) == [Change(0.0, "a", "A"), Change(1.0, "b", "B")]


def test_a_slot_due_at_a_change_sees_the_change() -> None:
    # b's slot is at 1.0, when its call closes: the queue writes nothing for it.
    changes = [Change(0.0, "a", "A"), Change(0.0, "b", "B"), Change(1.0, "b", None), Change(1.0, "c", "C")]
    assert perfect_queue(changes, 1.0) == [Change(0.0, "a", "A"), Change(1.0, "c", "C")]


def test_over_the_ceiling_the_floor_grows_with_the_backlog_and_under_it_stays_at_zero() -> None:
    under = [Change(float(n), f"c{n}", "X") for n in range(100)]  # one change a second, ceiling 2/s
    assert set(times_to_right(under, perfect_queue(under, 0.5)).durations) == {0.0}
    over = [Change(n / 3, f"c{n}", "X") for n in range(300)]  # three changes a second, ceiling 1/s
    waits = times_to_right(over, perfect_queue(over, 1.0)).durations
    assert waits[-1] == pytest.approx(299 - 299 / 3)
    assert minimum_writes(over, 1.0) == 300


def test_time_to_right_counts_wrong_writes_and_what_is_still_wrong() -> None:
    wanted = [Change(0.0, "a", "A"), Change(0.0, "b", "B")]
    shown = [Change(0.2, "a", "A"), Change(0.5, "a", "stale"), Change(0.9, "a", "A")]
    result = times_to_right(wanted, shown)
    assert result.durations == pytest.approx([0.2, 0.4])
    assert result.still_wrong == [("b", 0.0)]


def test_a_write_at_the_same_moment_as_the_change_takes_no_time() -> None:
    assert times_to_right([Change(1.0, "a", "A")], [Change(1.0, "a", "A")]).durations == [0.0]


def test_shown_value_is_the_call_id_only_while_active() -> None:
    assert shown_value({}) is None
    assert shown_value({"callActive": False, "callId": "x"}) is None
    assert shown_value({"callActive": True, "callId": "x"}) == "x"
    assert shown_value({"callActive": True}) == ""


def test_percentile_is_by_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.5))


def test_the_mix_is_seeded_and_arrives_at_the_asked_rate() -> None:
    plan = schedule(rooms=1000, seconds=120, changes_per_second=10, scale=4, seed=7)
    assert plan == schedule(rooms=1000, seconds=120, changes_per_second=10, scale=4, seed=7)
    counts = kinds_count(plan)
    assert (counts[OPEN] + counts[CLOSE]) / 120 == pytest.approx(10, rel=0.05)
    assert counts[CLOSE] > 0 and counts[JOIN] >= 2 * counts[OPEN] * 0.9  # mostly 1:1 calls, some larger
    assert all(a.at < 120 for a in plan) and plan == sorted(plan)


def test_in_the_mix_a_room_holds_one_session_at_a_time_and_peers_stay_within_it() -> None:
    plan = schedule(rooms=50, seconds=300, changes_per_second=2, scale=4, seed=3)
    live: dict[int, int] = {}  # room -> its live session
    peers: set[tuple[int, int]] = set()
    for action in plan:
        if action.kind == OPEN:
            assert action.room not in live
            live[action.room] = action.session
        elif action.kind == CLOSE:
            assert live.pop(action.room) == action.session
            assert not {p for p in peers if p[0] == action.session}  # every peer left first
        elif action.kind == JOIN:
            assert live.get(action.room) == action.session and (action.session, action.peer) not in peers
            peers.add((action.session, action.peer))
        else:
            assert action.kind == LEAVE
            peers.remove((action.session, action.peer))
    assert live_at(plan, 299.9) == len(live)


def test_the_mix_is_compressed_by_the_ceiling() -> None:
    slow = schedule(rooms=2000, seconds=600, changes_per_second=2, scale=1, seed=5, mix=Mix())
    fast = schedule(rooms=2000, seconds=150, changes_per_second=8, scale=4, seed=5, mix=Mix())
    # Four times the ceiling, a quarter of the time: as many changes, about as many still live.
    assert kinds_count(fast)[OPEN] == pytest.approx(kinds_count(slow)[OPEN], rel=0.1)
    assert live_at(fast, 149.9) == pytest.approx(live_at(slow, 599.9), rel=0.15)
