"""Replays and forged times end no live call and pin nothing (issue 12, items 1 and 2): event
times are bounded (worker/core/timebounds.py) and a room is ended only once 100ms confirms the
session meant is its live one."""

from __future__ import annotations

import json
from typing import Any

import pytest

from standins.base import rfc3339
from tests.support.world import CALL, CID, World, open_call
from worker.core.actions import Recheck
from worker.core.events import CallFields, HmsEvent, StreamEvent, parse_hms_event
from worker.core.reconcile import BoundCall, Channel, plan_channel
from worker.core.timebounds import FUTURE_SKEW_SECONDS, REPLAY_WINDOW_SECONDS
from worker.steps import sessions
from worker.store.keys import BOUND_CHANNELS, CLOSED_TTL, OPEN_BUCKETS, call_key, channel_key

DAY = 86400.0
YEAR_9999 = "9999-12-31T23:59:59.999999999Z"


def envelope(kind: str, room: dict[str, Any], session_id: str, timestamp: str, **data: Any) -> HmsEvent:
    body = {
        "version": "2.0",
        "id": f"{kind}:{session_id}:{timestamp}",
        "timestamp": timestamp,
        "type": kind,
        "data": {"room_id": room["id"], "room_name": room["name"], "session_id": session_id, **data},
    }
    event = parse_hms_event(body)
    assert event is not None
    return event


def no_score_beyond(world: World, key: str) -> None:
    scores = [score for _, score in world.rt.redis.zrange(key, 0, -1, withscores=True)]
    assert all(score <= world.now + FUTURE_SKEW_SECONDS for score in scores), scores


def test_a_peer_join_dated_year_9999_pins_nothing(world):
    world.stream.create_channel(CID)
    room, session = open_call(world)
    world.deliver_stream_outbox()
    for forged in (
        envelope("peer.join.success", room, "forged", YEAR_9999, joined_at=YEAR_9999, session_started_at=YEAR_9999),
        envelope("peer.join.success", room, "forged", rfc3339(world.now), joined_at=YEAR_9999),
        envelope("peer.join.success", room, session["id"], rfc3339(world.now), session_started_at=YEAR_9999),
    ):
        world.deliver_hms(forged)
    recorded = world.rt.state.call(CALL).session
    assert recorded.session_id == session["id"] and recorded.started_at == pytest.approx(world.now, abs=0.001)
    no_score_beyond(world, BOUND_CHANNELS)
    no_score_beyond(world, OPEN_BUCKETS)
    assert all(world.rt.redis.pttl(key) <= 120_000 for key in world.rt.redis.keys("cs:later:*"))
    world.hms.close_session(session["id"])  # the real session's close is acted on
    [(_, closed)] = world.hms.outbox[-1:]
    world.deliver_hms(parse_hms_event(json.loads(closed)))
    assert world.fields() == {"callActive": False}


def test_a_forged_future_join_does_not_keep_the_real_sessions_open_from_counting(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    world.deliver_hms(envelope("peer.join.success", room, "forged", YEAR_9999, session_started_at=YEAR_9999))
    assert world.rt.redis.exists(call_key(CALL)) == 0 and world.patches() == []
    real = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", real, room))
    assert world.fields() == {"callActive": True, "callId": CALL}


def test_a_three_day_old_replayed_open_does_not_end_the_live_room(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    live = world.hms.open_session(room["id"], started_at=world.now - 600)  # its webhooks lost; callsync has no record
    world.hms.outbox.clear()
    three_days_ago = world.now - 3 * DAY
    sent = rfc3339(three_days_ago, micro=False)
    replayed = envelope("session.open.success", room, "old-session", sent, session_started_at=rfc3339(three_days_ago))
    world.deliver_hms(replayed)  # 100ms's replay API re-sends it (is_replay), after the record's time
    world.sweep()  # the replayed session is far past the limit: the sweep means to end it
    assert not [p for m, p, _ in world.hms.calls if p.endswith("/end-room")]
    assert world.hms.sessions[live["id"]]["active"]
    recorded = world.rt.state.call(CALL).session
    assert recorded.session_id == live["id"] and recorded.is_open  # the live session, adopted
    assert world.fields() == {"callActive": True, "callId": CALL}


def test_a_replayed_open_of_a_session_closed_days_ago_finds_it_closed(world):
    world.stream.create_channel(CID)
    room, session = open_call(world)
    world.hms.close_session(session["id"])
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    assert world.rt.redis.ttl(call_key(CALL)) > REPLAY_WINDOW_SECONDS  # outlives the replay window
    assert CLOSED_TTL > REPLAY_WINDOW_SECONDS
    world.now += 3 * DAY
    world.deliver_hms(world.hms_event("session.open.success", session, room))  # replayed
    assert world.rt.state.call(CALL).session.status == "closed" and world.fields() == {"callActive": False}


def test_a_claim_dated_in_the_future_is_checked_within_one_grace():
    claim = Channel(CID, CallFields(True, CALL), True, claim_since=2_000_000_000.0 + 10**9)
    plan = plan_channel(claim, [BoundCall(CALL, None)], 2_000_000_000.0, 60.0)
    assert plan == Recheck(CALL, 2_000_000_000.0 + 60.0)


def test_a_stream_event_from_the_future_is_dated_now_and_later_news_still_counts(world):
    future = StreamEvent("channel.updated", CID, CallFields(True, "call-x"), world.now + 10 * DAY, False, "alice")
    world.rt.state.record_stream_event(future, world.now)
    assert float(world.rt.redis.hget(channel_key(CID), "v")) == world.now
    later = StreamEvent("channel.updated", CID, CallFields(False, None), world.now + 1, False, "alice")
    assert world.rt.state.record_stream_event(later, world.now + 1)[0].applied


def test_the_sweep_drops_a_bound_channel_scored_in_the_future(world):
    world.rt.redis.zadd(BOUND_CHANNELS, {"messaging:pinned": 253402300799.0, CID: world.now})  # left by an older version
    world.sweep()
    assert world.rt.redis.zrange(BOUND_CHANNELS, 0, -1) == [CID.encode()]


def test_end_session_ends_the_room_once_100ms_confirms_it_is_the_live_one(world):
    world.stream.create_channel(CID)
    room, session = open_call(world)
    sessions.end_session(world.rt, CALL, session["id"], "maximum session length reached")
    calls = [(m, p) for m, p, _ in world.hms.calls]
    assert calls[-2:] == [("GET", f"/active-rooms/{room['id']}"), ("POST", f"/active-rooms/{room['id']}/end-room")]
