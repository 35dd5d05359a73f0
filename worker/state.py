"""callsync's state in Redis: sessions, calls, bindings and what channels last showed.

Every key starts with `cs:<kind>:` and kinds contain no colon, so a key built from
input (a cid, a call id, a session id) can never land in another kind's namespace.
Read-modify-write goes through WATCH/MULTI so the transitions stay in the pure core.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, cast

import redis

from . import scripts
from .core.events import CallFields, HmsEvent, StreamEvent, cid_of_room
from .core.reconcile import Call, Channel, claim_since
from .core.sessions import Session, advance, is_newer, observe
from .core.timebounds import REPLAY_WINDOW_SECONDS, stream_event_time
from .scripts import Script

# A call record outlives its session's end by 100ms's replay window (and a day): a replayed or late
# open, even 30 days on, still finds its session closed (core/timebounds.py refuses older ones).
CLOSED_TTL = REPLAY_WINDOW_SECONDS + 86400
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
Raw = Mapping[Any, Any]  # a hash as redis-py returns it (bytes keys and values)


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


def lock_key(cid: str) -> str:
    return f"cs:lock:{cid}"


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
    new_binding: bool = False  # the event bound a call to the channel that was not bound before
    pending: bool = False  # the record holds a change no completed reconcile has seen yet
    before: CallFields | None = None  # the fields before that change (or before this event)

    @property
    def changed(self) -> bool:
        """Whether the event changed anything a reconcile of the channel reads."""
        return self.new_binding or (self.applied and self.current != self.previous)

    @property
    def needs_reconcile(self) -> bool:
        """False only for an event that changed nothing (an echo of callsync's own write, a
        duplicate, an older event) while no earlier change waits for its reconcile."""
        return self.changed or self.pending


@dataclass(frozen=True)
class Loaded:
    """What a reconcile reads of a channel, as one snapshot."""

    channel: Channel
    calls: list[Call]
    raw: Raw  # the channel's record as read: the compare of a write that follows


# A channel record carries a pending mark ("p") from the Stream event that changed it until a
# reconcile that read the change completes. An event that changes nothing skips its reconcile
# unless the mark is there: so a task re-run after its reconcile failed (a 429, a busy lock, a
# killed worker) still reconciles, although its event now changes nothing.
Pending = Literal["mark", "keep", "clear", "force"]
PENDING_FIELDS = (b"p", b"pa", b"pi")  # the mark, and the call fields before its change


def channel_change(
    cid: str,
    raw: Raw,
    fields: CallFields | None,
    version: float,
    exists: bool = True,
    claimed_since: float | None = None,
    pending: Pending = "keep",
    by_member: bool = False,
    missing_for: str | None = None,
) -> tuple[Observed, dict[Any, Any] | None]:
    """Recording what Stream showed for `cid` at `version` over the record `raw`: the outcome,
    and the record to write (None when something newer is recorded). `pending`: "mark" for an
    event (marked if it changed the record), "keep" the mark as it is, "clear" it (a reconcile
    that read `raw` writes the record), "force" it (what a reconcile read is out of date).
    `by_member`: the news is a member's event (not a server-side request). `missing_for`: the
    live session a read that found no channel was made for."""
    previous = channel_from_hash(cid, raw) if raw else None
    was_pending = bool(raw.get(b"p"))
    # What the channel showed before its pending change: what a re-run judges "End call" by.
    before = _pending_before(raw) if was_pending else (previous.fields if previous else None)
    if previous is not None and version < (_f(raw.get(b"v")) or 0.0):
        if pending == "force" and not was_pending:
            return Observed(previous, previous, applied=False, pending=True), {**raw, b"p": b"1"}
        return Observed(previous, previous, applied=False, pending=was_pending, before=before), None
    shown = fields if exists and fields is not None else CallFields(False, None)
    since = claimed_since if claimed_since is not None and shown.active else claim_since(previous, shown, version, by_member)
    current = Channel(cid, shown, exists, since, None if exists else missing_for)
    marked = pending == "force" or (pending != "clear" and (was_pending or (pending == "mark" and current != previous)))
    record = channel_to_hash(current, version, marked)
    if marked and before is not None:
        record |= {"pa": "1" if before.active else "0", **({"pi": before.call_id} if before.call_id else {})}
    return Observed(previous, current, applied=True, pending=marked, before=before), record


def _pending_before(raw: Raw) -> CallFields | None:
    """The fields a pending record showed before its change (None: it had none)."""
    active = raw.get(b"pa")
    return CallFields(active == b"1", _s(raw.get(b"pi"))) if active is not None else None


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


def _cids(call_id: str, members: Any) -> set[str]:
    """The channels of a call: its bound members and the reference client's `call-<cid>` form."""
    cids = {_s(m) or "" for m in members or ()}
    room_cid = cid_of_room(call_id)
    if room_cid:
        cids.add(room_cid)
    return {cid for cid in cids if cid}


def _hash(flat: list[Any]) -> dict[Any, Any]:
    """A hash from Lua's HGETALL reply (a flat list of field, value)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _index_bound(pipe: redis.client.Pipeline, cid: str, at: float) -> None:
    """Keep the index of bound channels at `at` (callsync's clock, never an event's); bindings
    unseen for CALL_TTL are forgotten, as their keys are."""
    pipe.zadd(BOUND_CHANNELS, {cid: at}, gt=True)
    pipe.zremrangebyscore(BOUND_CHANNELS, "-inf", at - CALL_TTL)


def channel_from_hash(cid: str, raw: Raw) -> Channel:
    if not raw:
        return Channel(cid, None)
    fields = CallFields(active=raw.get(b"a") == b"1", call_id=_s(raw.get(b"id")))
    return Channel(
        cid, fields, exists=raw.get(b"x", b"1") == b"1", claim_since=_f(raw.get(b"cl")), missing_for=_s(raw.get(b"mf"))
    )


def channel_to_hash(channel: Channel, version: float, pending: bool = False) -> dict[Any, Any]:
    fields = channel.fields or CallFields(False, None)
    raw = {"a": "1" if fields.active else "0", "x": "1" if channel.exists else "0", "v": repr(version)}
    if pending:
        raw["p"] = "1"
    if fields.call_id:
        raw["id"] = fields.call_id
    if channel.claim_since is not None:
        raw["cl"] = repr(channel.claim_since)
    if channel.missing_for:
        raw["mf"] = channel.missing_for
    return raw
