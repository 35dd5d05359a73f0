"""callsync's state in Redis: sessions, calls, bindings and what channels last showed.

The keys, hash encodings and index scripts are worker/store/records.py's.
Read-modify-write goes through WATCH/MULTI so the transitions stay in the pure core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar, cast

import redis

from worker.core.events import CallFields, HmsEvent, StreamEvent, cid_of_room
from worker.core.reconcile import Call, Channel
from worker.core.sessions import Session, advance, is_newer, observe
from worker.core.timebounds import stream_event_time
from worker.store import scripts
from worker.store.records import (
    BOUND_CHANNELS,
    BUCKET_SECONDS,
    CALL_TTL,
    CLAIM_OVERDUE,
    CLOSED_TTL,
    MAX_BINDINGS,
    OPEN_BUCKETS,
    OPEN_PAGE,
    PENDING_FIELDS,
    Loaded,
    Observed,
    Pending,
    Raw,
    _cids,
    _from_ms,
    _hash,
    _s,
    bindings_key,
    bucket_key,
    bucket_of,
    call_channels_key,
    call_from_hash,
    call_key,
    channel_change,
    channel_from_hash,
    channel_key,
    lock_key,
    session_to_hash,
)
from worker.store.scripts import Script

# What a reconcile reads, in one round trip: the channel's record, the calls bound to it
# (with the reference client's `call-<cid>` added) and each call's record; first taking the
# channel's lock when a token is given (false: someone else holds it). Call ids are ASCII
# (events.CALL_ID_RE), so Lua's string.lower keys them as call_key does.
# KEYS: lock, bindings, channel. ARGV: token or '', lock ms, call key prefix, default call id.
_LOAD_CHANNEL = Script("""
if ARGV[1] ~= '' and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
   and redis.call('GET', KEYS[1]) ~= ARGV[1] then  -- held by our token: a client's resend of this call
  return false
end
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local default, listed = string.lower(ARGV[4]), false
for _, id in ipairs(ids) do
  if string.lower(id) == default then listed = true end
