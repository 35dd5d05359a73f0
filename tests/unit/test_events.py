import pytest

from worker.core.events import (
    CallFields,
    HmsEvent,
    InvalidEvent,
    StreamEvent,
    cid_of_room,
    parse_hms_event,
    parse_stream_event,
    parse_time,
    valid_call_id,
)
from worker.core.peers import Peer

PREFIX = ("data",)


def stream_body(**over):
    body = {
        "type": "channel.updated",
        "cid": "messaging:general",
        "channel": {
            "cid": "messaging:general",
            "type": "messaging",
            "id": "general",
            "updated_at": "2026-11-20T10:00:00.123456Z",
            "data": {"callActive": True, "callId": "call-messaging:general"},
        },
        "request_info": {"type": "client"},
        "user": {"id": "alice"},
        "created_at": "2026-11-20T10:00:00.2Z",
    }
    body.update(over)
    return body


def test_parse_time_handles_nanoseconds_zero_time_and_garbage():
    assert parse_time("2026-11-20T10:00:00Z") == 1795168800.0
    assert parse_time("2026-11-20T10:00:00.123456789Z") == pytest.approx(1795168800.123456)
    assert parse_time("2026-11-20T10:00:00.5+01:00") == pytest.approx(1795165200.5)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("2026-11-20T10:00:00") is None  # no zone: not a platform time
    for junk in (None, "", "yesterday", 12, "9" * 100):
        assert parse_time(junk) is None


def test_call_ids_and_room_names():
    assert valid_call_id("call-messaging:general") == "call-messaging:general"
    assert valid_call_id("bad id") is None
    assert valid_call_id("x" * 257) is None
    assert valid_call_id(7) is None
    assert cid_of_room("call-messaging:general") == "messaging:general"
    assert cid_of_room("call-livestream:a:b") == "livestream:a:b"
    assert cid_of_room("standup") is None
    assert cid_of_room(None) is None


def test_channel_updated_parses_fields_event_time_and_origin():
    event = parse_stream_event(stream_body(), PREFIX)
    assert event == StreamEvent(
        type="channel.updated",
        cid="messaging:general",
        fields=CallFields(True, "call-messaging:general"),
        created_at=pytest.approx(1795168800.2),  # the event's time, not channel.updated_at
        from_server=False,
        user_id="alice",
    )
    assert StreamEvent.from_json(event.to_json()) == event


def test_stream_events_are_dated_by_their_own_created_at_never_by_channel_updated_at():
    nanos = parse_stream_event(stream_body(created_at="2026-11-20T12:00:00.123456789+02:00"), PREFIX)
    assert nanos.created_at == pytest.approx(1795168800.123456)  # nine digits, an offset
    undated = parse_stream_event(stream_body(created_at=None), PREFIX)
    assert undated.created_at is None  # channel.updated_at is there, and no clock: the worker dates it
    # A task queued by a version that sent `version` (channel.updated_at) runs undated.
    legacy = {**nanos.to_json(), "version": 1.0}
    del legacy["created_at"]
    assert StreamEvent.from_json(legacy).created_at is None


def test_top_level_fields_and_derived_cid():
    body = stream_body(cid=None, channel={"type": "team", "id": "x1", "callActive": True, "callId": "c1"})
    event = parse_stream_event(body, ())
    assert event.cid == "team:x1"
    assert event.fields == CallFields(True, "c1")


def test_missing_or_odd_call_fields_read_as_inactive():
    body = stream_body(channel={"cid": "messaging:general", "data": {"callActive": "yes", "callId": "bad id"}})
    assert parse_stream_event(body, PREFIX).fields == CallFields(False, None)
    body = stream_body(channel={"cid": "messaging:general", "data": "not an object"})
    assert parse_stream_event(body, PREFIX).fields == CallFields(False, None)


def test_server_requests_are_flagged():
    event = parse_stream_event(stream_body(request_info={"type": "server"}), PREFIX)
    assert event.from_server


def test_ignored_and_invalid_stream_events():
    assert parse_stream_event({"type": "message.new", "cid": "messaging:general"}, PREFIX) is None
    with pytest.raises(InvalidEvent):
        parse_stream_event([], PREFIX)
    with pytest.raises(InvalidEvent):
        parse_stream_event({"cid": "messaging:general"}, PREFIX)
    with pytest.raises(InvalidEvent):
        parse_stream_event({"type": "channel.updated"}, PREFIX)


def hms_body(kind="session.open.success", **data):
    base = {
        "room_id": "r1",
        "room_name": "call-messaging:general",
        "session_id": "s1",
        "session_started_at": "2026-11-20T10:00:00.123456789Z",
    }
    base.update(data)
    return {"version": "2.0", "id": "e1", "account_id": "a", "timestamp": "2026-11-20T10:00:01Z", "type": kind, "data": base}


def test_hms_session_events():
    opened = parse_hms_event(hms_body())
    assert opened == HmsEvent(
        id="e1",
        type="session.open.success",
        room_id="r1",
        room_name="call-messaging:general",
        session_id="s1",
        started_at=pytest.approx(1795168800.123456),
        at=1795168801.0,
        is_replay=False,
    )
    assert not opened.closes
    closed = parse_hms_event(hms_body("session.close.success", session_stopped_at="2026-11-20T11:00:00Z"))
    assert closed.closes and closed.at == 1795172400.0
    assert HmsEvent.from_json(closed.to_json()) == closed


def test_hms_failed_join_zero_time_is_no_time():
    event = parse_hms_event(
        hms_body("peer.join.success", joined_at="0001-01-01T00:00:00Z", session_started_at="0001-01-01T00:00:00Z")
    )
    assert event.started_at is None and event.at == 1795168801.0


def test_hms_ignored_and_invalid():
    assert parse_hms_event(hms_body("recording.success")) is None
    for broken in ([], {"type": "x", "data": {}}, {"id": "e", "data": {}}, {"id": "e", "type": "x", "data": []}):
        with pytest.raises(InvalidEvent):
            parse_hms_event(broken)
    with pytest.raises(InvalidEvent):
        parse_hms_event(hms_body(session_id=None))


def test_a_peer_event_carries_its_peer_and_a_session_event_none() -> None:
    join = {
        "id": "e1",
        "type": "peer.join.success",
        "timestamp": "2026-11-20T10:00:05Z",
        "data": {
            "room_id": "r1",
            "room_name": "call-x",
            "session_id": "s1",
            "peer_id": "p1",
            "user_id": "ann",
            "joined_at": "2026-11-20T10:00:05Z",
            "session_started_at": "2026-11-20T10:00:00Z",
        },
    }
    leave = {**join, "id": "e2", "type": "peer.leave.success", "data": {**join["data"], "left_at": "2026-11-20T10:09:05Z"}}
    opened = {**join, "id": "e3", "type": "session.open.success"}
    joined, left, session = (parse_hms_event(b) for b in (join, leave, opened))
    assert joined is not None and left is not None and session is not None
    assert joined.peer() == Peer("p1", "ann", 1795168805.0, None)
    assert left.peer() == Peer("p1", "ann", 1795168805.0, 1795169345.0)
    assert session.peer() is None
    assert HmsEvent.from_json(joined.to_json()) == joined
