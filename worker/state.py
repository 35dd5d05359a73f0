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

CLOSED_TTL = 2 * 86400  # a call record outlives its session's end this long: a late open still finds it closed
CALL_TTL = 14 * 86400  # bindings and channel records unseen this long are forgotten
DEDUPE_TTL = 86400  # Stream retries within 15 s, 100ms within ~15 s: a day is ample
MAX_BINDINGS = 8  # call ids remembered per channel

# The open-session index, cheap enough for a million sessions: each open call sits in a
# set of the calls whose session started in the same BUCKET_SECONDS (`cs:ob:<bucket>`),
# and the buckets sit in a sorted set by start (`cs:open`). A set member costs about half
# a sorted-set entry, and the sweep still reads only buckets that can hold due sessions.
OPEN_BUCKETS = "cs:open"
BUCKET_SECONDS = 10
BOUND_CHANNELS = "cs:bound"  # zset: cid → last time a binding was seen (for `callsync status`)

# The sweep's claim, a page at a time in one atomic step: every open session that started
# at or before the cutoff moves to "ending" (the same forward-only move as sessions.advance,
# which only ever takes "open" to "ending") and leaves the index; emptied buckets go too.
# Returns {call id, session id} pairs this caller moved, so concurrent sweeps never both
# end a room. ARGV: cutoff, limit, now, closed TTL, call key prefix, bucket key prefix.
_CLAIM_OVERDUE = """
local cutoff, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local moved = {}
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  local bkey = ARGV[6] .. bucket
  for _, member in ipairs(redis.call('SMEMBERS', bkey)) do
    if #moved >= 2 * limit then return moved end
    local key = ARGV[5] .. member
    local st, t0, sid, name = unpack(redis.call('HMGET', key, 'st', 't0', 's', 'n'))
    if st ~= 'open' or not t0 then
      redis.call('SREM', bkey, member)
    elseif tonumber(t0) <= cutoff * 1000 then
      redis.call('HSET', key, 'st', 'ending', 't1', ARGV[3])
      redis.call('EXPIRE', key, tonumber(ARGV[4]))
      redis.call('SREM', bkey, member)
      moved[#moved + 1] = name or member
      moved[#moved + 1] = sid
    end
  end
  if redis.call('EXISTS', bkey) == 0 then redis.call('ZREM', KEYS[1], bucket) end
end
return moved
"""

# A page of the re-check round, in the server so a crowded bucket is not shipped whole:
# buckets from the cursor's on, members sorted, after the cursor's member in its bucket.
# ARGV: the cursor bucket's start (or -inf), bucket key prefix, cursor bucket, cursor member, count.
_OPEN_PAGE = """
local count, page = tonumber(ARGV[5]), {}
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local members = redis.call('SMEMBERS', ARGV[2] .. bucket)
  table.sort(members)
  for _, member in ipairs(members) do
    if bucket ~= ARGV[3] or member > ARGV[4] then
      page[#page + 1] = bucket
      page[#page + 1] = member
      if #page >= 2 * count then return page end
    end
  end
end
return page
"""

T = TypeVar("T")
Raw = Mapping[Any, Any]  # a hash as redis-py returns it (bytes keys and values)


def transact(client: redis.Redis, apply: Callable[[redis.client.Pipeline], T], *keys: str) -> T:
    """Run `apply` under WATCH on `keys`, retrying when they change; return what it returns."""
    return cast(T, client.transaction(apply, *keys, value_from_callable=True))  # type: ignore[arg-type]


def call_key(call_id: str) -> str:
    # Room names are case-insensitive in 100ms, so a call is keyed by its lower case.
    return f"cs:c:{call_id.lower()}"