end
if not listed then ids[#ids + 1] = ARGV[4] end
local out = {redis.call('HGETALL', KEYS[3]), ids}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGETALL', ARGV[3] .. string.lower(id))
end
return out
""")

_UNLOCK = Script("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# Replace a hash only if it still holds exactly what was read (compare-and-set, the
# WATCH/MULTI of one round trip, to be pipelined with other scripts). 1: replaced, 0: it
# changed meanwhile. ARGV: n, the n field/value pairs read, TTL, the new field/value pairs.
_REPLACE_IF_SAME = Script("""
local n = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[1]) ~= n then return 0 end
for i = 2, 2 * n, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2 * n + 3))
redis.call('EXPIRE', KEYS[1], ARGV[2 * n + 2])
return 1
""")

T = TypeVar("T")


def transact(client: redis.Redis, apply: Callable[[redis.client.Pipeline], T], *keys: str) -> T:
    """Run `apply` under WATCH on `keys`, retrying when they change; return what it returns."""
    return transact_results(client, apply, *keys)[0]


def transact_results(client: redis.Redis, apply: Callable[[redis.client.Pipeline], T], *keys: str) -> tuple[T, list[Any]]:
    """`transact`, also returning the results of the commands `apply` queued after MULTI."""
    value: list[T] = []

    def run(pipe: redis.client.Pipeline) -> None:
        value[:] = [apply(pipe)]

    results = client.transaction(run, *keys)  # type: ignore[arg-type]
    return value[0], list(results or [])


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

    def record_hms_event(self, event: HmsEvent, now: float) -> Session | None:
        """Apply `event` (admitted by core.timebounds) to its room's call record at `now`; returns
        the session as observed.

        Only a room's current session is kept (100ms runs one at a time): a late event of
        an older session changes nothing. Rooms without a call-id name bind no channel.
        """
        return self.record_hms_event_and_bound(event, now)[0]

    def record_hms_event_and_bound(self, event: HmsEvent, now: float) -> tuple[Session | None, set[str]]:
        """`record_hms_event`, also returning the channels bound to the room (read in the same step)."""
        if not event.room_name:
            return None, set()
        key = call_key(event.room_name)

        def apply(pipe: redis.client.Pipeline) -> Session:
            current = call_from_hash(event.room_name or "", pipe.hgetall(key)).session
            same = current if current is not None and current.session_id == event.session_id else None
            new = observe(same, event)
            pipe.multi()
            if is_newer(new, current):
                self._store(pipe, key, current, new)
            room_cid = cid_of_room(event.room_name)
            if room_cid:
                _index_bound(pipe, room_cid, now)  # our clock: an event's own time may be anything
            pipe.smembers(call_channels_key(event.room_name or ""))  # last: its result is the last one
            return new

        session, results = transact_results(self.redis, apply, key)
        return session, _cids(event.room_name, results[-1])

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
        script = self.redis.register_script(CLAIM_OVERDUE)
        args: list[str | float] = [started_before, limit, repr(now), CLOSED_TTL, call_key(""), bucket_key(0)[:-1]]
        flat = [_s(m) or "" for m in cast(list[bytes], script(keys=[OPEN_BUCKETS], args=args))]
        return list(zip(flat[::2], flat[1::2], strict=True))

    def open_page(self, after: tuple[int, str] | None, count: int) -> list[tuple[int, str]]:
        """Up to `count` open calls as (bucket, call id) after the cursor `after`, in start order:
        a keyset page for the re-check round (membership changes never make it skip)."""
        low, bucket, member = ("-inf", "", "") if after is None else (after[0] * BUCKET_SECONDS, str(after[0]), after[1])
        script = self.redis.register_script(OPEN_PAGE)
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
        self._bind(pipe, cid, call_id, at)
        pipe.execute()

    @staticmethod
    def _bind(pipe: redis.client.Pipeline, cid: str, call_id: str, at: float) -> None:
        pipe.zadd(bindings_key(cid), {call_id: at})
        pipe.zremrangebyrank(bindings_key(cid), 0, -MAX_BINDINGS - 1)
        pipe.expire(bindings_key(cid), CALL_TTL)
        pipe.sadd(call_channels_key(call_id), cid)
        pipe.expire(call_channels_key(call_id), CALL_TTL)
        _index_bound(pipe, cid, at)

    def channels_of_call(self, call_id: str) -> set[str]:
        """Channels bound to `call_id`, including the reference client's `call-<cid>` form."""
        return _cids(call_id, self.redis.smembers(call_channels_key(call_id)))

    def calls_of_channel(self, cid: str) -> list[Call]:
        """Every call bound to `cid` with its room's current session."""
        loaded = self.load(cid)
        assert loaded is not None  # without a lock to take the load always answers
        return loaded.calls

    # --- channels ------------------------------------------------------------
    def channel(self, cid: str) -> Channel:
        raw = self.redis.hgetall(channel_key(cid))
        return channel_from_hash(cid, raw)

    def load(self, cid: str, lock: tuple[str, float] | None = None) -> Loaded | None:
        """The channel, its calls and their sessions in one round trip; with `lock` (token,
        seconds), take the channel's lock first: None when another holder has it."""
        token, ms = (lock[0], round(lock[1] * 1000)) if lock else ("", 0)
        keys = [lock_key(cid), bindings_key(cid), channel_key(cid)]
        raw = _LOAD_CHANNEL(self.redis, keys, [token, ms, call_key(""), f"call-{cid}"])
        if raw is None:
            return None
        channel_raw, call_ids, *calls = raw
        record = _hash(channel_raw)
        ids = [_s(c) or "" for c in call_ids]
        return Loaded(
            channel_from_hash(cid, record), [call_from_hash(i, _hash(c)) for i, c in zip(ids, calls, strict=True)], record
        )

    def unlock_call(self, cid: str, token: str) -> scripts.Call:
        """Release the channel's lock if `token` still holds it (to run with `scripts.run`)."""
        return (_UNLOCK, [lock_key(cid)], [token])

    def unlock(self, cid: str, token: str) -> None:
        scripts.run(self.redis, [self.unlock_call(cid, token)])

    def finish(self, cid: str, token: str, loaded: Loaded) -> None:
        """A reconcile that read `loaded` completed: clear the pending mark it saw (unless the
        record changed since) and release the lock, in one round trip."""
        steps = [self.unlock_call(cid, token)]
        if loaded.raw.get(b"p"):
            settled = {field_: value for field_, value in loaded.raw.items() if field_ not in PENDING_FIELDS}
            steps.insert(0, self.replace_call(cid, loaded.raw, settled))
        scripts.run(self.redis, steps)

    def replace_call(self, cid: str, read: Raw, record: Mapping[Any, Any]) -> scripts.Call:
        """Write `record` as the channel's record if it still holds `read` (1), else nothing (0)."""
        args: list[Any] = [len(read)]
        for field_, value in read.items():
            args += [field_, value]
        args.append(CALL_TTL)
        for field_, value in record.items():
            args += [field_, value]
        return (_REPLACE_IF_SAME, [channel_key(cid)], args)

    def record_channel(
        self,
        cid: str,
        fields: CallFields | None,
        version: float,
        exists: bool = True,
        claimed_since: float | None = None,
        pending: Pending = "keep",
        bind: tuple[str, float] | None = None,
        by_member: bool = False,
        missing_for: str | None = None,
    ) -> Observed:
        """Record what Stream showed for `cid` at `version` unless something newer is recorded.

        `claimed_since` dates a claim callsync wrote itself: the start of the session it is for.
        `bind` (call id, time) binds that call to the channel in the same step.
        """
        key = channel_key(cid)

        def apply(pipe: redis.client.Pipeline) -> Observed:
            raw = pipe.hgetall(key)
            observed, new = channel_change(cid, raw, fields, version, exists, claimed_since, pending, by_member, missing_for)
            pipe.multi()
            if bind is not None:
                self._bind(pipe, cid, *bind)  # first: ZADD's count of new members is result 0
            if new is not None:
                pipe.delete(key)
                pipe.hset(key, mapping=new)
                pipe.expire(key, CALL_TTL)
            return observed

        observed, results = transact_results(self.redis, apply, key)
        return replace(observed, new_binding=bool(results and results[0])) if bind is not None else observed

    def observe_stream_event(self, event: StreamEvent, now: float) -> Observed:
        assert event.cid is not None
        exists = event.type != "channel.deleted"
        if exists and event.fields is None:
            return Observed(None, None, applied=False)
        bind = (event.fields.call_id, now) if event.fields is not None and event.fields.call_id else None
        version = stream_event_time(event.created_at, now)
        return self.record_channel(
            event.cid, event.fields, version, exists, bind=bind, pending="mark", by_member=not event.from_server
        )


def _index_bound(pipe: redis.client.Pipeline, cid: str, at: float) -> None:
    """Keep the index of bound channels at `at` (callsync's clock, never an event's); bindings
    unseen for CALL_TTL are forgotten, as their keys are."""
    pipe.zadd(BOUND_CHANNELS, {cid: at}, gt=True)
    pipe.zremrangebyscore(BOUND_CHANNELS, "-inf", at - CALL_TTL)
