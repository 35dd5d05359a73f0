"""The message of a call session in its owning channel (docs/behaviour.md, rule 13): what it
says, from what callsync recorded of the session and its peers. Pure: the step
(worker/steps/messages.py) reads the records, asks here, and writes what this returns.

One session is one message, id `callsync-<session id>`: Stream refuses a second message of an
existing id (400, code 4, `SendMessage failed with error: "a message with ID … already exists"`:
GetStream/stream-chat-js issue #759 and PR #236), so a retry or a duplicate never posts twice.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from worker.core.peers import SessionPeers

MESSAGE_ID_PREFIX = "callsync-"
USER_NAME = "Calls"  # the name the message user is upserted with
MAX_PARTICIPANTS = 50  # ids listed in the attachment; `participant_count` holds the whole
# Stream limits a message's custom data to 5 KB (issue 22, from Stream's docs): the attachment is
# kept under this many bytes of JSON, dropping listed ids (never the count) until it fits.
ATTACHMENT_BUDGET = 4096

Status = Literal["live", "ended", "missed"]
Write = Literal["send", "update"]


@dataclass(frozen=True)
class CallSession:
    """What the message is made of: the session as recorded (times in seconds)."""

    session_id: str
    call_id: str
    room_id: str
    room_name: str
    started_at: float | None
    ended_at: float | None  # None while the session runs (or is ending)

    @property
    def closed(self) -> bool:
        return self.ended_at is not None


@dataclass(frozen=True)
class CallMessage:
    id: str
    text: str
    status: Status
    attachment: dict[str, Any]

    def body(self, user_id: str) -> dict[str, Any]:
        """The `message` object of Stream's SendMessage/UpdateMessage (stream-chat-python channel.py)."""
        return {"id": self.id, "text": self.text, "user_id": user_id, "attachments": [self.attachment]}

    @property
    def digest(self) -> str:
        """What identifies this content: the step records it once written, and writes again only for another."""
        raw = json.dumps([self.text, self.attachment], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def message_id(session_id: str) -> str:
    return f"{MESSAGE_ID_PREFIX}{session_id}"


def participant_count(peers: SessionPeers) -> int:
    """Distinct users that joined: a peer without a user id (a SIP caller) counts as one;
    peers past the record's bound count one each (at most one per join)."""
    anonymous = sum(1 for p in peers.peers if p.user_id is None)
    return len(peers.user_ids()) + anonymous + peers.overflow


def call_message(session: CallSession, peers: SessionPeers | None) -> CallMessage:
    """The message for `session`. `peers`: who joined (None: callsync cannot know, which
    reads "ended", never "missed": no peer recorded is no peer known)."""
    known = peers is not None and (bool(peers.peers) or peers.overflow > 0)
    attachment: dict[str, Any] = {
        "type": "call",
        "call": {"id": session.call_id, "provider": "hms", "hms": {"room_id": session.room_id, "room_name": session.room_name}},
        "status": "live",
        "started_at": iso(session.started_at),
    }
    if not session.closed:
        return CallMessage(message_id(session.session_id), "Call started", "live", attachment)
    count = participant_count(peers) if peers is not None and known else None
    status: Status = "missed" if count is not None and count <= 1 else "ended"
    duration = max(0, round((session.ended_at or 0.0) - session.started_at)) if session.started_at is not None else None
    attachment.update(
        status=status,
        ended_at=iso(session.ended_at),
        duration_seconds=duration,
        participants=[],
        participant_count=count,
    )
    listed = (peers.user_ids() if peers is not None else [])[:MAX_PARTICIPANTS]
    for user in listed:  # as many as fit Stream's custom-data limit
        attachment["participants"].append(user)
        if _size(attachment) > ATTACHMENT_BUDGET:
            attachment["participants"].pop()
            break
    text = (
        "Missed call" if status == "missed" else f"Call ended · {length_text(duration)}" if duration is not None else "Call ended"
    )
    return CallMessage(message_id(session.session_id), text, status, attachment)


def length_text(seconds: int) -> str:
    """A call's length as the message says it: "45 s", "14 min", "1 h 5 min"."""
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours and minutes else f"{hours} h" if hours else f"{minutes} min"


def next_write(wanted: CallMessage, written: str | None, final: bool) -> Write | None:
    """What brings Stream's message to `wanted`: `written` is the digest recorded as written
    ("" when sent but its content unknown, None when never sent); a closed message written is
    `final` and never written again."""
    if written is None:
        return "send"
    if final or written == wanted.digest:
        return None
    return "update"


def is_duplicate_id(status: int | None, message: str) -> bool:
    """Stream's answer to a send whose id exists: 400, code 4, "... already exists"
    (GetStream/stream-chat-js issue #759): the earlier send landed, which is success."""
    return status == 400 and "already exists" in message


def iso(at: float | None) -> str | None:
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(at * 1000) % 1000:03d}Z"


def _size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())
