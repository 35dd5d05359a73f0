"""A call belongs to one channel (docs/behaviour.md, ownership): no other channel can take, end
or show it. Each case of the review that found the holes, against the calls API and the worker's
steps with the stand-ins, and the legitimate paths beside them."""

from __future__ import annotations

from typing import Any

import fakeredis
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from standins import FakeHms, FakeStream
from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from tests.support.calls_api import Served, Swap, Web, claims_of, web_for
from tests.support.state import record_hms_event
from tests.support.world import World
from worker.core.binding import derived_room_name, owner_description
from worker.core.events import HmsEvent
from worker.store.state import State

VICTIM, MALLORY = "messaging:team", "messaging:TEAM"
VICTIMS_CALL, MALLORYS_CALL = "call-messaging:team", "call-messaging:TEAM"


def live_room(web: Web, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A room the reference client made, with a live session callsync recorded from its webhook."""
    room = web.hms.create_room(name)
    session = web.hms.open_session(room["id"])
    event = HmsEvent("e-" + session["id"], "session.open.success", room["id"], name, session["id"], 1e9, 1e9, False)
    record_hms_event(State(web.redis), event, 1e9)
    return room, session


@pytest.fixture
def web(redis_client: Any, served: Served) -> Web:  # the calls API's, with the victim's channel
    stream = served[0]
    for cid, members in ((VICTIM, ("alice", "bob")), (MALLORY, ("mallory",))):
        stream.create_channel(cid)
        for user in members:
            stream.add_member(cid, user)
    return web_for(served, redis_client)


def test_a_channel_whose_id_differs_only_in_case_gets_its_own_room_and_cannot_touch_the_other(web: Web) -> None:
    room, session = live_room(web, VICTIMS_CALL)
    hers = web.create("mallory", call_id=MALLORYS_CALL, cid=MALLORY)
    assert hers.status_code == 200
    assert hers.json["call"]["hms"]["room_name"] == derived_room_name(MALLORYS_CALL)
    assert claims_of(hers.json["token"])["room_id"] != room["id"]
    assert web.hms.rooms[room["id"]]["description"] == ""  # the victim's room was not reconfigured
    assert web.create("mallory", call_id=VICTIMS_CALL, cid=MALLORY).status_code == 409  # not her channel's id
    assert web.join("mallory", call_id=VICTIMS_CALL).status_code == 403
    assert web.end("mallory", call_id=MALLORYS_CALL).json == {"status": "no active session"}
    assert web.hms.live_session_id(room["id"]) == session["id"]
    # The victim's members: their own room, as before.
    created, joined = web.create("alice", call_id=VICTIMS_CALL, cid=VICTIM), web.join("bob", VICTIMS_CALL)
    for user, answer in (("alice", created), ("bob", joined)):
        assert answer.status_code == 200, user
        assert claims_of(answer.json["token"])["room_id"] == room["id"]
    state = State(web.redis)
    assert state.owner_of_call(MALLORYS_CALL) == MALLORY and state.owner_of_call(VICTIMS_CALL) == VICTIM
    loaded = state.load(MALLORY)
    assert loaded is not None and all(c.session is None for c in loaded.calls)  # her channel shows no call of his


def test_whichever_asks_first_a_case_twin_never_shares_the_others_room(web: Web) -> None:
    hers = web.create("mallory", call_id=MALLORYS_CALL, cid=MALLORY).json["call"]["hms"]
    assert hers["room_name"] == MALLORYS_CALL  # the name was free
    his = web.create("alice", call_id=VICTIMS_CALL, cid=VICTIM).json["call"]["hms"]
    assert his["room_name"] == derived_room_name(VICTIMS_CALL) and his["room_id"] != hers["room_id"]
    assert web.join("bob", VICTIMS_CALL).json["call"]["hms"] == his  # found again by its derived name
    web.redis.flushdb()  # a lost Redis: the rooms are found by name again, each the right one
    assert web.join("bob", VICTIMS_CALL).json["call"]["hms"] == his
    assert web.join("mallory", MALLORYS_CALL).json["call"]["hms"] == hers


def test_a_free_form_id_belongs_to_the_channel_that_bound_it_first(web: Web) -> None:
    assert State(web.redis).bind(VICTIM, "standup", 1e9).first  # its own client's claim
    assert web.create("mallory", call_id="standup", cid=MALLORY).status_code == 409
    assert web.join("mallory", call_id="standup").status_code == 403
    assert web.create("alice", call_id="standup", cid=VICTIM).status_code == 200
    assert web.join("bob", call_id="standup").status_code == 200
    [room] = [r for r in web.hms.rooms.values() if r["name"] == "standup"]
    assert room["description"] == owner_description(VICTIM)  # recorded where 100ms keeps it


def test_the_owner_a_room_records_is_the_platforms_word_after_a_lost_redis(web: Web) -> None:
    web.hms.create_room("standup", description=owner_description(VICTIM))
    assert web.create("mallory", call_id="standup", cid=MALLORY).status_code == 409
    assert State(web.redis).owner_of_call("standup") == VICTIM
    assert web.create("alice", call_id="standup", cid=VICTIM).status_code == 200


USERS = {"messaging:a": "ann", "messaging:A": "axel", "messaging:b": "ben"}
IDS = st.sampled_from(["call-messaging:a", "call-messaging:A", "call-messaging:b", "standup", "Standup", "call-messaging:c"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(sorted(USERS)), IDS, st.booleans()), min_size=1, max_size=8))
def test_no_request_from_a_member_of_one_channel_reaches_anothers_room(sockets: tuple[Swap, str, Swap, str], steps) -> None:
    stream, hms = FakeStream(KEY, SECRET), FakeHms(HMS_KEY, HMS_SECRET)
    for cid, user in USERS.items():
        stream.create_channel(cid)
        stream.add_member(cid, user)
    sockets[0].app, sockets[2].app = stream.app, hms.app
    web = web_for((stream, hms, sockets[1], sockets[3]), fakeredis.FakeRedis())
    rooms: dict[str, set[str]] = {cid: set() for cid in USERS}
    for cid, call_id, create in steps:
        answer = web.create(USERS[cid], call_id=call_id, cid=cid) if create else web.join(USERS[cid], call_id)
        if answer.status_code == 200:
            rooms[cid].add(jwt.decode(answer.json["token"], options={"verify_signature": False})["room_id"])
    for cid in USERS:
        others = set().union(*(rooms[other] for other in USERS if other != cid))
        assert not rooms[cid] & others, (cid, rooms)


def test_another_channels_end_call_ends_nothing_and_its_claim_is_cleared_after_the_grace(redis_client: Any) -> None:
    world = World(redis_client)
    for cid in (VICTIM, "messaging:evil"):
        world.stream.create_channel(cid)
    room = world.hms.create_room(VICTIMS_CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    world.deliver_stream_outbox()
    assert world.stream.call_fields(VICTIM) == {"callActive": True, "callId": VICTIMS_CALL}
    claim = {"data.callActive": True, "data.callId": VICTIMS_CALL}
    world.stream.client_update("messaging:evil", claim, user_id="mallory")
    world.deliver_stream_outbox()
    world.stream.client_update("messaging:evil", {"data.callActive": False}, ["data.callId"], user_id="mallory")
    world.deliver_stream_outbox()
    assert world.hms.live_session_id(room["id"]) == session["id"]  # no room ended
    assert not any(path.endswith("/end-room") for _, path, _ in world.hms.calls)
    # The claim again, left there: cleared one grace later, without asking 100ms.
    asked = len(world.hms.calls)
    world.stream.client_update("messaging:evil", claim, user_id="mallory")
    world.deliver_stream_outbox()
    assert world.stream.call_fields("messaging:evil")["callActive"] is True
    world.now += world.settings.stale_flag_grace_seconds
    world.drain()
    assert world.stream.call_fields("messaging:evil") == {"callActive": False}
    assert len(world.hms.calls) == asked
    assert world.stream.call_fields(VICTIM) == {"callActive": True, "callId": VICTIMS_CALL}


def test_a_channel_that_claims_anothers_call_again_and_again_costs_one_write_per_grace(redis_client: Any) -> None:
    world = World(redis_client)
    world.stream.create_channel("messaging:evil")
    grace = world.settings.stale_flag_grace_seconds
    claim = {"data.callActive": True, "data.callId": VICTIMS_CALL}
    for _ in range(4 * grace // 10):  # a claim every 10 s for four graces
        if world.stream.call_fields("messaging:evil").get("callActive") is not True:
            world.stream.client_update("messaging:evil", claim, user_id="mallory")
        world.deliver_stream_outbox()
        world.now += 10
        world.drain()
        world.deliver_stream_outbox()
    clears = [p for m, p, _ in world.stream.calls if m == "PATCH" and p.endswith("/evil")]
    assert 1 <= len(clears) <= 4
    assert world.hms.calls == []  # never asked 100ms about another channel's call


def test_the_first_binder_of_a_free_form_call_is_written_into_its_room(redis_client: Any) -> None:
    world = World(redis_client)
    world.stream.create_channel("messaging:general")
    room = world.hms.create_room("standup")  # made by the app's own backend
    world.stream.client_update("messaging:general", {"data.callActive": True, "data.callId": "standup"})
    world.deliver_stream_outbox()
    assert world.hms.rooms[room["id"]]["description"] == owner_description("messaging:general")
    # After a lost Redis another channel claims it first: the room's word wins.
    world.rt.redis.flushdb()
    world.stream.create_channel("messaging:evil")
    world.stream.client_update("messaging:evil", {"data.callActive": True, "data.callId": "standup"}, user_id="mallory")
    world.deliver_stream_outbox()
    assert world.rt.state.owner_of_call("standup") == "messaging:general"
