"""The life of a 100ms session as callsync records it, and which one is a room's current.

A session only moves forward: open → ending → closed, or straight to closed. A close
that arrives before its open keeps the session closed (docs/behaviour.md, rule 6).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from worker.core.events import HMS_PEER_TYPES, HmsEvent
from worker.core.timebounds import admit_hms_event

Status = Literal["open", "ending", "closed"]
_RANK = {"open": 0, "ending": 1, "closed": 2}


@dataclass(frozen=True)
class Session:
    session_id: str
    room_id: str
    room_name: str | None
    status: Status
    started_at: float | None
    ended_at: float | None = None  # closed, or asked to end by callsync

    @property
    def is_open(self) -> bool:
        return self.status == "open"

    @property
    def sort_key(self) -> float:
        return self.started_at or 0.0


def advance(session: Session, status: Status, at: float | None) -> Session:
    """`session` moved to `status` unless it is already at or past it."""
    if _RANK[status] <= _RANK[session.status]:
        return session
    return replace(session, status=status, ended_at=session.ended_at or at)


def observe(session: Session | None, event: HmsEvent) -> Session:
    """The session after `event`, whatever order events arrive in."""
    seen = Session(event.session_id, event.room_id, event.room_name, "open", event.started_at)
    return after_news(session, seen, event.at, event.closes)


def after_news(session: Session | None, seen: Session, at: float | None, closes: bool) -> Session:
    """The session after news, dated `at`, that `seen` runs (or, `closes`, that it is over): a
    100ms event (`observe`) or what callsync concluded itself (core.checks.conclude). `session`
    is the same session as recorded (None: not yet); of `seen` only its ids, room name and start
    are read."""
    if session is None:
        # Without a start time, the first sight of the session is the best estimate
        # of its age (the 12-hour sweep needs one).
        session = Session(seen.session_id, seen.room_id, seen.room_name, "open", seen.started_at or at)
    else:
        session = replace(
            session,
            room_name=session.room_name or seen.room_name,
            started_at=seen.started_at or session.started_at,  # a real start beats an estimate
        )
    return advance(session, "closed", at) if closes else session


def is_newer(candidate: Session, current: Session | None) -> bool:
    """Whether `candidate` should become its room's current session.

    100ms runs one session per room at a time, so a later start supersedes an earlier
    session even when that one's close was lost; a late open of an older session
    never takes the room back.
    """
    if current is None or current.session_id == candidate.session_id:
        return True
    return candidate.sort_key >= current.sort_key


def is_live(session: Session, live_session_id: str | None) -> bool:
    """Whether `session` is the one 100ms reports live in its room (100ms runs one at a time):
    only then may callsync end the room for it."""
    return live_session_id is not None and live_session_id == session.session_id


def may_settle_at_ingest(event: HmsEvent, now: float) -> bool:
    """What `settled_at_ingest` asks of the event alone: a peer event of a named room with a
    start, whose times callsync admits at `now` as they are (core.timebounds)."""
    return (
        event.type in HMS_PEER_TYPES
        and event.room_name is not None
        and event.started_at is not None
        and admit_hms_event(event, now) == event
    )


def start_ms(started_at: float) -> int:
    """A session's start as its record keeps it (whole milliseconds)."""
    return round(started_at * 1000)


def settled_at_ingest(event: HmsEvent, recorded: Session | None, now: float, reconcile_owed: bool = False) -> bool:
    """Whether recording `event` provably changes nothing but its peer (core.peers), so the
    receiver may record the peer and queue no task (docs/design.md, "The path of a webhook").

    A peer event of the room's current session, recorded open with the same start: `observe`
    gives that session back as it is (ids, status and room name kept, the start the same to the
    millisecond its record keeps), so the worker would rewrite nothing and reconcile nothing.
    Anything else (no session recorded, another one, another start, a close, a reconcile still
    owed to the call for an earlier change: `reconcile_owed`) goes to the worker.
    `worker/store/lua/dedupe_and_push.lua` decides the same over the record in Redis.
    """
    return (
        may_settle_at_ingest(event, now)
        and not reconcile_owed
        and recorded is not None
        and recorded.session_id == event.session_id
        and recorded.is_open
        and recorded.started_at is not None
        and event.started_at is not None
        and start_ms(recorded.started_at) == start_ms(event.started_at)
    )
