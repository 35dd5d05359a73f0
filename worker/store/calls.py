"""The calls API's keys in Redis: who owns a call, its room, channel rosters, request counts.

The keys are worker/store/keys.py's. A join whose
answers are cached costs one round trip (`snapshot`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from worker.core.calls import MEMBERSHIP_TTL, Room, Roster
from worker.store.codec import text as _s
from worker.store.keys import (
    CALL_ROOM_ID,
    CALL_ROOM_NAME,
    CALL_TTL,
    ROOM_ID,
    ROOM_NAME,
    ROSTER_META,
    call_key,
    owner_key,
    rate_key,
    room_key,
    roster_fill_key,
    roster_key,
)

FILL_SECONDS = 3.0  # how long one request may take to ask Stream for a roster while others wait


@dataclass(frozen=True)
class Snapshot:
    """What one request reads in one round trip."""

    requests: int  # the user's requests in this rate window, this one included
    owner: str | None  # the first channel that bound the call (core.binding.owner_of)
    room: Room | None  # the call's room, if known
    roster: Roster | None  # what is cached of the channel asked about, for this user; None: nothing


def _roster(meta: Any, answer: Any, user_id: str) -> Roster | None:
    """A cached roster as far as `user_id` is concerned (the hash holds every listed member)."""
    kind = _s(meta)
    if kind is None:
        return None
    if kind == "missing":
        return Roster(exists=False)
    allowed = frozenset({user_id}) if answer == b"1" else frozenset()
    return Roster(True, allowed, complete=kind == "complete")


class CallsStore:
    def __init__(self, client: redis.Redis):
        self.redis = client

    def snapshot(self, user_id: str, window: int, period: float, call_id: str, cid: str | None) -> Snapshot:
        """Count the user's request and read the call's owner and room and, when `cid` is
        given, that channel's cached roster, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        counter = rate_key(window, user_id)
        pipe.incr(counter)
        pipe.expire(counter, int(period) + 1, nx=True)
        pipe.get(owner_key(call_id))
        pipe.hmget(room_key(call_id), ROOM_ID, ROOM_NAME)
        pipe.hmget(call_key(call_id), CALL_ROOM_ID, CALL_ROOM_NAME)  # a room callsync saw a session of
        if cid is not None:
            pipe.hmget(roster_key(cid), ROSTER_META, user_id)
        requests, _, owner, (room_id, name), (seen_id, seen_name), *roster = pipe.execute()
        room = None
        if _s(room_id):
            room = Room(_s(room_id) or "", _s(name) or call_id)
        elif _s(seen_id):
            room = Room(_s(seen_id) or "", _s(seen_name) or call_id)
        cached = _roster(roster[0][0], roster[0][1], user_id) if roster else None
        return Snapshot(int(requests), _s(owner), room, cached)

    def roster(self, cid: str, user_id: str) -> Roster | None:
        meta, answer = self.redis.hmget(roster_key(cid), ROSTER_META, user_id)
        return _roster(meta, answer, user_id)

    def save_roster(self, cid: str, roster: Roster) -> None:
        """Cache who Stream said may call in the channel for MEMBERSHIP_TTL, replacing what was."""
        kind = "missing" if not roster.exists else "complete" if roster.complete else "partial"
        # Only who may: a "no" is always asked afresh (worker.steps.calls), so it is not kept.
        fields: dict[Any, Any] = {ROSTER_META: kind, **dict.fromkeys(roster.allowed, "1")}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(roster_key(cid))
        pipe.hset(roster_key(cid), mapping=fields)
        pipe.expire(roster_key(cid), MEMBERSHIP_TTL)
        pipe.execute()

    def save_member(self, cid: str, user_id: str) -> None:
        """Add a user Stream said may call to a partial roster (it expires with the roster)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(roster_key(cid), user_id, "1")
        pipe.expire(roster_key(cid), MEMBERSHIP_TTL, nx=True)
        pipe.execute()

    def take_roster_fill(self, cid: str) -> bool:
        """True for the one request that asks Stream for the roster; the others wait for it."""
        return bool(self.redis.set(roster_fill_key(cid), "1", nx=True, px=int(FILL_SECONDS * 1000)))

    def await_roster(self, cid: str, user_id: str, seconds: float, every: float) -> Roster | None:
        """The roster once the request asking Stream for it is done (or after `seconds`)."""
        deadline = time.monotonic() + seconds
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.exists(roster_fill_key(cid))
            pipe.hmget(roster_key(cid), ROSTER_META, user_id)
            filling, (meta, answer) = pipe.execute()
            if not filling or time.monotonic() >= deadline:
                return _roster(meta, answer, user_id)
            time.sleep(every)

    def end_roster_fill(self, cid: str) -> None:
        self.redis.delete(roster_fill_key(cid))

    def save_room(self, call_id: str, room: Room) -> None:
        # A room's id never changes for its name (100ms rooms are disabled, not deleted).
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(room_key(call_id), mapping={ROOM_ID: room.id, ROOM_NAME: room.name})
        pipe.expire(room_key(call_id), CALL_TTL)
        pipe.execute()
