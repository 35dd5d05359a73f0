"""callsync's state in Redis: sessions, calls, bindings and what channels last showed.

Decide, then do: a read-modify-write reads the record, the pure core decides
(core.sessions, core.channels), and the write is a compare-and-set (lua/compare_and_set.lua)
that lands only if the record still holds what was read; else it reads and decides again.
Keys and fields: worker/store/keys.py; hash encodings: worker/store/codec.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

import redis

from worker.core import binding
from worker.core.actions import SessionChange
from worker.core.channels import ChannelChange, ChannelRecord, PendingMode, channel_change, stream_news
from worker.core.checks import conclude
from worker.core.events import CallFields, HmsEvent, StreamEvent
from worker.core.reconcile import BoundCall, Channel
from worker.core.sessions import Session, advance, is_newer, observe
from worker.store import scripts
from worker.store.cas import KEEP_TTL, compare_and_set, written
from worker.store.codec import (
    Raw,
    call_from_hash,
    call_to_hash,
    channel_from_hash,
    from_ms,
    hash_of,
    record_from_hash,
    record_to_hash,
    same_hash,
    text,
)
from worker.store.indexes import bound_index, session_moves
from worker.store.keys import (
    BOUND_CHANNELS,
    BUCKET_KEY_PREFIX,
    BUCKET_SECONDS,
    CALL_KEY_PREFIX,
    CALL_STARTED_MS,
    CALL_STATUS,
    CALL_TTL,
    CLOSED_TTL,
    ENDING_SESSIONS,
    MAX_BINDINGS,
    OPEN_BUCKETS,
    PENDING_FIELDS,
    bindings_key,
    bucket_key,
    call_key,
    channel_key,
    lock_key,
    owed_key,
    owner_key,
)
from worker.store.scripts import Script

_LOAD_CHANNEL = Script.named("load_channel")
_UNLOCK = Script.named("unlock")
_CLAIM_OVERDUE = Script.named("claim_overdue")
_OPEN_PAGE = Script.named("open_page")
_BIND_OWNED = Script.named("bind_owned")

T = TypeVar("T")
# What a read-modify-write decides from the hash as read: its answer, and the compare_and_set
# step that writes the change (None: nothing to write).
Decide = Callable[[Raw], tuple[T, scripts.ScriptCall | None]]


@dataclass(frozen=True)
class Loaded:
    """What a reconcile reads of a channel, as one snapshot."""

    channel: Channel
    calls: list[BoundCall]
    raw: Raw  # the channel's record as read: the compare of a write that follows
    record: ChannelRecord | None  # `raw` decoded (None: nothing recorded)


@dataclass(frozen=True)
class Bound:
    """What binding a call to a channel did: `owned` (the channel is the call's owner, and is
    bound), `new` (it was not bound before), `first` (this made it the owner of a free-form id)."""

    call_id: str
    owned: bool
    new: bool = False
    first: bool = False
    owner: str | None = None


def _texts(values: Iterable[Any]) -> list[str]:
    return [text(v) or "" for v in values]


class State:
    """Typed access to callsync's Redis keys; one instance per process."""

    def __init__(self, client: redis.Redis):
        self.redis = client

    def update_hash(self, key: str, decide: Decide[T], first: Raw | None = None) -> tuple[T, list[Any]]:
        """Read `key`'s hash, `decide(raw)` → (value, compare_and_set call or None), and retry
        until the write finds the hash as read; returns (value, the commands' replies). `first`:
        the hash as the caller last read it, to decide from before reading again."""
        while True:
            raw, first = (first, None) if first is not None else (self.redis.hgetall(key), None)
            value, call = decide(raw)
            if call is None:
                return value, []
            [result] = scripts.run(self.redis, [call])
            if isinstance(result, Exception):
                raise result
            if written(result):
                return value, list(result[1:])

    # --- calls and their sessions ------------------------------------------------------
    def call(self, call_id: str) -> BoundCall:
        return call_from_hash(call_id, self.redis.hgetall(call_key(call_id)))

    def record_hms_event_and_channels(self, event: HmsEvent, now: float) -> tuple[Session | None, set[str], str | None]:
        """Apply `event` (admitted by core.timebounds) to its room's call record at `now`; returns
        the session as observed, the channel of the room's call (read in the same step) when a
        reconcile is owed, and the mark to settle once it is done (`settle_owed`).

        Only a room's current session is kept (100ms runs one at a time): a late event of
        an older session changes nothing. Rooms without a call-id name bind no channel.
        """
        return self._record_session(event.room_name, event.session_id, lambda same: observe(same, event), now, event.id)

    def record_session(self, change: SessionChange) -> Session | None:
        """Record a session change callsync concluded itself (core.checks: a check or an end found
        the session over in 100ms, an adoption found one live) at the change's time; returns the
        session as concluded.

        The same step as `record_hms_event_and_channels`'s, so the record is what the 100ms webhook that
        said it would have left: an older session's change, or one already recorded, changes
        nothing.
        """
        session = change.session
        update = lambda same: conclude(same, change)  # noqa: E731
        return self._record_session(session.room_name, session.session_id, update, change.at, uuid.uuid4().hex)[0]

    def _record_session(
        self, room: str | None, session_id: str, update: Callable[[Session | None], Session], now: float, token: str
    ) -> tuple[Session | None, set[str], str | None]:
        """Write `update(recorded)` (the recorded session if it is `session_id`, else None) as the
        current session of the room's call (core.binding.call_of_room) if it is newer
        (core.sessions.is_newer) and not the record as it is, with the call's owed mark
        (keys.owed_key) set to `token`; keep its channel in the index of bound channels at `now`.
        Returns the session, the call's channel when a reconcile is owed (this change, or an
        earlier one whose mark is still there) and the mark's token."""
        if not room:
            return None, set(), None
        call_id = binding.call_of_room(room)
        key, named, owed = call_key(call_id), binding.cid_of_room(call_id), owed_key(call_id)

        def decide(raw: Raw) -> tuple[tuple[Session, bool], scripts.ScriptCall | None]:
            current = call_from_hash(call_id, raw).session
            same = current if current is not None and current.session_id == session_id else None
            new = update(same)
            record = call_to_hash(raw, new) if is_newer(new, current) else None
            if record is None or same_hash(raw, record):
                return (new, False), None  # an older session's news, or the record as it is: nothing to write
            ttl, commands = session_moves(call_id, current, new)
            commands.append(("SET", owed, token, "EX", CLOSED_TTL))  # with the change: owed until reconciled
            commands += bound_index(named, now) if named else []  # our clock: an event's own time may be anything
            commands.append(("GET", owner_key(call_id)))  # last: its reply is the last one
            return (new, True), compare_and_set(key, raw, record, ttl, commands)

        (session, changed), replies = self.update_hash(key, decide)
        if not changed:  # the bound index kept as a change keeps it; the open index already holds an open session
            pipe = self.redis.pipeline(transaction=False)
            if named:
                pipe.zadd(BOUND_CHANNELS, {named: now}, gt=True)
                pipe.zremrangebyscore(BOUND_CHANNELS, "-inf", now - CALL_TTL)
            pipe.get(owed)
            left = text(pipe.execute()[-1])
            if left is None:
                return session, set(), None
            owner, token = self.owner_of_call(call_id), left
        else:
            owner = binding.owner_of(call_id, text(replies[-1]))
        return session, {owner} if owner else set(), token

    def settle_owed(self, call_id: str, token: str) -> None:
        """The reconcile the call's owed mark asked for is done: drop the mark unless a later change set it again."""
        scripts.run(self.redis, [(_UNLOCK, [owed_key(call_id)], [token])])

    def begin_ending(self, call_id: str, session_id: str, at: float) -> Session | None:
        """Move the call's open session `session_id` to "ending" (callsync asks 100ms to end it).

        Returns the session only to the one caller that made the move, so concurrent
        sweeps or duplicate events end a room once.
        """
        key = call_key(call_id)

        def decide(raw: Raw) -> tuple[Session | None, scripts.ScriptCall | None]:
            old = call_from_hash(call_id, raw).session
            if old is None or old.session_id != session_id or not old.is_open:
                return None, None
            new = advance(old, "ending", at)
            ttl, moves = session_moves(key.removeprefix(CALL_KEY_PREFIX), old, new)
            return new, compare_and_set(key, raw, call_to_hash(raw, new), ttl, moves)

        return self.update_hash(key, decide)[0]

    def claim_overdue(self, started_before: float, limit: int, now: float) -> list[tuple[str, str]]:
        """Move up to `limit` open sessions started at or before `started_before` to "ending";
        returns the (call id, session id) pairs this caller moved (the script builds keys
        inside, so this needs a single Redis, not a cluster)."""
        args: list[str | float] = [started_before, limit, repr(now), CLOSED_TTL, CALL_KEY_PREFIX, BUCKET_KEY_PREFIX]
        flat = _texts(cast(list[bytes], _CLAIM_OVERDUE(self.redis, [OPEN_BUCKETS, ENDING_SESSIONS], args)))
        return list(zip(flat[::2], flat[1::2], strict=True))

    def open_page(self, after: tuple[int, str] | None, count: int) -> list[tuple[int, str]]:
        """Up to `count` open calls as (bucket, call id) after the cursor `after`, in start order:
        a keyset page for the re-check round (membership changes never make it skip)."""
        low, bucket, member = ("-inf", "", "") if after is None else (after[0] * BUCKET_SECONDS, str(after[0]), after[1])
        raw = _OPEN_PAGE(self.redis, [OPEN_BUCKETS], [low, BUCKET_KEY_PREFIX, bucket, member, count])
        flat = _texts(cast(list[bytes], raw))
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
            pipe.hget(call_key(text(member) or ""), CALL_STARTED_MS)
        starts = [t for t in map(from_ms, pipe.execute()) if t is not None]
        return sum(sizes), min(starts, default=None)

    def confirm_idle(self, call_id: str, at: float) -> None:
        """100ms said the call's room has no live session at `at`."""
        key = call_key(call_id)

        def decide(raw: Raw) -> tuple[None, scripts.ScriptCall]:
            is_open = raw.get(CALL_STATUS.encode()) == b"open"
            return None, compare_and_set(key, raw, call_to_hash(raw, idle_at=at), KEEP_TTL if is_open else CLOSED_TTL)

        self.update_hash(key, decide)

    # --- bindings ----------------------------------------------------------------
    def bind(self, cid: str, call_id: str, at: float) -> Bound:
        """Bind `call_id` to `cid` at `at` if `cid` owns it, recording `cid` as the owner of a
        free-form id nobody bound before (core.binding.may_bind, in one atomic step)."""
        keys = [owner_key(call_id), bindings_key(cid), BOUND_CHANNELS]
        named = binding.cid_of_room(call_id) or ""
        reply = _BIND_OWNED(self.redis, keys, [cid, call_id, repr(at), CALL_TTL, MAX_BINDINGS, named])
        if reply[0] != 1:
            return Bound(call_id, owned=False, owner=text(reply[1]))
        return Bound(call_id, owned=True, new=bool(reply[1]), first=bool(reply[2]), owner=cid)

    def take_ownership(self, call_id: str, owner: str, previous: str, at: float) -> bool:
        """Make `owner` the owner of the free-form `call_id` in place of `previous` (the platform
        said so), moving the binding over; False when `previous` is not its recorded owner."""
        if text(self.redis.get(owner_key(call_id))) != previous:
            return False
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(owner_key(call_id), owner, ex=CALL_TTL)
        pipe.zrem(bindings_key(previous), call_id)
        pipe.zadd(bindings_key(owner), {call_id: at})
        pipe.expire(bindings_key(owner), CALL_TTL)
        pipe.execute()
        return True

    def owner_of_call(self, call_id: str) -> str | None:
        """The channel `call_id` belongs to (core.binding.owner_of), if any."""
        return binding.cid_of_room(call_id) or text(self.redis.get(owner_key(call_id)))

    def calls_of_channel(self, cid: str) -> list[BoundCall]:
        """Every call bound to `cid` with its room's current session."""
        loaded = self.load(cid)
        assert loaded is not None  # without a lock to take the load always answers
        return loaded.calls

    # --- channels ------------------------------------------------------------
    def load(self, cid: str, lock: tuple[str, float] | None = None) -> Loaded | None:
        """The channel, its calls and their sessions in one round trip; with `lock` (token,
        seconds), take the channel's lock first: None when another holder has it."""
        token, ms = (lock[0], round(lock[1] * 1000)) if lock else ("", 0)
        keys = [lock_key(cid), bindings_key(cid), channel_key(cid)]
        raw = _LOAD_CHANNEL(self.redis, keys, [token, ms, CALL_KEY_PREFIX, binding.default_call_id(cid)])
        if raw is None:
            return None
        channel_raw, call_ids, *calls = raw
        record = hash_of(channel_raw)
        ids = _texts(call_ids)
        decoded = record_from_hash(cid, record)
        calls_ = [call_from_hash(i, hash_of(c)) for i, c in zip(ids, calls, strict=True)]
        return Loaded(channel_from_hash(cid, record), calls_, record, decoded)

    def unlock_call(self, cid: str, token: str) -> scripts.ScriptCall:
        """Release the channel's lock if `token` still holds it (to run with `scripts.run`)."""
        return (_UNLOCK, [lock_key(cid)], [token])

    def lock_left(self, cid: str) -> float | None:
        """Seconds until the channel's lock expires (None: nobody holds it)."""
        ms = int(self.redis.pttl(lock_key(cid)))
        return ms / 1000 if ms >= 0 else None

    def unlock(self, cid: str, token: str) -> None:
        scripts.run(self.redis, [self.unlock_call(cid, token)])

    def finish(self, cid: str, token: str, loaded: Loaded) -> None:
        """A reconcile that read `loaded` completed: clear the pending mark it saw (unless the
        record changed since) and release the lock, in one round trip."""
        steps = [self.unlock_call(cid, token)]
        if loaded.record is not None and loaded.record.pending:
            settled = {f: v for f, v in loaded.raw.items() if (text(f) or "") not in PENDING_FIELDS}
            steps.insert(0, compare_and_set(channel_key(cid), loaded.raw, settled, CALL_TTL))
        scripts.run(self.redis, steps)

    def record_write(
        self, cid: str, read: Raw, settled: ChannelRecord | None, token: str, also: Sequence[scripts.ScriptCall] = ()
    ) -> bool:
        """Record a write Stream answered, in one round trip: `settled` (its intent settled) as
        the channel's record if the record still holds `read`, the `also` steps (what the answer
        said of the endpoint's ceiling), then the channel's lock released if `token` holds it.
        False when the record changed since `read`: the write's bookkeeping is then
        `intents.settle_write`'s."""
        steps = [*also, self.unlock_call(cid, token)]
        if settled is not None:
            steps.insert(0, compare_and_set(channel_key(cid), read, record_to_hash(settled), CALL_TTL))
        results = scripts.run(self.redis, steps)
        if isinstance(results[-1], Exception):
            raise results[-1]  # the caller unlocks again
        return settled is None or written(results[0])

    def record_channel(
        self,
        cid: str,
        fields: CallFields | None,
        version: float,
        exists: bool = True,
        claimed_since: float | None = None,
        pending: PendingMode = "keep",
        by_member: bool = False,
        missing_for: str | None = None,
    ) -> ChannelChange:
        """Record what Stream showed for `cid` at `version` unless something newer is recorded
        (core.channels.channel_change decides).

        `claimed_since` dates a claim callsync wrote itself: the start of the session it is for.
        """
        key = channel_key(cid)

        def decide(raw: Raw) -> tuple[ChannelChange, scripts.ScriptCall]:
            record = record_from_hash(cid, raw)
            change, new = channel_change(cid, record, fields, version, exists, claimed_since, pending, by_member, missing_for)
            encoded = record_to_hash(new) if new is not None else None
            return change, compare_and_set(key, raw, encoded, CALL_TTL if new is not None else KEEP_TTL)

        return self.update_hash(key, decide)[0]

    def record_stream_event(self, event: StreamEvent, now: float) -> tuple[ChannelChange, Bound | None]:
        """Record what `event` shows of its channel (core.channels.stream_news decides what),
        binding the call it shows if the channel owns it; returns the change and the binding."""
        news = stream_news(event, now)
        if news is None:
            return ChannelChange(None, None, applied=False), None
        bound = self.bind(news.cid, news.binds, now) if news.binds else None
        owned = bound is None or bound.owned
        # A member's claim of another channel's call does not restart its claim (core.reconcile.claim_since).
        by_member = news.by_member and owned
        change = self.record_channel(news.cid, news.fields, news.version, news.exists, pending="mark", by_member=by_member)
        return (replace(change, new_binding=True) if bound is not None and bound.new else change), bound
