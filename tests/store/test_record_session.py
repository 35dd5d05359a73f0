"""State.record_session: a session change callsync concluded itself is recorded exactly as the
100ms webhook that said it would be (fakeredis, and real Redis in CI)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.support.state import record_hms_event
from worker.core.actions import RecordClosed, RecordOpen, SessionChange
from worker.core.checks import LiveSession, adopted, no_longer_running
from worker.core.events import HmsEvent
from worker.core.sessions import Session
from worker.store.keys import BOUND_CHANNELS, CLOSED_TTL, bucket_of, call_key
from worker.store.state import State

T0 = 1_800_000_000.0
CALL = "call-messaging:general"  # a call-<cid> name: recording it keeps the channel in the bound index


def session(sid: str = "s1", started: float | None = T0, name: str | None = CALL, status: Any = "open") -> Session:
    return Session(sid, "room-1", name, status, started)


def webhook(change: SessionChange) -> HmsEvent:
    """The 100ms event that would have said `change`."""
    s = change.session
    kind = "session.close.success" if isinstance(change, RecordClosed) else "session.open.success"
    return HmsEvent(f"{kind}:{s.session_id}", kind, s.room_id, s.room_name, s.session_id, s.started_at, change.at, False)


def dump(state: State) -> dict[str, Any]:
    """Every key with its value and whether it expires (a real server's TTL ticks)."""
    out: dict[str, Any] = {}
    for raw_key in state.redis.keys("*"):
        key = raw_key.decode()
        if key.startswith("cs:owed:"):  # a task's own bookkeeping (keys.owed_key), not the record
            continue
        kind = state.redis.type(key).decode()
        if kind == "hash":
            value: Any = state.redis.hgetall(key)
        elif kind == "set":
            value = state.redis.smembers(key)
        elif kind == "zset":
            value = state.redis.zrange(key, 0, -1, withscores=True)
        else:
            value = state.redis.get(key)
        ttl = state.redis.ttl(key)
        out[key] = (kind, value, "none" if ttl == -1 else "closed" if 0 < ttl <= CLOSED_TTL else ttl)
    return out


def both_ways(
    state: State, before: Callable[[], None], changes: list[SessionChange]
) -> tuple[list[Session | None], dict[str, Any]]:
    """Run `before`, then record `changes` as webhooks, then again on an empty database with
    record_session; assert both leave the same keys and return the same sessions."""
    before()
    by_webhook = [record_hms_event(state, webhook(c), c.at) for c in changes]
    expected = dump(state)
    state.redis.flushdb()
    before()
    by_record = [state.record_session(c) for c in changes]
    assert by_record == by_webhook
    assert dump(state) == expected
    return by_record, expected


@pytest.fixture
def state(redis_client) -> State:
    return State(redis_client)


def nothing() -> None:
    pass


def test_an_adoption_records_the_session_open_as_its_open_webhook_would(state):
    change = adopted(LiveSession("room-1", "s1", T0), CALL, T0 + 30)
    [recorded], keys = both_ways(state, nothing, [change])
    assert recorded == session()
    assert state.call(CALL).session == session()
    assert keys[call_key(CALL)][2] == "none"  # open: no expiry, the sweep ends it
    assert state.open_summary() == (1, T0)
    assert state.redis.zscore(BOUND_CHANNELS, "messaging:general") == T0 + 30  # dated by the change


def test_an_adoption_without_a_start_is_dated_by_its_first_sight(state):
    change = adopted(LiveSession("room-1", "s1", None), CALL, T0 + 30)
    [recorded], _ = both_ways(state, nothing, [change])
    assert recorded == session(started=T0 + 30)


def test_a_close_found_by_a_check_records_it_closed_as_its_close_webhook_would(state):
    def opened() -> None:
        record_hms_event(state, webhook(RecordOpen(session(), T0)), T0)

    [change] = no_longer_running(session(name=None), CALL, None, T0 + 600)
    [recorded], keys = both_ways(state, opened, [change])
    assert recorded == Session("s1", "room-1", CALL, "closed", T0, T0 + 600)
    assert keys[call_key(CALL)][2] == "closed"  # a closed record expires
    assert state.open_summary() == (0, None)


def test_a_close_of_an_ending_session_keeps_when_callsync_asked_to_end_it(state):
    def ending() -> None:
        record_hms_event(state, webhook(RecordOpen(session(), T0)), T0)
        assert state.claim_overdue(T0, 10, T0 + 100) == [(CALL, "s1")]

    [recorded], _ = both_ways(state, ending, [RecordClosed(session(status="ending"), T0 + 200)])
    assert recorded == Session("s1", "room-1", CALL, "closed", T0, T0 + 100)


def test_a_check_that_finds_another_session_closes_the_old_and_adopts_the_new(state):
    def opened() -> None:
        record_hms_event(state, webhook(RecordOpen(session(), T0)), T0)

    changes = no_longer_running(session(), CALL, LiveSession("room-1", "s2", T0 + 500), T0 + 600)
    [closed, adopted_], _ = both_ways(state, opened, changes)
    assert closed.status == "closed" and adopted_ == session("s2", T0 + 500)
    assert state.call(CALL).session == session("s2", T0 + 500)
    assert state.open_summary() == (1, T0 + 500)
    assert state.open_page(None, 10) == [(bucket_of(T0 + 500), CALL)]


def test_an_older_sessions_change_leaves_the_current_session(state):
    def newer_open() -> None:
        record_hms_event(state, webhook(RecordOpen(session("s2", T0 + 500), T0 + 500)), T0 + 500)

    late_close = RecordClosed(session("s1", T0), T0 + 600)
    late_adoption = adopted(LiveSession("room-1", "s0", T0 - 500), CALL, T0 + 600)
    [closed, opened], _ = both_ways(state, newer_open, [late_close, late_adoption])
    # Each returns the session as concluded, yet neither takes the room back from s2.
    assert closed == Session("s1", "room-1", CALL, "closed", T0, T0 + 600)
    assert opened == session("s0", T0 - 500)
    assert state.call(CALL).session == session("s2", T0 + 500)
    assert state.open_summary() == (1, T0 + 500)


def test_a_duplicate_change_changes_nothing(state):
    closes = [RecordClosed(session(), T0 + 600), RecordClosed(session(), T0 + 900)]
    [first, second], _ = both_ways(state, nothing, closes)
    assert first == second == Session("s1", "room-1", CALL, "closed", T0, T0 + 600)  # the first close's time stays
    assert state.call(CALL).session == first


def test_an_adoption_of_a_session_recorded_closed_never_reopens_it(state):
    def closed() -> None:
        record_hms_event(state, webhook(RecordClosed(session(), T0 + 600)), T0 + 600)

    [recorded], _ = both_ways(state, closed, [adopted(LiveSession("room-1", "s1", T0), CALL, T0 + 900)])
    assert recorded == Session("s1", "room-1", CALL, "closed", T0, T0 + 600)
    assert state.open_summary() == (0, None)


def test_a_room_without_a_call_id_name_is_not_recorded(state):
    assert state.record_session(RecordOpen(session(name=None), T0)) is None
    assert state.redis.dbsize() == 0
