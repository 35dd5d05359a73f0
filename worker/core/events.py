"""Parse webhook payloads of Stream Chat and 100ms into small typed events.

Parsing is lenient about what the platforms may omit and strict about what they always
send; anything else raises InvalidEvent with a message fit for the HTTP 400 body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.core.binding import cid_of_room as cid_of_room  # the binding rule, re-exported for parsers' users
from worker.core.binding import is_reserved
from worker.core.peers import Peer

# A 100ms room name's characters (100ms-docs Rooms/create-via-api.mdx), which call ids share.
CALL_ID_RE = re.compile(r"[A-Za-z0-9.\-:_]{1,256}")
# Lone surrogates (JSON escapes like "\ud800") are not text: no Redis key or URL can carry them.
CID_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}:[^\s\ud800-\udfff]{1,255}")

STREAM_TYPES = frozenset({"channel.created", "channel.updated", "channel.deleted"})
# Events of a session that runs (a leave is of a peer, not of the session): each records it open.
HMS_SESSION_ALIVE = frozenset({"session.open.success", "peer.join.success", "peer.leave.success"})
HMS_PEER_TYPES = frozenset({"peer.join.success", "peer.leave.success"})
HMS_CLOSING = frozenset({"session.close.success", "room.end.success"})
HMS_TYPES = HMS_SESSION_ALIVE | HMS_CLOSING


class InvalidEvent(ValueError):
    """The body is not an event the source could have sent (HTTP 400)."""


def parse_time(value: object) -> float | None:
    """ISO-8601 → unix seconds; None for absent, unparsable or the zero time.

    100ms sends up to nine fractional digits, which `fromisoformat` rejects before
    Python 3.11's relaxed parser only for some forms: trim to microseconds first. A
    failed join carries `0001-01-01T00:00:00Z`, which means "no time".
    """
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    match = re.match(r"^(.*?\.\d{1,6})\d*(.*)$", text)
    if match:
        text = match.group(1) + match.group(2)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.year < 1971:
        return None
    return moment.timestamp()


def valid_room_name(value: object) -> str | None:
    """The room name if `value` can be one, else None."""
    if isinstance(value, str) and CALL_ID_RE.fullmatch(value):
        return value
    return None


def valid_call_id(value: object) -> str | None:
    """The call id if `value` is one (docs/behaviour.md, terms): a room name that is not of the
    form callsync reserves for the rooms of ids that differ only in case (core.binding)."""
    name = valid_room_name(value)
    return name if name is not None and not is_reserved(name) else None


@dataclass(frozen=True)
class CallFields:
    """A channel's call fields as stored in Stream."""

    active: bool
    call_id: str | None


