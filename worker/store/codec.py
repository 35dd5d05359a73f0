"""Records ↔ Redis hashes: the one codec of the store (field names: worker/store/keys.py).

Fields are terse because a million records are kept. The schema:

| record (key)             | field | holds                                                        |
|--------------------------|-------|--------------------------------------------------------------|
| call (`cs:c:<call id>`)  | r     | 100ms room id                                                |
|                          | s     | the room's current session id (absent: no session seen)      |
|                          | st    | open / ending / closed                                       |
|                          | t0    | the session's start, whole milliseconds                      |
|                          | t1    | when it ended (or callsync asked it to), seconds             |
|                          | n     | the room's name, when it is not the call id                  |
|                          | idle  | when 100ms last said the room has no live session            |
| channel (`cs:ch:<cid>`)  | a, id | callActive ("1"/"0") and callId as last shown                |
|                          | x     | "0": Stream said the channel is deleted or missing           |
|                          | v     | the time of that news (the record's version)                 |
|                          | cl    | when the current `callActive: true` claim began              |
|                          | mf    | the live session a read that found no channel was made for   |
|                          | p     | "1": a change no completed reconcile has read (pending mark) |
|                          | pa,pi | callActive/callId before that change                         |
|                          | w     | the write in flight (its intent): "1 <callId>" or "0"        |
|                          | wt    | its date, then its claim's date if any: "<at> <claim since>" |

Floats are written with repr, so they read back exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.core.binding import call_of_room
from worker.core.channels import ChannelRecord, WriteIntent
from worker.core.events import CallFields
from worker.core.reconcile import BoundCall, Channel
from worker.core.sessions import Session
from worker.store import keys as k

Raw = Mapping[Any, Any]  # a hash as redis-py returns it (bytes keys and values)


def _b(field: str) -> bytes:
    return field.encode()


def number(value: bytes | str | None) -> float | None:
    return float(value) if value not in (None, b"", "") else None


def from_ms(value: bytes | str | None) -> float | None:
    ms = number(value)
    return ms / 1000 if ms is not None else None


def text(value: bytes | str | None) -> str | None:
    if value in (None, b"", ""):
        return None
    return value.decode() if isinstance(value, bytes) else value


def hash_of(flat: list[Any]) -> dict[Any, Any]:
    """A hash from Lua's HGETALL reply (a flat list of field, value)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def call_from_hash(call_id: str, raw: Raw) -> BoundCall:
    """A call record: its room's current session (if any) and when 100ms last said it was idle."""
    session_id = text(raw.get(_b(k.CALL_SESSION_ID)))
    session = None
    if session_id:
        session = Session(
            session_id=session_id,
            room_id=text(raw.get(_b(k.CALL_ROOM_ID))) or "",
            room_name=text(raw.get(_b(k.CALL_ROOM_NAME))) or call_id,
            status=text(raw.get(_b(k.CALL_STATUS))) or "open",  # type: ignore[arg-type]
            started_at=from_ms(raw.get(_b(k.CALL_STARTED_MS))),
            ended_at=number(raw.get(_b(k.CALL_ENDED_AT))),
        )
    return BoundCall(call_id=call_id, session=session, idle_confirmed_at=number(raw.get(_b(k.CALL_IDLE_AT))))


def session_to_hash(session: Session) -> dict[str, Any]:
    raw: dict[str, Any] = {
        k.CALL_ROOM_ID: session.room_id,
        k.CALL_SESSION_ID: session.session_id,
        k.CALL_STATUS: session.status,
        k.CALL_STARTED_MS: round((session.started_at or 0.0) * 1000),
    }
    if session.room_name and session.room_name != call_of_room(session.room_name):
        raw[k.CALL_ROOM_NAME] = session.room_name  # a derived name: the key is the call id it encodes
    if session.ended_at is not None:
        raw[k.CALL_ENDED_AT] = repr(session.ended_at)
    return raw


