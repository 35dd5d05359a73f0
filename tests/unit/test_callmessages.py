"""The call message's content (core.callmessages), without mocks."""

from __future__ import annotations

import json

from worker.core.callmessages import (
    ATTACHMENT_BUDGET,
    CallSession,
    call_message,
    is_duplicate_id,
    length_text,
    next_write,
)
from worker.core.peers import Peer, SessionPeers

T0 = 1_800_000_000.0


def session(ended: float | None = None) -> CallSession:
    return CallSession("s1", "call-messaging:general", "room1", "call-messaging:general", T0, ended)


def peers(*users: str | None) -> SessionPeers:
    return SessionPeers(tuple(Peer(f"p{n}", user, T0 + n) for n, user in enumerate(users)))


def test_a_live_session_says_call_started_with_the_call_object():
    message = call_message(session(), None)
    assert message.id == "callsync-s1"
    assert message.text == "Call started"
    assert message.attachment == {
        "type": "call",
        "call": {
            "id": "call-messaging:general",
            "provider": "hms",
            "hms": {"room_id": "room1", "room_name": "call-messaging:general"},
        },
        "status": "live",
        "started_at": "2027-01-15T08:00:00.000Z",
    }


def test_a_closed_session_of_two_users_is_ended_with_its_length_and_both_users():
    message = call_message(session(T0 + 14 * 60 + 10), peers("alice", "bob", "alice"))
    assert message.text == "Call ended · 14 min"
    assert message.attachment["status"] == "ended"
    assert message.attachment["duration_seconds"] == 850
    assert message.attachment["participants"] == ["alice", "bob"]
    assert message.attachment["participant_count"] == 2
    assert message.attachment["ended_at"] == "2027-01-15T08:14:10.000Z"


def test_at_most_one_distinct_user_is_missed():
    assert call_message(session(T0 + 30), peers("alice", "alice")).text == "Missed call"
    assert call_message(session(T0 + 30), peers("alice")).status == "missed"


def test_a_sip_peer_counts_as_a_user():
    assert call_message(session(T0 + 30), peers("alice", None)).status == "ended"


def test_participants_unknown_read_ended_never_missed():
    assert call_message(session(T0 + 30), None).status == "ended"
    assert call_message(session(T0 + 30), SessionPeers()).status == "ended"
    assert call_message(session(T0 + 30), None).attachment["participant_count"] is None


def test_participants_are_bounded_and_the_attachment_stays_under_streams_custom_data_limit():
    many = peers(*[f"user-{n:04d}-" + "x" * 200 for n in range(300)])
    message = call_message(session(T0 + 60), many)
    assert message.attachment["participant_count"] == 300
    assert len(message.attachment["participants"]) < 50
    assert len(json.dumps(message.attachment, separators=(",", ":")).encode()) <= ATTACHMENT_BUDGET
    short = call_message(session(T0 + 60), peers(*[f"u{n}" for n in range(300)]))
    assert len(short.attachment["participants"]) == 50


def test_overflow_counts_in_the_whole():
    bounded = SessionPeers((Peer("p1", "alice", T0),), overflow=999)
    assert call_message(session(T0 + 60), bounded).attachment["participant_count"] == 1000


def test_lengths():
    assert [length_text(s) for s in (45, 60, 14 * 60, 3600, 3900)] == ["45 s", "1 min", "14 min", "1 h", "1 h 5 min"]


def test_next_write_sends_once_then_updates_only_a_change():
    live, ended = call_message(session(), None), call_message(session(T0 + 60), peers("a", "b"))
    assert next_write(live, None, False) == "send"
    assert next_write(live, live.digest, False) is None
    assert next_write(ended, live.digest, False) == "update"
    assert next_write(ended, "", False) == "update"
    assert next_write(ended, live.digest, True) is None


def test_duplicate_id_is_streams_400_code_4_already_exists():
    # GetStream/stream-chat-js issue #759: 'SendMessage failed with error: "a message with ID … already exists"'
    assert is_duplicate_id(400, 'SendMessage failed with error: "a message with ID callsync-s1 already exists"')
    assert not is_duplicate_id(404, "Can't find channel with id messaging:x")
