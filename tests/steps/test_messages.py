"""Call messages (rule 13) on Redis with the stand-ins: one message per session, updated on close,
written through the fair write queue's `messages` endpoint (keyed by session id, at
CALLSYNC_STREAM_MESSAGE_RATE) apart from channel updates."""

from __future__ import annotations

import logging

import pytest

from tests.support.world import CALL, CID, World, open_call
from worker.core import actions, pacing
from worker.core.checks import LiveSession
from worker.ops import counters
from worker.settings import Rate
from worker.steps import messages, sessions, sync, writes
from worker.store.keys import call_message_key, call_message_lock_key
from worker.store.writequeue import queued

MESSAGE_PATH = f"/channels/{CID.replace(':', '/')}/message"

pytestmark = pytest.mark.world(call_messages=True)


def ready(world: World) -> World:
    """The channel, and the user call messages come from (as a worker's start upserts it)."""
    world.stream.create_channel(CID)
    messages.upsert_message_user(world.rt)
    return world


def make_world(redis_client, **overrides) -> World:
    return ready(World(redis_client, call_messages=True, **overrides))


@pytest.fixture(autouse=True)
def _channel_and_sender(request: pytest.FixtureRequest) -> None:
    """The `world` fixture's channel and message sender."""
    if "world" in request.fixturenames:
        ready(request.getfixturevalue("world"))


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


def message_calls(world: World) -> list[tuple[str, str]]:
    return [(m, p) for m, p, _ in world.stream.calls if p == MESSAGE_PATH or p.startswith("/messages/")]


def waits(world: World) -> dict[str, float]:
    """callsync_rate_limit_wait_seconds_total by source, from what the steps counted."""
    found: dict[str, float] = {}
    for field, amount in world.rt.tally.take().items():
        decoded = counters.decode(field)
        if decoded and decoded[0] == counters.RATE_LIMIT_WAIT_SECONDS:
            source = dict(decoded[1])["source"]
            found[source] = found.get(source, 0.0) + amount
    return found


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
    assert queued(world.rt.redis)["messages"] == (0, None)


def test_duplicates_and_redeliveries_leave_one_message_and_no_extra_writes(world):
    room, session = open_call(world)
    open_again = world.hms_event("session.open.success", session, room)
    world.deliver_hms(open_again)
    world.deliver_hms(open_again)
    join(world, session, room, "alice")
    join(world, session, room, "bob")
    close(world, session, room, 60)
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    messages.write_call_message(world.rt, session["id"])  # a replayed task: in line, written as it is
    world.drain()
    assert len(world.stream.messages_in(CID)) == 1
    assert message_calls(world) == [("POST", MESSAGE_PATH), ("POST", f"/messages/callsync-{session['id']}")]


def test_opened_and_closed_while_waiting_is_sent_once_already_final(redis_client):
    world = make_world(redis_client, stream_message_rate=Rate(1, 60.0))
    room, first = open_call(world)  # takes the minute's one message
    close(world, first, room, 5)  # in line behind the ceiling
    second = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", second, room))
    close(world, second, room, 5)
    assert world.fields().get("callActive") is False  # channel updates were not held up
    assert len(world.stream.messages_in(CID)) == 1
    for _ in range(4):  # one message a minute: the first's update, then the second's send
        world.now += 60
        world.drain()
    by_id = {m["id"]: m for m in world.stream.messages_in(CID)}
    assert by_id[f"callsync-{second['id']}"]["attachments"][0]["status"] in ("ended", "missed")
    sends = [c for c in message_calls(world) if c == ("POST", MESSAGE_PATH)]
    assert len(sends) == 2 and len(message_calls(world)) == 3  # second: one send, already final; first: its update
    assert waits(world).get("message_ceiling", 0) > 0


def test_a_lost_record_of_a_send_is_an_update_not_a_second_message(world, redis_client):
    _, session = open_call(world)
    redis_client.hdel(call_message_key(session["id"]), "written")  # as if the send's answer was lost
    messages.write_call_message(world.rt, session["id"])
    world.drain()
    assert len(world.stream.messages_in(CID)) == 1
    assert message_calls(world)[-2:] == [("POST", MESSAGE_PATH), ("POST", f"/messages/callsync-{session['id']}")]


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


def test_a_lost_open_then_the_end_is_one_message_in_its_final_state(world):
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    world.hms.join_peer(session["id"], "alice", webhook=False)
    world.hms.join_peer(session["id"], "bob", webhook=False)
    close(world, session, room, 125)  # the open's webhook never came
    [message] = world.stream.messages_in(CID)
    assert message["id"] == f"callsync-{session['id']}" and message["text"] == "Call ended · 2 min"
    assert message_calls(world) == [("POST", MESSAGE_PATH)]