@dataclass(frozen=True)
class StreamEvent:
    type: str
    cid: str | None
    fields: CallFields | None  # None when the event carries no channel object
    # The event's own top-level `created_at` (Stream's clock): what orders and dates Stream
    # events. Never `channel.updated_at`: live partial updates leave it as it was (an event
    # recorded from the live API in GetStream/stream-chat-test-mock-server,
    # src/jsons/ws_events_channel.json, and the example in GetStream/stream-chat-python,
    # docs/webhooks/webhook_events.md, both show it equal to the channel's `created_at`).
    created_at: float | None
    from_server: bool  # request_info.type == "server"
    user_id: str | None

    def to_json(self) -> dict[str, Any]:
        fields = self.fields
        return {
            "type": self.type,
            "cid": self.cid,
            "fields": {"active": fields.active, "call_id": fields.call_id} if fields else None,
            "created_at": self.created_at,
            "from_server": self.from_server,
            "user_id": self.user_id,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> StreamEvent:
        fields = raw.get("fields")
        # A task queued before `created_at` replaced `version` (updated_at: no clock) runs undated.
        return cls(
            type=raw["type"],
            cid=raw["cid"],
            fields=CallFields(**fields) if fields else None,
            created_at=raw.get("created_at"),
            from_server=raw["from_server"],
            user_id=raw.get("user_id"),
        )


@dataclass(frozen=True)
class HmsEvent:
    id: str
    type: str
    room_id: str
    room_name: str | None
    session_id: str
    started_at: float | None
    at: float | None  # when it happened: stopped_at, left_at, joined_at or envelope time
    is_replay: bool
    # Peer events only (a task queued before these existed runs without them):
    peer_id: str | None = None
    user_id: str | None = None  # the id in the peer's app token: the Stream user id for the calls API's tokens
    joined_at: float | None = None

    @property
    def closes(self) -> bool:
        return self.type in HMS_CLOSING

    def peer(self) -> Peer | None:
        """The peer a peer.join/peer.leave reports (its leave dated by `at`), else None."""
        if self.peer_id is None or self.type not in HMS_PEER_TYPES:
            return None
        left_at = self.at if self.type == "peer.leave.success" else None
        return Peer(self.peer_id, self.user_id, self.joined_at, left_at)

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> HmsEvent:
        return cls(**raw)


def _text(value: object, limit: int = 256) -> str | None:
    """`value` if it is a non-empty string of at most `limit` characters that is valid Unicode.

    JSON may escape lone surrogates ("\\ud800"), which decode to a str that cannot be encoded:
    as a Redis key or a URL it would fail far from here, so such a value counts as absent.
    """
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return None
    return value


def _str(obj: dict[str, Any], key: str, limit: int = 256) -> str | None:
    return _text(obj.get(key), limit)


def read_fields(channel: dict[str, Any], prefix: tuple[str, ...]) -> CallFields:
    """The call fields inside `channel` under `prefix` (e.g. ("data",))."""
    node: object = channel
    for part in prefix:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return CallFields(active=False, call_id=None)
    return CallFields(active=node.get("callActive") is True, call_id=valid_call_id(node.get("callId")))


def _stream_cid(body: dict[str, Any], channel: dict[str, Any]) -> str | None:
    candidates = [body.get("cid"), channel.get("cid")]
    for kind, ident in ((body.get("channel_type"), body.get("channel_id")), (channel.get("type"), channel.get("id"))):
        if isinstance(kind, str) and isinstance(ident, str):
            candidates.append(f"{kind}:{ident}")
    for candidate in candidates:
        if isinstance(candidate, str) and CID_RE.fullmatch(candidate):
            return candidate
    return None


def parse_stream_event(body: object, prefix: tuple[str, ...]) -> StreamEvent | None:
    """A StreamEvent, or None for a well-formed event of a type callsync ignores."""
    if not isinstance(body, dict):
        raise InvalidEvent("body is not a JSON object")
    kind = body.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidEvent("missing type")
    if kind not in STREAM_TYPES:
        return None
    channel = body.get("channel")
    channel = channel if isinstance(channel, dict) else {}
    cid = _stream_cid(body, channel)
    if cid is None:
        raise InvalidEvent(f"{kind} names no channel (cid)")
    request_info = body.get("request_info")
    user = body.get("user")
    fields = read_fields(channel, prefix) if channel and kind != "channel.deleted" else None
    return StreamEvent(
        type=kind,
        cid=cid,
        fields=fields,
        created_at=parse_time(body.get("created_at")),
        from_server=isinstance(request_info, dict) and request_info.get("type") == "server",
        user_id=_str(user, "id") if isinstance(user, dict) else None,
    )


def parse_hms_event(body: object) -> HmsEvent | None:
    """An HmsEvent, or None for a well-formed event of a type callsync ignores."""
    if not isinstance(body, dict):
        raise InvalidEvent("body is not a JSON object")
    event_id, kind, data = _text(body.get("id"), 128), body.get("type"), body.get("data")
    if event_id is None:
        raise InvalidEvent("missing id")
    if not isinstance(kind, str) or not kind:
        raise InvalidEvent("missing type")
    if not isinstance(data, dict):
        raise InvalidEvent("missing data")
    if kind not in HMS_TYPES:
        return None
    room_id, session_id = _str(data, "room_id", 128), _str(data, "session_id", 128)
    if room_id is None or session_id is None:
        raise InvalidEvent(f"{kind} lacks data.room_id or data.session_id")
    started_at = parse_time(data.get("session_started_at"))
    return HmsEvent(
        id=event_id,
        type=kind,
        room_id=room_id,
        room_name=valid_room_name(data.get("room_name")),
        session_id=session_id,
        started_at=started_at,
        at=_hms_event_time(body, data, started_at),
        is_replay=body.get("is_replay") is True,
        peer_id=_str(data, "peer_id", 128) if kind in HMS_PEER_TYPES else None,
        user_id=_str(data, "user_id", 256) if kind in HMS_PEER_TYPES else None,
        joined_at=parse_time(data.get("joined_at")) if kind in HMS_PEER_TYPES else None,
    )


def _hms_event_time(body: dict[str, Any], data: dict[str, Any], started_at: float | None) -> float | None:
    """When an event happened: its own time (`session_stopped_at`, `left_at`, `joined_at`), else
    the start plus `session_duration`, else the envelope's `timestamp`, never before the start.

    100ms's webhook page (100mslive/100ms-docs) of 2022 shows `session.close.success` without
    `session_stopped_at`, and its samples date `room.end.success` and that close by a `timestamp`
    in whole seconds, before the session's start with nanoseconds.
    """
    for key in ("session_stopped_at", "left_at", "joined_at"):
        at = parse_time(data.get(key))
        if at is not None:
            return at
    duration = data.get("session_duration")
    if started_at is not None and isinstance(duration, int | float) and not isinstance(duration, bool) and 0 < duration < 10**7:
        return started_at + float(duration)
    at = parse_time(body.get("timestamp"))
    return max(at, started_at) if at is not None and started_at is not None else at
