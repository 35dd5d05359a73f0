"""worker/store/calls.py on fakeredis and on a real Redis."""

from __future__ import annotations

import redis

from tests.support.state import record_hms_event
from worker.core.access import StreamUser
from worker.core.calls import MEMBERSHIP_TTL, Room, Roster
from worker.core.events import HmsEvent
from worker.store.calls import CallsStore, roster_key
from worker.store.state import State

CID, CALL = "messaging:general", "call-messaging:general"
NOW = 1_800_000_000.0


def test_a_snapshot_counts_the_request_and_reads_what_is_cached(redis_client: redis.Redis) -> None:
    store = CallsStore(redis_client)
    empty = store.snapshot("alice", 7, 60.0, CALL, CID)
    assert (empty.requests, empty.owner, empty.room, empty.roster) == (1, None, None, None)
    assert 0 < redis_client.ttl("cs:callrate:7:alice") <= 61
    store.save_roster(CID, Roster(True, frozenset({"alice"}), frozenset({"eve"}), complete=True), NOW)
    store.save_room(CALL, Room("room-1", CALL))
    assert State(redis_client).bind(CID, "standup", 1.0).first
    assert store.snapshot("alice", 7, 60.0, "standup", CID).owner == CID
    assert store.snapshot("alice", 7, 60.0, "Standup", CID).owner is None  # call ids are exact
    snap = store.snapshot("alice", 7, 60.0, CALL, CID)
    assert (snap.requests, snap.owner, snap.room) == (4, None, Room("room-1", CALL))  # a reference id: no record
    assert snap.roster == Roster(True, frozenset({"alice"}), complete=True)
    assert store.snapshot("eve", 7, 60.0, CALL, CID).roster == Roster(True, complete=True)  # a "no" is not kept
    assert store.snapshot("alice", 8, 60.0, CALL, None).requests == 1  # a new window, no roster asked


def test_a_room_callsync_saw_a_session_of_counts_as_known(redis_client: redis.Redis) -> None:
    record_hms_event(
        State(redis_client),
        HmsEvent("e1", "session.open.success", "room-9", "call-messaging:team--cs1e000", "s1", 1.0, 1.0, False),
        1.0,
    )
    known = CallsStore(redis_client).snapshot("alice", 1, 60.0, "call-messaging:TEAM", None).room
    assert known == Room("room-9", "call-messaging:team--cs1e000")  # the derived room of that exact id
    assert CallsStore(redis_client).snapshot("alice", 1, 60.0, "call-messaging:team", None).room is None


def test_rosters_expire_and_partial_ones_take_single_answers(redis_client: redis.Redis) -> None:
    store = CallsStore(redis_client)
    store.save_roster(CID, Roster(True, frozenset({"alice"}), complete=False), NOW)
    assert 0 < redis_client.ttl(roster_key(CID)) <= MEMBERSHIP_TTL
    assert store.roster(CID, "zoe") == Roster(True, complete=False)
    store.save_member(CID, "zoe", StreamUser())
    assert store.roster(CID, "zoe") == Roster(True, frozenset({"zoe"}), complete=False)
    store.save_roster(CID, Roster(exists=False), NOW)
    assert store.roster(CID, "alice") == Roster(exists=False)


def test_one_request_fills_a_roster_and_the_others_wait_for_it(redis_client: redis.Redis) -> None:
    store = CallsStore(redis_client)
    assert store.take_roster_fill(CID) and not store.take_roster_fill(CID)
    assert store.await_roster(CID, "alice", 0.05, 0.01) is None  # still filling: gave up waiting
    store.save_roster(CID, Roster(True, frozenset({"alice"})), NOW)
    store.end_roster_fill(CID)
    assert store.await_roster(CID, "alice", 1.0, 0.01) == Roster(True, frozenset({"alice"}))
    assert store.take_roster_fill(CID)
