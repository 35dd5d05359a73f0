"""The calls API's keys in Redis: who owns a call, its room, channel rosters, request counts.

The keys are worker/store/keys.py's. A join whose
answers are cached costs one round trip (`snapshot`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis

from worker.core.access import StreamUser, shut_out
from worker.core.calls import MEMBERSHIP_TTL, REFUSAL_TTL, Room, Roster
from worker.store.codec import number
from worker.store.codec import text as _s
from worker.store.keys import (
    APP_REVOKED_BEFORE,
    CALL_ROOM_ID,
    CALL_ROOM_NAME,
    CALL_TTL,
    ROOM_ID,
    ROOM_NAME,
    ROSTER_META,
    call_key,
    member_queries_key,
    owner_key,
    rate_key,
    refusal_key,
    room_key,
    roster_fill_key,
    roster_key,
    unauthenticated_key,
)

FILL_SECONDS = 3.0  # how long one request may take to ask Stream for a roster while others wait


@dataclass(frozen=True)
class Snapshot:
    """What one request reads in one round trip."""

    requests: int  # the user's requests in this rate window, this one included
    owner: str | None  # the first channel that bound the call (core.binding.owner_of)
    room: Room | None  # the call's room, if known
    roster: Roster | None  # what is cached of the channel asked about, for this user; None: nothing
    refusal: str | None = None  # a "no" kept for this channel and user (core.calls.remembered)
    app_revoked: float | None = None  # the app's revoke time, when `app_known`
    app_known: bool = False  # whether the app's revoke time (GET /app) is cached
    unauthenticated: int = 0  # the client address's 401 answers in its window


def _member_value(user: StreamUser) -> str:
    """A member who may call, as the roster hash keeps them: "1", with their revoke time if any."""
    revoke = user.revoke_tokens_issued_before
    return "1" if revoke is None else f"1 {revoke!r}"


def _roster(meta: Any, answer: Any, user_id: str) -> Roster | None:
    """A cached roster as far as `user_id` is concerned (the hash holds every listed member)."""
    kind = _s(meta)
    if kind is None:
        return None
    if kind == "missing":
        return Roster(exists=False)
    flag, _, revoke = (_s(answer) or "").partition(" ")
    if flag != "1":
        return Roster(True, complete=kind == "complete")
    users = {user_id: StreamUser(revoke_tokens_issued_before=number(revoke))} if revoke else {}
    return Roster(True, frozenset({user_id}), complete=kind == "complete", users=users)


def _allowed_fields(roster: Roster, now: float) -> dict[str, str]:
    """The members to keep as allowed: not those Stream shut out (they are asked about again,
    and their "no" kept only REFUSAL_TTL)."""
    return {uid: _member_value(roster.user(uid)) for uid in roster.allowed if not shut_out(roster.user(uid), now)}


class CallsStore:
    def __init__(self, client: redis.Redis):
        self.redis = client

    def snapshot(
        self, user_id: str, window: int, period: float, call_id: str, cid: str | None, address: tuple[int, str] | None = None
    ) -> Snapshot:
        """Count the user's request and read the call's owner and room, the app's revoke time,
        the 401s answered to `address` (its window, the client address) and, when `cid` is
        given, that channel's cached roster and "no" for the user, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        counter = rate_key(window, user_id)
        pipe.incr(counter)
        pipe.expire(counter, int(period) + 1, nx=True)
        pipe.get(owner_key(call_id))
        pipe.hmget(room_key(call_id), ROOM_ID, ROOM_NAME)
        pipe.hmget(call_key(call_id), CALL_ROOM_ID, CALL_ROOM_NAME)  # a room callsync saw a session of
        pipe.get(APP_REVOKED_BEFORE)
        if cid is not None:
            pipe.hmget(roster_key(cid), ROSTER_META, user_id)
            pipe.get(refusal_key(cid, user_id))
        if address is not None:
            pipe.get(unauthenticated_key(*address))
        requests, _, owner, (room_id, name), (seen_id, seen_name), app, *rest = pipe.execute()
        cached, failures = (rest[:2], rest[2:]) if cid is not None else ([], rest)
        room = None
        if _s(room_id):
            room = Room(_s(room_id) or "", _s(name) or call_id)
        elif _s(seen_id):
            room = Room(_s(seen_id) or "", _s(seen_name) or call_id)
        roster = _roster(cached[0][0], cached[0][1], user_id) if cached else None
        return Snapshot(
            int(requests),
            _s(owner),
            room,
            roster,
            refusal=_s(cached[1]) if cached else None,
            app_revoked=number(app),
            app_known=app is not None,
            unauthenticated=int(failures[0] or 0) if failures else 0,
        )

    def cached_answer(self, cid: str, user_id: str) -> tuple[Roster | None, str | None]:
        """The channel's cached roster for the user, and a "no" kept for them there."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(roster_key(cid), ROSTER_META, user_id)
        pipe.get(refusal_key(cid, user_id))
        (meta, answer), refusal = pipe.execute()
        return _roster(meta, answer, user_id), _s(refusal)

    def roster(self, cid: str, user_id: str) -> Roster | None:
        meta, answer = self.redis.hmget(roster_key(cid), ROSTER_META, user_id)
        return _roster(meta, answer, user_id)

    def save_roster(self, cid: str, roster: Roster, now: float) -> None:
        """Cache who Stream said may call in the channel for MEMBERSHIP_TTL, replacing what was."""
        kind = "missing" if not roster.exists else "complete" if roster.complete else "partial"
        # Only who may: a "no" is kept apart, and only REFUSAL_TTL (`remember_refusal`).
        fields: dict[Any, Any] = {ROSTER_META: kind, **_allowed_fields(roster, now)}
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(roster_key(cid))
        pipe.hset(roster_key(cid), mapping=fields)
        pipe.expire(roster_key(cid), MEMBERSHIP_TTL)
        pipe.execute()

    def save_member(self, cid: str, user_id: str, user: StreamUser) -> None:
        """Add a user Stream said may call to a partial roster (it expires with the roster)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(roster_key(cid), user_id, _member_value(user))
        pipe.expire(roster_key(cid), MEMBERSHIP_TTL, nx=True)
        pipe.execute()

    def remember_refusal(self, cid: str, user_id: str, refusal: str) -> None:
        self.redis.set(refusal_key(cid, user_id), refusal, ex=REFUSAL_TTL)

    def forget_refusal(self, cid: str, user_id: str) -> None:
        """Drop a "no" kept for the user in the channel (Stream said they were added)."""
        self.redis.delete(refusal_key(cid, user_id))

    def save_app_revoked(self, revoked_before: float | None, ttl: int) -> None:
        self.redis.set(APP_REVOKED_BEFORE, "" if revoked_before is None else repr(revoked_before), ex=ttl)

    def count_member_query(self, cid: str, window: int, period: float) -> int:
        """Count a QueryMembers lookup for the channel in its window; returns the window's count."""
        return self._count(member_queries_key(window, cid), period)

    def count_unauthenticated(self, window: int, address: str, period: float) -> int:
        """Count a 401 answered to a client address in its window; returns the window's count."""
        return self._count(unauthenticated_key(window, address), period)

    def _count(self, key: str, period: float) -> int:
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, int(period) + 1, nx=True)
        count, _ = pipe.execute()
        return int(count)

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
