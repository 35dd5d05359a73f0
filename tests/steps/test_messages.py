"""Call messages (rule 13) on fakeredis with the stand-ins: one message per session, updated on close."""

from __future__ import annotations

import logging

import pytest

from tests.support.world import CID, World, open_call
from worker.core.upstream import UpstreamError
from worker.steps import messages
from worker.steps.runtime import Deferred
from worker.store.keys import call_message_key

pytestmark = pytest.mark.world(call_messages=True)


@pytest.fixture(autouse=True)
def _channel_and_sender(request: pytest.FixtureRequest) -> None:
    """The `world` fixture's channel, and the user call messages come from (as a worker's start upserts it)."""
    if "world" in request.fixturenames:
        world = request.getfixturevalue("world")
        world.stream.create_channel(CID)
        messages.upsert_message_user(world.rt)


def join(world: World, session, room, user: str) -> str:
    peer = world.hms.join_peer(session["id"], user, webhook=False)
    body = world.hms.sessions[session["id"]]["peers"][peer]
    world.deliver_hms(
        world.hms_event("peer.join.success", session, room, peer_id=peer, user_id=user, joined_at=body["joined_at"])
    )
    return peer


def close(world: World, session, room, after: float) -> None:
    world.now += after
    world.hms.close_session(session["id"])
    world.deliver_hms(world.hms_event("session.close.success", session, room))


def test_two_members_one_message_updated_on_close_with_duration_and_both(world):
    room, session = open_call(world)
    [message] = world.stream.messages_in(CID)
    assert message["id"] == f"callsync-{session['id']}" and message["text"] == "Call started"
    assert message["user"] == {"id": "callsync"} and world.stream.users["callsync"]["name"] == "Calls"
    assert message["attachments"][0]["status"] == "live"
    join(world, session, room, "alice")
    join(world, session, room, "bob")
    close(world, session, room, 14 * 60)
    [message] = world.stream.messages_in(CID)
    assert message["text"] == "Call ended · 14 min"
    attachment = message["attachments"][0]
    assert attachment["status"] == "ended" and attachment["participants"] == ["alice", "bob"]
    assert attachment["duration_seconds"] in (839, 840)  # the close envelope is dated to the second


def test_duplicates_and_redeliveries_leave_one_message_and_no_extra_writes(world):
    room, session = open_call(world)
    open_again = world.hms_event("session.open.success", session, room)
    world.deliver_hms(open_again)
    world.deliver_hms(open_again)
    join(world, session, room, "alice")
    join(world, session, room, "bob")
    close(world, session, room, 60)
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    messages.write_call_message(world.rt, session["id"])
    writes = [c for c in world.stream.calls if "/message" in c[1]]
    assert len(world.stream.messages_in(CID)) == 1
    assert len(writes) == 2  # one send, one update


def test_a_lost_record_of_a_send_is_an_update_not_a_second_message(world, redis_client):
    _, session = open_call(world)
    redis_client.hdel(call_message_key(session["id"]), "written")  # as if the send's answer was lost
    messages.write_call_message(world.rt, session["id"])
    assert len(world.stream.messages_in(CID)) == 1


def test_a_second_session_is_a_second_message(world):
    room, session = open_call(world)
    join(world, session, room, "alice")
    join(world, session, room, "bob")
    close(world, session, room, 60)
    world.now += 10
    second = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", second, room))
    ids = sorted(m["id"] for m in world.stream.messages_in(CID))
    assert ids == sorted([f"callsync-{session['id']}", f"callsync-{second['id']}"])


def test_only_the_caller_joined_is_missed(world):
    room, session = open_call(world)
    join(world, session, room, "alice")
    close(world, session, room, 30)
    [message] = world.stream.messages_in(CID)
    assert message["text"] == "Missed call" and message["attachments"][0]["status"] == "missed"


def test_lost_peer_events_are_completed_from_100ms_at_close(world):
    room, session = open_call(world)
    world.hms.join_peer(session["id"], "alice", webhook=False)  # never delivered to callsync
    world.hms.join_peer(session["id"], "bob", webhook=False)
    close(world, session, room, 120)
    [message] = world.stream.messages_in(CID)
    assert message["attachments"][0]["status"] == "ended"
    assert message["attachments"][0]["participants"] == ["alice", "bob"]


def test_a_deleted_channel_drops_the_message_with_a_log_line(world, redis_client, caplog):
    caplog.set_level(logging.INFO, logger="callsync.messages")
    _, session = open_call(world)
    world.stream.delete_channel(CID)
    key = call_message_key(session["id"])
    redis_client.hset(key, "ended_ms", str(round((world.now + 60) * 1000)))  # the close, recorded
    messages.write_call_message(world.rt, session["id"])  # the update finds no message: dropped
    assert "dropped" in caplog.text
    asked = len(world.stream.calls)
    messages.write_call_message(world.rt, session["id"])  # gone: nothing more is asked of anyone
    assert len(world.stream.calls) == asked


def test_a_429_on_send_raises_for_rule_7_and_the_retry_posts_once(world):
    world.stream.fail_next_messages(1, 429)
    room = world.hms.create_room("call-messaging:general")
    session = world.hms.open_session(room["id"], started_at=world.now)
    with pytest.raises(UpstreamError) as raised:
        world.deliver_hms(world.hms_event("session.open.success", session, room))
    assert raised.value.status == 429
    messages.write_call_message(world.rt, session["id"])  # the task's retry
    messages.write_call_message(world.rt, session["id"])
    assert len(world.stream.messages_in(CID)) == 1


def test_over_the_message_ceiling_the_write_waits_and_channel_updates_do_not(redis_client):
    from worker.settings import Rate

    world = World(redis_client, call_messages=True, stream_message_rate=Rate(1, 60.0))
    world.stream.create_channel(CID)
    messages.upsert_message_user(world.rt)
    open_call(world)
    assert world.fields().get("callActive") is True
    world.now += 1
    second_room = world.hms.create_room("call-messaging:other")
    world.stream.create_channel("messaging:other")
    other = world.hms.open_session(second_room["id"], started_at=world.now)
    world.rt.state.bind("messaging:other", "call-messaging:other", world.now)
    with pytest.raises(Deferred):
        world.deliver_hms(world.hms_event("session.open.success", other, second_room))
    assert world.stream.channels["messaging:other"]["data"]["callActive"] is True


def test_off_by_default_no_message(redis_client):
    world = World(redis_client)
    world.stream.create_channel(CID)
    open_call(world)
    assert world.stream.messages_in(CID) == []