def bucket_of(started_at: float | None) -> int:
    return int((started_at or 0.0) // BUCKET_SECONDS)


def bucket_key(bucket: int) -> str:
    return f"cs:ob:{bucket}"


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


def _from_ms(value: bytes | str | None) -> float | None:
    # Start times are kept in whole milliseconds: Redis packs an integer in a few bytes.
    ms = _f(value)
    return ms / 1000 if ms is not None else None


def _s(value: bytes | str | None) -> str | None:
    if value in (None, b"", ""):
        return None
    return value.decode() if isinstance(value, bytes) else value


def call_from_hash(call_id: str, raw: Raw) -> Call:
    """A call record: its room's current session (if any) and when 100ms last said it was idle."""
    session_id = _s(raw.get(b"s"))
    session = None
    if session_id:
        session = Session(
            session_id=session_id,
            room_id=_s(raw.get(b"r")) or "",
            room_name=_s(raw.get(b"n")) or call_id.lower(),
            status=_s(raw.get(b"st")) or "open",  # type: ignore[arg-type]
            started_at=_from_ms(raw.get(b"t0")),
            ended_at=_f(raw.get(b"t1")),
        )
    return Call(call_id=call_id, session=session, idle_confirmed_at=_f(raw.get(b"idle")))


def session_to_hash(session: Session) -> dict[Any, Any]:
    raw = {"r": session.room_id, "s": session.session_id, "st": session.status, "t0": round((session.started_at or 0.0) * 1000)}
    if session.room_name and session.room_name != session.room_name.lower():
        raw["n"] = session.room_name  # the key is lower case; keep 100ms's spelling (it names a channel)
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

    # --- calls and their sessions ------------------------------------------------------
    def call(self, call_id: str) -> Call:
        return call_from_hash(call_id, self.redis.hgetall(call_key(call_id)))

    def _store(self, pipe: redis.client.Pipeline, key: str, before: Session | None, after: Session) -> None:
        """Write `after` as the call's current session (in MULTI) and keep the open index exact."""
        member = key.removeprefix(call_key(""))
        if (
            before is not None
            and before.is_open
            and not (after.is_open and bucket_of(after.started_at) == bucket_of(before.started_at))
        ):
            pipe.srem(bucket_key(bucket_of(before.started_at)), member)
        pipe.hdel(key, "n", "t1")
        pipe.hset(key, mapping=session_to_hash(after))
        if after.is_open:
            bucket = bucket_of(after.started_at)
            pipe.sadd(bucket_key(bucket), member)
            pipe.zadd(OPEN_BUCKETS, {str(bucket): bucket * BUCKET_SECONDS})
            pipe.persist(key)  # an open session never expires: the sweep ends it
        else:
            pipe.expire(key, CLOSED_TTL)

    def record_hms_event(self, event: HmsEvent) -> Session | None:
        """Apply `event` to its room's call record; returns the session as observed.

        Only a room's current session is kept (100ms runs one at a time): a late event of
        an older session changes nothing. Rooms without a call-id name bind no channel.
        """
        if not event.room_name:
            return None
        key = call_key(event.room_name)

        def apply(pipe: redis.client.Pipeline) -> Session:
            current = call_from_hash(event.room_name or "", pipe.hgetall(key)).session
            same = current if current is not None and current.session_id == event.session_id else None
            new = observe(same, event)
            pipe.multi()
            if is_newer(new, current):
                self._store(pipe, key, current, new)
            room_cid = cid_of_room(event.room_name)
            seen_at = event.at or event.started_at
            if room_cid and seen_at is not None:
                _index_bound(pipe, room_cid, seen_at)
            return new

        return transact(self.redis, apply, key)

    def begin_ending(self, call_id: str, session_id: str, at: float) -> Session | None:
        """Move the call's open session `session_id` to "ending" (callsync asks 100ms to end it).

        Returns the session only to the one caller that made the move, so concurrent
        sweeps or duplicate events end a room once.
        """
        key = call_key(call_id)

        def apply(pipe: redis.client.Pipeline) -> Session | None:
            old = call_from_hash(call_id, pipe.hgetall(key)).session
            if old is None or old.session_id != session_id or not old.is_open:
                return None
            new = advance(old, "ending", at)
            pipe.multi()
            self._store(pipe, key, old, new)
            return new

        return transact(self.redis, apply, key)

    def claim_overdue(self, started_before: float, limit: int, now: float) -> list[tuple[str, str]]:
        """Move up to `limit` open sessions started at or before `started_before` to "ending";
        returns the (call id, session id) pairs this caller moved (Lua script note: keys are
        built inside, so this needs a single Redis, not a cluster)."""
        script = self.redis.register_script(_CLAIM_OVERDUE)
        args: list[str | float] = [started_before, limit, repr(now), CLOSED_TTL, call_key(""), bucket_key(0)[:-1]]
        flat = [_s(m) or "" for m in cast(list[bytes], script(keys=[OPEN_BUCKETS], args=args))]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def open_page(self, after: tuple[int, str] | None, count: int) -> list[tuple[int, str]]:
        """Up to `count` open calls as (bucket, call id) after the cursor `after`, in start order:
        a keyset page for the re-check round (membership changes never make it skip)."""
        low, bucket, member = ("-inf", "", "") if after is None else (after[0] * BUCKET_SECONDS, str(after[0]), after[1])
        script = self.redis.register_script(_OPEN_PAGE)
        raw = script(keys=[OPEN_BUCKETS], args=[low, bucket_key(0)[:-1], bucket, member, count])
        flat = [_s(m) or "" for m in cast(list[bytes], raw)]
        return [(int(b), m) for b, m in zip(flat[::2], flat[1::2], strict=True)]

    def open_summary(self) -> tuple[int, float | None]:
        """How many sessions are open, and when the oldest started."""
        buckets = [int(cast(bytes, b)) for b in self.redis.zrange(OPEN_BUCKETS, 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for bucket in buckets:
            pipe.scard(bucket_key(bucket))
        sizes = pipe.execute()
        oldest = next((b for b, size in zip(buckets, sizes, strict=True) if size), None)
        if oldest is None:
            return 0, None
        for member in self.redis.smembers(bucket_key(oldest)):
            pipe.hget(call_key(_s(member) or ""), "t0")
        starts = [t for t in map(_from_ms, pipe.execute()) if t is not None]
        return sum(sizes), min(starts, default=None)

    def confirm_idle(self, call_id: str, at: float) -> None:
        """100ms said the call's room has no live session at `at`."""
        key = call_key(call_id)

        def apply(pipe: redis.client.Pipeline) -> None:
            is_open = pipe.hget(key, "st") == b"open"
            pipe.multi()
            pipe.hset(key, "idle", repr(at))
            if not is_open:
                pipe.expire(key, CLOSED_TTL)

        transact(self.redis, apply, key)

    # --- bindings ----------------------------------------------------------------
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
            pipe.hgetall(call_key(call_id))
        return [call_from_hash(call_id, raw) for call_id, raw in zip(call_ids, pipe.execute(), strict=True)]

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
