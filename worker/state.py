"""callsync's state in Redis: sessions, calls, bindings and what channels last showed.

Every key starts with `cs:<kind>:` and kinds contain no colon, so a key built from
input (a cid, a call id, a session id) can never land in another kind's namespace.
Read-modify-write goes through WATCH/MULTI so the transitions stay in the pure core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis

from .core.events import CallFields, HmsEvent, StreamEvent, cid_of_room
from .core.reconcile import Call, Channel, claim_since
from .core.sessions import Session, advance, is_newer, observe

CLOSED_TTL = 2 * 86400  # a late open may still arrive for a closed session: keep the tombstone
CALL_TTL = 14 * 86400  # a call (room) and channel record unseen this long is forgotten
DEDUPE_TTL = 86400  # Stream retries within 15 s, 100ms within ~15 s: a day is ample
MAX_BINDINGS = 8  # call ids remembered per channel

OPEN_SESSIONS = "cs:open"  # zset: session id → started_at (the sweep's index)
BOUND_CHANNELS = "cs:bound"  # zset: cid → last time a binding was seen (for `callsync status`)

# The sweep's claim, a page at a time in one atomic step: every open session that started
# at or before the cutoff moves to "ending" (the same forward-only move as sessions.advance,
# which only ever takes "open" to "ending") and leaves the open index. Returns the ids moved,
# so concurrent sweeps never both end a room.
_CLAIM_OVERDUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = {}
for _, id in ipairs(ids) do
  local key = ARGV[5] .. id
  if redis.call('HGET', key, 'st') == 'open' then
    redis.call('HSET', key, 'st', 'ending', 't1', ARGV[3])
    redis.call('EXPIRE', key, tonumber(ARGV[4]))
    moved[#moved + 1] = id
  end
  redis.call('ZREM', KEYS[1], id)
end
return moved
"""

T = TypeVar("T")
Raw = Mapping[Any, Any]  # a hash as redis-py returns it (bytes keys and values)


def transact(client: redis.Redis, apply: Callable[[redis.client.Pipeline], T], *keys: str) -> T:
    """Run `apply` under WATCH on `keys`, retrying when they change; return what it returns."""
    return cast(T, client.transaction(apply, *keys, value_from_callable=True))  # type: ignore[arg-type]


def session_key(session_id: str) -> str:
    return f"cs:s:{session_id}"


def call_key(call_id: str) -> str:
    # Room names are case-insensitive in 100ms, so a call is keyed by its lower case.
    return f"cs:c:{call_id.lower()}"


def call_channels_key(call_id: str) -> str:
    return f"cs:cc:{call_id.lower()}"


def channel_key(cid: str) -> str:
    return f"cs:ch:{cid}"


def bindings_key(cid: str) -> str:
    return f"cs:cb:{cid}"


def dedupe_key(source: str, delivery_id: str) -> str:
    return f"cs:dd:{source}:{delivery_id}"


def _f(value: bytes | str | None) -> float | None:
    return float(value) if value not in (None, b"", "") else None


def _s(value: bytes | str | None) -> str | None:
    if value in (None, b"", ""):
        return None
    return value.decode() if isinstance(value, bytes) else value


def session_from_hash(raw: Raw, session_id: str) -> Session | None:
    if not raw:
        return None
    return Session(
        session_id=session_id,
        room_id=_s(raw.get(b"r")) or "",
        room_name=_s(raw.get(b"n")),
        status=_s(raw.get(b"st")) or "open",  # type: ignore[arg-type]
        started_at=_f(raw.get(b"t0")),
        ended_at=_f(raw.get(b"t1")),
    )


def session_to_hash(session: Session) -> dict[Any, Any]:
    raw = {"r": session.room_id, "st": session.status}
    if session.room_name:
        raw["n"] = session.room_name
    if session.started_at is not None:
        raw["t0"] = repr(session.started_at)
    if session.ended_at is not None:
        raw["t1"] = repr(session.ended_at)
    return raw


@dataclass(frozen=True)
class Observed:
    """The outcome of recording a Stream event for a channel."""

    previous: Channel | None
    current: Channel | None
    applied: bool  # False when the event was older than what is recorded


