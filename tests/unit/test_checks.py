"""worker/core/checks.py: what a session check, an end and an adoption conclude, without I/O."""

from worker.core.actions import EndRoom, RecordClosed, RecordOpen
from worker.core.checks import LiveSession, adopted, check, conclude, end, unsettled
from worker.core.events import HmsEvent
from worker.core.sessions import Session, observe
from worker.core.timebounds import REPLAY_WINDOW_SECONDS

CALL, NOW = "call-messaging:general", 1_000_000.0


def session(status="open", sid="s1", name=CALL, started=NOW - 100):
    return Session(sid, "room-1", name, status, started)


def test_open_and_ending_sessions_are_unsettled_a_closed_or_replaced_one_is_not():
    # The check and the end share one guard: an "ending" session (callsync asked 100ms to end
    # it) is still to settle, for both.
    assert unsettled(session("open"), "s1") == session("open")
    assert unsettled(session("ending"), "s1") == session("ending")
    assert unsettled(session("closed"), "s1") is None
    assert unsettled(session("open", sid="s2"), "s1") is None  # a newer session replaced it
    assert unsettled(None, "s1") is None


def test_a_check_of_the_live_session_concludes_nothing():
    assert check(session(), CALL, LiveSession("room-1", "s1", NOW - 100), NOW) == []


def test_a_check_of_a_session_100ms_no_longer_runs_records_it_closed_now():
    assert check(session(name=None), CALL, None, NOW) == [RecordClosed(session(name=CALL), NOW)]


def test_a_check_that_finds_another_session_running_closes_the_old_one_and_adopts_the_new():
    live = LiveSession("room-1", "s2", NOW - 5)
    assert check(session(), CALL, live, NOW) == [
        RecordClosed(session(), NOW),
        RecordOpen(Session("s2", "room-1", CALL, "open", NOW - 5), NOW),
    ]


def test_end_ends_the_room_only_for_its_live_session():
    assert end(session(), CALL, LiveSession("room-1", "s1", None), "why", NOW) == [EndRoom(session(), "why")]
    assert end(session(), CALL, None, "why", NOW) == [RecordClosed(session(), NOW)]
    newer = LiveSession("room-1", "s2", NOW - 1)
    assert end(session(), CALL, newer, "why", NOW) == [RecordClosed(session(), NOW), adopted(newer, CALL, NOW)]


def test_an_adoption_drops_a_start_time_outside_what_callsync_believes():
    far_past = LiveSession("room-1", "s2", NOW - REPLAY_WINDOW_SECONDS - 1)
    future = LiveSession("room-1", "s2", NOW + 3600)
    assert adopted(far_past, CALL, NOW).session.started_at is None
    assert adopted(future, CALL, NOW).session.started_at is None
    assert adopted(LiveSession("room-1", "s2", NOW - 5), CALL, NOW).session.started_at == NOW - 5


def test_a_conclusion_leaves_the_session_as_the_100ms_event_that_said_it_would():
    def event(kind, change):
        s = change.session
        return HmsEvent("e1", kind, s.room_id, s.room_name, s.session_id, s.started_at, change.at, False)

    closed = RecordClosed(session(), NOW)
    assert conclude(session(), closed) == Session("s1", "room-1", CALL, "closed", NOW - 100, NOW)
    assert conclude(session(), closed) == observe(session(), event("session.close.success", closed))
    assert conclude(None, closed) == observe(None, event("session.close.success", closed))
    ending = Session("s1", "room-1", CALL, "ending", NOW - 100, NOW - 5)
    assert conclude(ending, closed).ended_at == NOW - 5  # closed, dated when callsync asked to end it
    opened = adopted(LiveSession("room-1", "s2", None), CALL, NOW)
    assert conclude(None, opened) == Session("s2", "room-1", CALL, "open", NOW)  # first seen now
    assert conclude(None, opened) == observe(None, event("session.open.success", opened))
    assert conclude(session("closed", sid="s2"), opened).status == "closed"  # an open never reopens a close
