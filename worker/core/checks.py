"""What asking 100ms about a recorded session concludes: a check, an end, an adoption.

100ms runs one session per room at a time (docs/behaviour.md, rule 6), so what it reports
live in the room settles a recorded session: it is the live one, or it is over and the live
one (if any) is a session callsync never heard of.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from worker.core.actions import EndRoom, RecordClosed, RecordOpen, SessionChange
from worker.core.sessions import Session, after_news, is_live
from worker.core.timebounds import in_bounds


@dataclass(frozen=True)
class LiveSession:
    """A session 100ms reports running in a room."""

    room_id: str
    session_id: str
    started_at: float | None


def unsettled(recorded: Session | None, session_id: str) -> Session | None:
    """The recorded session if it is still `session_id` and not closed (open, or ending: callsync
    asked 100ms to end it); else None: a newer session replaced it, or its close is recorded."""
    if recorded is None or recorded.session_id != session_id or recorded.status == "closed":
        return None
    return recorded


def adopted(live: LiveSession, call_id: str, now: float) -> RecordOpen:
    """Record a session 100ms runs that callsync never got a webhook for; a start time outside
    what callsync believes is dropped (the store then dates it by its first sight, `now`)."""
    started = live.started_at if in_bounds(live.started_at, now) else None
    return RecordOpen(Session(live.session_id, live.room_id, call_id, "open", started), now)


def no_longer_running(session: Session, call_id: str, live: LiveSession | None, now: float) -> list[SessionChange]:
    """`session` is not what 100ms runs: record it closed at `now`, and adopt what runs instead."""
    name = session.room_name or call_id
    actions: list[SessionChange] = [RecordClosed(replace(session, room_name=name), now)]
    if live is not None:
        actions.append(adopted(live, name, now))
    return actions


def check(session: Session, call_id: str, live: LiveSession | None, now: float) -> list[SessionChange]:
    """A recorded session re-checked: nothing while 100ms runs it, else `no_longer_running`."""
    if is_live(session, live.session_id if live else None):
        return []
    return no_longer_running(session, call_id, live, now)


def end(session: Session, call_id: str, live: LiveSession | None, reason: str, now: float) -> list[SessionChange | EndRoom]:
    """End `session`'s room, only while it is the one 100ms runs: end-room ends whatever runs in
    the room, and a newer session must not pay for an older one."""
    if not is_live(session, live.session_id if live else None):
        return [*no_longer_running(session, call_id, live, now)]
    return [EndRoom(session, reason)]


def conclude(recorded: Session | None, change: SessionChange) -> Session:
    """The session after `change`, which callsync concluded itself: as the 100ms event that would
    have said it leaves it (core.sessions.after_news). `recorded` is the same session as recorded
    (None: not yet)."""
    return after_news(recorded, change.session, change.at, closes=isinstance(change, RecordClosed))
