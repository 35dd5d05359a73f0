from dataclasses import replace

from worker.core.events import HmsEvent
from worker.core.sessions import Session, advance, is_newer, observe


def event(kind="session.open.success", session="s1", started=100.0, at=101.0, name="call-a:b"):
    return HmsEvent("e", kind, "r1", name, session, started, at, False)


def test_open_then_close():
    opened = observe(None, event())
    assert opened.is_open and opened.started_at == 100.0
    closed = observe(opened, event("session.close.success", at=200.0))
    assert closed.status == "closed" and closed.ended_at == 200.0


def test_close_before_open_stays_closed():
    closed = observe(None, event("session.close.success", at=200.0))
    assert observe(closed, event()).status == "closed"
    assert observe(closed, event("peer.join.success")).status == "closed"


def test_duplicates_change_nothing():
    opened = observe(None, event())
    assert observe(opened, event()) == opened
    closed = observe(opened, event("session.close.success", at=200.0))
    assert observe(closed, event("session.close.success", at=300.0)) == closed


def test_room_end_closes_and_peer_events_open():
    assert observe(None, event("peer.leave.success")).is_open
    assert observe(None, event("room.end.success")).status == "closed"


def test_late_events_fill_missing_details():
    partial = observe(None, event(started=None, name=None))
    assert partial.started_at == 101.0  # first sight estimates the start
    filled = observe(partial, event())
    assert filled.started_at == 100.0 and filled.room_name == "call-a:b"


def test_ending_moves_forward_only():
    opened = observe(None, event())
    ending = advance(opened, "ending", 150.0)
    assert ending.status == "ending" and not ending.is_open and ending.ended_at == 150.0
    assert advance(ending, "open", 160.0) == ending
    assert observe(ending, event()).status == "ending"
    assert observe(ending, event("session.close.success", at=170.0)).status == "closed"


def test_newest_session_is_current():
    old = Session("s1", "r1", "call-a:b", "open", 100.0)
    new = replace(old, session_id="s2", started_at=200.0)
    assert is_newer(old, None)
    assert is_newer(new, old)
    assert not is_newer(old, new)  # a late open of an older session never takes the room back
    assert is_newer(old, old)