class State:
    """Typed access to callsync's Redis keys; one instance per process."""

    def __init__(self, client: redis.Redis):
        self.redis = client

    # --- sessions ---------------------------------------------------------------
    def session(self, session_id: str) -> Session | None:
        return session_from_hash(self.redis.hgetall(session_key(session_id)), session_id)

    def _store_session(self, pipe: redis.client.Pipeline, session: Session) -> None:
        key = session_key(session.session_id)
        pipe.hset(key, mapping=session_to_hash(session))
        if session.is_open:
            pipe.zadd(OPEN_SESSIONS, {session.session_id: session.started_at or 0.0})
            pipe.persist(key)
        else:
            pipe.zrem(OPEN_SESSIONS, session.session_id)
            pipe.expire(key, CLOSED_TTL)

    def record_hms_event(self, event: HmsEvent) -> Session:
        """Apply `event` to its session and its room's current-session pointer."""
        skey = session_key(event.session_id)

        def apply(pipe: redis.client.Pipeline) -> Session:
            old = session_from_hash(pipe.hgetall(skey), event.session_id)
            new = observe(old, event)
            name = new.room_name
            current = self._current_session(pipe, name) if name else None
            pipe.multi()
            self._store_session(pipe, new)
            if name:
                ckey = call_key(name)
                if is_newer(new, current):
                    pipe.hset(ckey, mapping={"r": new.room_id, "s": new.session_id})
                pipe.expire(ckey, CALL_TTL)
                room_cid = cid_of_room(name)
                seen_at = event.at or event.started_at
                if room_cid and seen_at is not None:
                    _index_bound(pipe, room_cid, seen_at)
            return new

        watched = [skey] + ([call_key(event.room_name)] if event.room_name else [])
        return transact(self.redis, apply, *watched)

    def _current_session(self, client: redis.Redis | redis.client.Pipeline, call_id: str) -> Session | None:
        sid = _s(client.hget(call_key(call_id), "s"))
        return self.session(sid) if sid else None

    def begin_ending(self, session_id: str, at: float) -> Session | None:
        """Move an open session to "ending" (callsync asks 100ms to end it).

        Returns the session only to the one caller that made the move, so concurrent
        sweeps or duplicate events end a room once.
        """
        skey = session_key(session_id)

        def apply(pipe: redis.client.Pipeline) -> Session | None:
            old = session_from_hash(pipe.hgetall(skey), session_id)
            if old is None or not old.is_open:
                return None
            new = advance(old, "ending", at)
            pipe.multi()
            self._store_session(pipe, new)
            return new

        return transact(self.redis, apply, skey)

    def claim_overdue(self, started_before: float, limit: int, now: float) -> list[str]:
        """Move up to `limit` open sessions started at or before `started_before` to "ending";
        returns the ids this caller moved (Lua script note: keys are built inside, so this
        needs a single Redis, not a cluster)."""
        script = self.redis.register_script(_CLAIM_OVERDUE)
        raw = script(keys=[OPEN_SESSIONS], args=[started_before, limit, repr(now), CLOSED_TTL, session_key("")])
        return [_s(m) or "" for m in cast(list[bytes], raw)]

    def open_session_page(self, start: int, count: int) -> list[str]:
        """Open sessions by rank in start order: a cursor's page for the re-check round."""
        return [_s(cast(bytes, m)) or "" for m in self.redis.zrange(OPEN_SESSIONS, start, start + count - 1)]

    def open_sessions(self, started_before: float, limit: int) -> list[str]:
        """Open sessions that started at or before `started_before`, oldest first."""
        members = self.redis.zrangebyscore(OPEN_SESSIONS, "-inf", started_before, start=0, num=limit)
        return [_s(cast(bytes, m)) or "" for m in members]

    # --- calls and bindings ----------------------------------------------------------
    def bind(self, cid: str, call_id: str, at: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(bindings_key(cid), {call_id: at})
        pipe.zremrangebyrank(bindings_key(cid), 0, -MAX_BINDINGS - 1)
        pipe.expire(bindings_key(cid), CALL_TTL)
        pipe.sadd(call_channels_key(call_id), cid)
        pipe.expire(call_channels_key(call_id), CALL_TTL)
        _index_bound(pipe, cid, at)
        pipe.execute()

    def channels_of_call(self, call_id: str) -> set[str]:
        """Channels bound to `call_id`, including the reference client's `call-<cid>` form."""
        cids = {_s(m) or "" for m in self.redis.smembers(call_channels_key(call_id))}
        room_cid = cid_of_room(call_id)
        if room_cid:
            cids.add(room_cid)
        return {cid for cid in cids if cid}

    def calls_of_channel(self, cid: str) -> list[Call]:
        """Every call bound to `cid` with its room's current session."""
        call_ids = [_s(cast(bytes, m)) or "" for m in self.redis.zrange(bindings_key(cid), 0, -1)]
        default = f"call-{cid}"
        if default.lower() not in {c.lower() for c in call_ids}:
            call_ids.append(default)
        pipe = self.redis.pipeline(transaction=False)
        for call_id in call_ids:
            pipe.hmget(call_key(call_id), "s", "idle")
        pointers = pipe.execute()
        calls = []
        for call_id, (sid, idle) in zip(call_ids, pointers, strict=True):
            session = self.session(_s(sid) or "") if sid else None
            calls.append(Call(call_id=call_id, session=session, idle_confirmed_at=_f(idle)))
        return calls

    def call_room(self, call_id: str) -> str | None:
        return _s(self.redis.hget(call_key(call_id), "r"))

    def confirm_idle(self, call_id: str, at: float) -> None:
        """100ms said the call's room has no live session at `at`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(call_key(call_id), "idle", repr(at))
        pipe.expire(call_key(call_id), CALL_TTL)
        pipe.execute()

    # --- channels ------------------------------------------------------------
    def channel(self, cid: str) -> Channel:
        raw = self.redis.hgetall(channel_key(cid))
        return channel_from_hash(cid, raw)

    def record_channel(
        self, cid: str, fields: CallFields | None, version: float, exists: bool = True, claimed_since: float | None = None
    ) -> Observed:
        """Record what Stream showed for `cid` at `version` unless something newer is recorded.

        `claimed_since` dates a claim callsync wrote itself: the start of the session it is for.
        """
        key = channel_key(cid)

        def apply(pipe: redis.client.Pipeline) -> Observed:
            raw = pipe.hgetall(key)
            previous = channel_from_hash(cid, raw) if raw else None
            if previous is not None and version < (_f(raw.get(b"v")) or 0.0):
                return Observed(previous, previous, applied=False)
            shown = fields if exists and fields is not None else CallFields(False, None)
            since = claimed_since if claimed_since is not None and shown.active else claim_since(previous, shown, version)
            current = Channel(cid, shown, exists, since)
            pipe.multi()
            pipe.delete(key)
            pipe.hset(key, mapping=channel_to_hash(current, version))
            pipe.expire(key, CALL_TTL)
            return Observed(previous, current, applied=True)

        return transact(self.redis, apply, key)

    def observe_stream_event(self, event: StreamEvent, now: float) -> Observed:
        assert event.cid is not None
        if event.fields is not None and event.fields.call_id:
            self.bind(event.cid, event.fields.call_id, now)
        exists = event.type != "channel.deleted"
        if exists and event.fields is None:
            return Observed(None, None, applied=False)
        return self.record_channel(event.cid, event.fields, event.version or now, exists)


def _index_bound(pipe: redis.client.Pipeline, cid: str, at: float) -> None:
    """Keep the index of bound channels; bindings unseen for CALL_TTL are forgotten, as their keys are."""
    pipe.zadd(BOUND_CHANNELS, {cid: at}, gt=True)
    pipe.zremrangebyscore(BOUND_CHANNELS, "-inf", at - CALL_TTL)


def channel_from_hash(cid: str, raw: Raw) -> Channel:
    if not raw:
        return Channel(cid, None)
    fields = CallFields(active=raw.get(b"a") == b"1", call_id=_s(raw.get(b"id")))
    return Channel(cid, fields, exists=raw.get(b"x", b"1") == b"1", claim_since=_f(raw.get(b"cl")))


def channel_to_hash(channel: Channel, version: float) -> dict[Any, Any]:
    fields = channel.fields or CallFields(False, None)
    raw = {"a": "1" if fields.active else "0", "x": "1" if channel.exists else "0", "v": repr(version)}
    if fields.call_id:
        raw["id"] = fields.call_id
    if channel.claim_since is not None:
        raw["cl"] = repr(channel.claim_since)
    return raw
