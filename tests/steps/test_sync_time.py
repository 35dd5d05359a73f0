"""Stream events ordered and dated by their own `created_at`, against a Stream stand-in whose
partial updates leave `channel.updated_at` as it was (as the live API does)."""

from __future__ import annotations

import json
from typing import Any

from tests.support.state import recorded_channel
from tests.support.world import CALL, CID, World
from worker.core.events import CallFields, parse_hms_event

DAY = 86400.0


def server_clears(world: World) -> list[float]:
    """When callsync cleared the channel's flag (the world clock at each clearing write)."""
    cleared: list[float] = []

    def watch(cid: str, fields: dict[str, Any], by: str) -> None:
        if cid == CID and by == "server" and fields.get("callActive") is not True:
            cleared.append(world.now)

    world.stream.change_watchers.append(watch)
    return cleared


def deliver_hms_outbox(world: World) -> None:
    while world.hms.outbox:
        _, body = world.hms.outbox.pop(0)
        world.deliver_hms(parse_hms_event(json.loads(body)))


def test_a_new_call_after_yesterdays_is_never_cleared(world):
    """The issue's scenario: yesterday's session closed; today a member starts a new call and
    writes the claim, and session.open.success arrives a second later."""
    today = world.now
    world.now = today - 30 * DAY
    world.stream.create_channel(CID)  # long ago: its updated_at stays this old
    room = world.hms.create_room(CALL)
    world.now = today - DAY
    yesterday = world.hms.open_session(room["id"])
    deliver_hms_outbox(world)
    world.deliver_stream_outbox()
    world.now += 1800
    world.hms.close_session(yesterday["id"])
    deliver_hms_outbox(world)
    world.deliver_stream_outbox()
    assert world.fields() == {"callActive": False}
    assert world.stream.channels[CID]["updated_at"] == world.stream.channels[CID]["created_at"]

    cleared = server_clears(world)
    world.now = today
    world.hms.open_session(room["id"])  # the member joins ...
    world.stream.client_update(CID, {"data": {"callActive": True, "callId": CALL}})  # ... and writes the claim
    world.deliver_stream_outbox()
    world.now += 1.0
    deliver_hms_outbox(world)  # session.open.success, a second later
    world.now += 120  # past the grace and a re-check
    world.drain()
    world.deliver_stream_outbox()
    assert cleared == []
    assert world.fields() == {"callActive": True, "callId": CALL}
    assert world.patches()[-1] == {"set": {"data.callActive": False}, "unset": ["data.callId"]}  # yesterday's close only


def test_reordered_deliveries_keep_their_order_by_created_at(world):
    world.stream.create_channel(CID)
    world.deliver_stream_outbox()
    ghost = "call-messaging:elsewhere"  # a claim no session backs: it would be checked and cleared
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": ghost})
    world.now += 0.5
    world.stream.client_update(CID, {"data.callActive": False}, ["data.callId"])
    world.stream.outbox.reverse()  # the later update arrives first
    world.deliver_stream_outbox()
    assert recorded_channel(world.rt.state, CID).fields == CallFields(False, None)  # what Stream shows
    world.now += 120
    world.drain()
    assert world.patches() == []  # nothing to clear: the channel already shows no call


def test_the_echo_of_callsyncs_write_changes_nothing_whichever_comes_first(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    deliver_hms_outbox(world)
    [(_, opened_echo)] = world.stream.outbox
    world.stream.outbox.clear()
    world.now += 5
    world.hms.close_session(session["id"])
    deliver_hms_outbox(world)  # the close is written before the first write's echo arrives
    world.stream.outbox.insert(0, ("", opened_echo))
    world.deliver_stream_outbox()  # the stale echo (older than the second write), then the fresh one
    assert world.fields() == {"callActive": False}
    assert len(world.patches()) == 2
    assert recorded_channel(world.rt.state, CID).fields == CallFields(False, None)


def test_a_member_claiming_the_next_call_before_the_last_ones_close_is_here_keeps_the_flag(world):
    """The member re-writes the same claim for a new session while callsync still shows the
    last one (its close not yet delivered): the claim is the member's, not the last session's."""
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    first = world.hms.open_session(room["id"])
    deliver_hms_outbox(world)
    world.deliver_stream_outbox()
    world.now += 600
    world.hms.close_session(first["id"])
    [held_close] = world.hms.outbox
    world.hms.outbox.clear()
    cleared = server_clears(world)
    world.now += 2.5
    world.hms.open_session(room["id"])  # the next call; its open comes late too
    [held_open] = world.hms.outbox
    world.hms.outbox.clear()
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": CALL})
    world.deliver_stream_outbox()
    world.now += 0.5
    world.hms.outbox[:] = [held_close]
    deliver_hms_outbox(world)  # the last session's close, after the member's claim
    world.now += 0.5
    world.hms.outbox[:] = [held_open]
    deliver_hms_outbox(world)
    world.now += 120
    world.drain()
    assert cleared == [] and world.fields() == {"callActive": True, "callId": CALL}