def call_to_hash(raw: Raw, session: Session | None = None, idle_at: float | None = None) -> dict[str, Any]:
    """The call record `raw` with its session replaced by `session` and/or its idle time set."""
    out = {text(f) or "": v for f, v in raw.items()}
    if session is not None:
        out.pop(k.CALL_ROOM_NAME, None)
        out.pop(k.CALL_ENDED_AT, None)
        out |= session_to_hash(session)
    if idle_at is not None:
        out[k.CALL_IDLE_AT] = repr(idle_at)
    return out


def same_hash(raw: Raw, record: Mapping[str, Any]) -> bool:
    """Whether writing `record` (as `call_to_hash` makes it) over the hash `raw` leaves it as it is."""
    encoded = {f: v if isinstance(v, bytes) else str(v).encode() for f, v in record.items()}
    return {text(f) or "": v for f, v in raw.items()} == encoded


def channel_from_hash(cid: str, raw: Raw) -> Channel:
    if not raw:
        return Channel(cid, None)
    fields = CallFields(active=raw.get(_b(k.CHANNEL_ACTIVE)) == b"1", call_id=text(raw.get(_b(k.CHANNEL_CALL_ID))))
    return Channel(
        cid,
        fields,
        exists=raw.get(_b(k.CHANNEL_EXISTS), b"1") == b"1",
        claim_since=number(raw.get(_b(k.CHANNEL_CLAIM_SINCE))),
        missing_for=text(raw.get(_b(k.CHANNEL_MISSING_FOR))),
    )


def intent_from_hash(raw: Raw) -> WriteIntent | None:
    """The write in flight recorded in a channel's hash (None: none)."""
    written, dates = text(raw.get(_b(k.CHANNEL_INTENT))), text(raw.get(_b(k.CHANNEL_INTENT_AT)))
    if written is None or dates is None:
        return None
    active, _, call_id = written.partition(" ")
    at, _, since = dates.partition(" ")
    return WriteIntent(CallFields(active == "1", call_id or None), float(at), number(since))


def intent_to_hash(intent: WriteIntent) -> dict[str, str]:
    fields = intent.fields
    written = ("1" if fields.active else "0") + (f" {fields.call_id}" if fields.call_id else "")
    dates = repr(intent.at) if intent.claim_since is None else f"{intent.at!r} {intent.claim_since!r}"
    return {k.CHANNEL_INTENT: written, k.CHANNEL_INTENT_AT: dates}


def record_from_hash(cid: str, raw: Raw) -> ChannelRecord | None:
    """The channel's record (None: nothing recorded)."""
    if not raw:
        return None
    pending = bool(raw.get(_b(k.CHANNEL_PENDING)))
    active = raw.get(_b(k.CHANNEL_BEFORE_ACTIVE))
    before = CallFields(active == b"1", text(raw.get(_b(k.CHANNEL_BEFORE_CALL_ID)))) if active is not None else None
    version = number(raw.get(_b(k.CHANNEL_VERSION))) or 0.0
    return ChannelRecord(channel_from_hash(cid, raw), version, pending, before, intent_from_hash(raw))


def record_to_hash(record: ChannelRecord) -> dict[str, Any]:
    channel = record.channel
    fields = channel.fields or CallFields(False, None)
    raw = {
        k.CHANNEL_ACTIVE: "1" if fields.active else "0",
        k.CHANNEL_EXISTS: "1" if channel.exists else "0",
        k.CHANNEL_VERSION: repr(record.version),
    }
    if record.pending:
        raw[k.CHANNEL_PENDING] = "1"
    if fields.call_id:
        raw[k.CHANNEL_CALL_ID] = fields.call_id
    if channel.claim_since is not None:
        raw[k.CHANNEL_CLAIM_SINCE] = repr(channel.claim_since)
    if channel.missing_for:
        raw[k.CHANNEL_MISSING_FOR] = channel.missing_for
    if record.pending and record.before is not None:
        raw[k.CHANNEL_BEFORE_ACTIVE] = "1" if record.before.active else "0"
        if record.before.call_id:
            raw[k.CHANNEL_BEFORE_CALL_ID] = record.before.call_id
    if record.intent is not None:
        raw |= intent_to_hash(record.intent)
    return raw
