"""docs/behaviour.md, rule 12: the resync reads both platforms back and records what it reads as
the events that would have said it; the reconciles it schedules put every channel right, and it
never ends a room. Steps on Redis with the stand-ins (tests/support/world.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.world import CALL, CID, World, open_call
from worker.core import actions
from worker.steps import resync as resyncs

GRACE = 1.0
pytestmark = pytest.mark.world(stale_flag_grace_seconds=int(GRACE))


def world_of(redis_client: Any, prefix: str = "data.") -> World:
    world = World(redis_client, prefix=prefix, stale_flag_grace_seconds=int(GRACE))
    world.stream.create_channel(CID, **({"data": {}} if prefix else {}))
    return world


def run(world: World, full: bool = False) -> dict[str, Any]:
    """A whole resync (as `callsync resync`), a second after what it repairs, then the reconciles
    it scheduled, past the grace."""
    world.now += 1.0
    summary = resyncs.resync(world.rt, full=full, slice_seconds=None, pacer=resyncs.Pacer(world.rt, sleep=lambda _: None))
    assert summary is not None
    world.drain()
    world.now += GRACE + 0.1
    world.drain()
    return summary


def end_rooms(world: World) -> list[str]:
    return [path for _, path, _ in world.hms.calls if path.endswith("/end-room")]


def shown(world: World, cid: str = CID, prefix: str = "data.") -> tuple[Any, Any]:
    node = world.stream.channels[cid].get("data", {}) if prefix else world.stream.channels[cid]
    return node.get("callActive"), node.get("callId")


@pytest.fixture(autouse=True)
def _channel(request: pytest.FixtureRequest) -> None:
    """The `world` fixture's channel, with the call fields' parent (as world_of makes it)."""
    if "world" in request.fixturenames:
        request.getfixturevalue("world").stream.create_channel(CID, data={})


def test_a_crashed_tabs_claim_whose_delivery_was_lost_is_cleared(world):
    room, session = open_call(world)
    world.deliver_stream_outbox()
    world.hms.close_session(session["id"])
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    world.deliver_stream_outbox()
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": CALL})
    world.stream.outbox.clear()  # the receiver was down: Stream gave up on it
    summary = run(world)
    assert summary["recorded"] == 1 and summary["reconciles"] >= 1
    assert shown(world) == (False, None)
    assert end_rooms(world) == []


def test_a_members_end_call_on_a_live_session_shows_the_call_again_and_ends_nothing(world):
    open_call(world)
    world.deliver_stream_outbox()
    assert shown(world) == (True, CALL)
    world.stream.client_update(CID, {"data.callActive": False}, ["data.callId"])
    world.stream.outbox.clear()
    summary = run(world)
    assert summary["recorded"] == 1
    assert shown(world) == (True, CALL)
    assert end_rooms(world) == []


def test_a_session_recorded_open_but_over_in_100ms_is_confirmed_then_closed(world):
    room, session = open_call(world)
    world.deliver_stream_outbox()
    world.hms.lose_next_webhooks(1)
    world.hms.close_session(session["id"])
    summary = run(world)
    assert summary["closed"] == 1
    assert any(path.startswith(f"/active-rooms/{room['id']}") for _, path, _ in world.hms.calls)
    assert shown(world) == (False, None)


def test_a_channel_with_a_write_in_flight_is_skipped(world):
    from worker.core.channels import WriteIntent
    from worker.core.events import CallFields
    from worker.store import intents

    open_call(world)
    world.deliver_stream_outbox()
    loaded = world.rt.state.load(CID)
    assert loaded is not None
    intents.record_intent(world.rt.state, CID, loaded.raw, WriteIntent(CallFields(False, None), world.now))
    summary = run(world)
    assert summary["skipped"] >= 1 and summary["recorded"] == 0


@pytest.mark.parametrize("prefix", ["data.", ""])
def test_after_a_lost_redis_every_channel_is_right_after_a_full_resync(redis_client, prefix):
    world = world_of(redis_client, prefix)
    field = f"{prefix}callActive"
    others = {f"messaging:room{n}": None for n in range(3)}
    for cid in others:
        world.stream.create_channel(cid, **({"data": {}} if prefix else {}))
    # A call running before the loss, shown.
    open_call(world)
    world.deliver_stream_outbox()
    # Its room's close will be lost; a stale claim; a live call nobody reported.
    lost_close, stale, unreported = list(others)
    room = world.hms.create_room(f"call-{lost_close}")
    session = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    world.deliver_stream_outbox()
    world.stream.client_update(stale, {field: True, f"{prefix}callId": f"call-{stale}"})
    world.stream.outbox.clear()
    redis_client.flushall()
    world.hms.lose_next_webhooks(2)
    world.hms.close_session(session["id"])
    live = world.hms.open_session(world.hms.create_room(f"call-{unreported}")["id"], started_at=world.now)
    summary = run(world, full=True)
    assert summary["mode"] == "full"
    assert shown(world, CID, prefix) == (True, CALL)
    assert shown(world, lost_close, prefix)[0] is False
    assert shown(world, stale, prefix)[0] is False
    assert shown(world, unreported, prefix) == (True, f"call-{unreported}")
    assert live["active"] and end_rooms(world) == []
    queries = [body for method, path, body in world.stream.calls if path == "/channels" and body and "sort" in body]
    assert queries, "the full resync pages through QueryChannels by created_at"
    if not prefix:
        assert all(q["filter_conditions"].get("callActive") is True for q in queries)


def test_one_resync_at_a_time_and_a_run_goes_on_in_slices(world):
    for n in range(70):
        world.stream.create_channel(f"messaging:c{n}", data={})
        world.rt.state.bind(f"messaging:c{n}", f"call-messaging:c{n}", world.now)
    lock = world.rt.redis.lock("cs:lock:resync", timeout=5)
    assert lock.acquire()
    assert resyncs.resync(world.rt, slice_seconds=None) is None
    lock.release()
    assert resyncs.resync(world.rt, slice_seconds=0.0, pacer=resyncs.Pacer(world.rt, sleep=lambda _: None)) is None
    goes_on = [t for t in world.queue.take() if t[0] == actions.RESYNC]
    assert goes_on and goes_on[0][1] == (False, True)
    summary = None
    while summary is None:
        summary = resyncs.resync(world.rt, goes_on=True, slice_seconds=0.0, pacer=resyncs.Pacer(world.rt, sleep=lambda _: None))
    assert summary["channels_read"] >= 70
