"""How callsync's records look in Redis: their keys, their hash encodings, the open-session
index's scripts, and the pure change of a channel's record when Stream shows something new
(worker/store/state.py reads and writes them).

Every key starts with `cs:<kind>:` and kinds contain no colon, so a key built from input (a cid,
a call id, a session id) can never land in another kind's namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from worker.core.events import CallFields, cid_of_room
from worker.core.reconcile import Call, Channel, claim_since
from worker.core.sessions import Session
from worker.core.timebounds import REPLAY_WINDOW_SECONDS

Raw = Mapping[Any, Any]  # a hash as redis-py returns it (bytes keys and values)

# A call record outlives its session's end by 100ms's replay window (and a day): a replayed or late
# open, even 30 days on, still finds its session closed (core/timebounds.py refuses older ones).
CLOSED_TTL = REPLAY_WINDOW_SECONDS + 86400
CALL_TTL = 14 * 86400  # bindings and channel records unseen this long are forgotten
# Stream retries within 15 s, 100ms within ~15 s: a day is ample, and longer than the hour in which
# the receiver takes a Stream event at all (core/timebounds.py), so a body replayed is a duplicate.
DEDUPE_TTL = 86400
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
CLAIM_OVERDUE = """
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
OPEN_PAGE = """
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