def test_a_session_first_seen_by_a_peer_event_gets_its_call_started(world):
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    join(world, session, room, "alice")  # the open's webhook was lost
    [message] = world.stream.messages_in(CID)
    assert message["text"] == "Call started" and message["id"] == f"callsync-{session['id']}"
    asked = len(world.stream.calls)
    join(world, session, room, "bob")  # a known session's peer event asks nothing more
    assert len(message_calls(world)) == 1 and len(world.stream.calls) == asked


def test_a_session_adopted_by_the_resync_gets_its_call_started(world):
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    world.rt.state.bind(CID, CALL, world.now)
    sessions.adopt_session(world.rt, CALL, LiveSession(room["id"], session["id"], world.now))  # as the resync does
    world.drain()
    [message] = world.stream.messages_in(CID)
    assert message["text"] == "Call started" and message["id"] == f"callsync-{session['id']}"


def test_a_deleted_channel_drops_the_message_with_a_log_line(world, redis_client, caplog):
    caplog.set_level(logging.INFO, logger="callsync.messages")
    _, session = open_call(world)
    world.stream.delete_channel(CID)
    redis_client.hset(call_message_key(session["id"]), "ended_ms", str(round((world.now + 60) * 1000)))  # its close
    messages.write_call_message(world.rt, session["id"])
    world.drain()  # the update finds no message: dropped
    assert "dropped" in caplog.text
    assert queued(redis_client)["messages"] == (0, None) and world.rt.dead_letters.count() == 0
    asked = len(world.stream.calls)
    messages.write_call_message(world.rt, session["id"])  # gone: nothing more is asked of anyone
    world.drain()
    assert len(world.stream.calls) == asked


def test_another_4xx_is_a_dead_letter_that_replays_through_the_line(world, redis_client):
    world.stream.fail_next_messages(1, 400)
    _, session = open_call(world)
    assert world.stream.messages_in(CID) == []
    [letter] = world.rt.dead_letters.list()
    assert letter.task == actions.WRITE_CALL_MESSAGE and letter.args == [session["id"]]
    assert queued(redis_client)["messages"] == (0, None)
    messages.write_call_message(world.rt, *letter.args)  # what `callsync dead-letters replay` runs
    world.drain()
    assert len(world.stream.messages_in(CID)) == 1


def test_a_429_pauses_messages_only_and_the_message_comes_late_and_once(world):
    world.stream.fail_next_messages(1, 429, retry_after=30)
    room, session = open_call(world)
    assert world.fields().get("callActive") is True and world.stream.messages_in(CID) == []
    assert queued(world.rt.redis)["messages"][0] == 1  # in line, its endpoint paused
    # Channel updates go on meanwhile: the call ends, the channel is cleared at once.
    close(world, session, room, 5)
    assert world.fields().get("callActive") is not True and world.stream.messages_in(CID) == []
    world.now += 30
    world.drain()
    [message] = world.stream.messages_in(CID)
    assert message["attachments"][0]["status"] in ("ended", "missed")
    assert [c for c in message_calls(world) if c == ("POST", MESSAGE_PATH)] == [("POST", MESSAGE_PATH)] * 2  # the 429, the send
    assert waits(world).get("message_429") == 30.0


def test_a_lower_reported_limit_is_adopted_for_messages_alone(world):
    world.stream.message_limit = 6  # X-RateLimit-Limit on message answers: 6 a minute
    open_call(world)
    pace = messages.MESSAGES.queue(world.rt).pace()
    assert pace.reported == 6
    assert pacing.interval(300, 60.0, pace, world.now) == 10.0  # one message every 10 s, not 0.2
    assert sync.CHANNELS.queue(world.rt).pace().reported == 300  # channel updates keep their own


def test_a_session_being_written_elsewhere_waits_in_its_place(world, redis_client):
    room, session = open_call(world)
    redis_client.set(call_message_lock_key(session["id"]), "another-drainer", ex=30)
    world.now += 5
    world.hms.close_session(session["id"])
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    assert queued(redis_client)["messages"][0] == 1  # not dropped, not written twice at once
    redis_client.delete(call_message_lock_key(session["id"]))
    world.now += 10
    writes.kick(world.rt)
    world.drain()
    assert world.stream.messages_in(CID)[0]["attachments"][0]["status"] in ("ended", "missed")
    assert queued(redis_client)["messages"] == (0, None)


def test_off_by_default_no_message(redis_client):
    world = World(redis_client)
    world.stream.create_channel(CID)
    open_call(world)
    assert world.stream.messages_in(CID) == []
    assert queued(redis_client)["messages"] == (0, None)
