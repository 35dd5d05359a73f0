"""The session steps: what callsync asks 100ms about a session, and records (a check, an end,
an adoption), then the reconciles of the channels bound to its call (worker/steps/sync.py).

Each function is what one Celery task does, on a Runtime, as in worker/steps/sync.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from worker.core import checks
from worker.core.actions import EndRoom, Reconcile, RecordClosed, RecordOpen, SessionChange
from worker.steps.messages import note_session
from worker.steps.owners import call_room
from worker.steps.runtime import Runtime

log = logging.getLogger("callsync.sync")  # one logger for the worker's steps


# The apply steps (worker/steps/sync.py) reconcile in their own task: recording an event is
# idempotent, so a retry (or a Deferred) re-runs both, and a webhook costs one task instead of
# two. These steps' retry would repeat an upstream call that already took effect (end-room), or
# could not re-run its reconcile (a check that already recorded the close): they schedule it.
def reconcile_call(rt: Runtime, call_id: str) -> None:
    """Schedule a reconcile of the channel `call_id` belongs to (none: nobody bound it yet)."""
    owner = rt.state.owner_of_call(call_id)
    if owner is not None:
        rt.schedule(Reconcile(owner))


def verify_call(rt: Runtime, call_id: str) -> None:
    """Ask 100ms whether `call_id`'s room is live: adopt its session, or record it idle."""
    now = rt.clock()
    recorded = rt.state.call(call_id).session
    # The room named exactly by the call id (or its derived name): a lookup by name is
    # case-insensitive, and a room of another case is another call's.
    room = None if recorded else call_room(rt, call_id)
    room_id = recorded.room_id if recorded else room.id if room else None
    live = rt.hms.live_session(room_id) if room_id else None
    if live is None:
        rt.state.confirm_idle(call_id, now)
        return
    _record(rt, [checks.adopted(live, call_id, now)])


def check_session(rt: Runtime, call_id: str, session_id: str, active_room: bool = False) -> bool:
    """Ask 100ms whether a session recorded open still is; record its close if not (True).

    Recovers closes whose webhook was lost (100ms stops retrying after ~14 s). `active_room`: ask
    the active-rooms API (the resync's confirmation of a session its list of live ones lacked:
    another source than that list), else the room's live sessions.
    """
    session = checks.unsettled(rt.state.call(call_id).session, session_id)
    if session is None:
        return False
    live = rt.hms.active_session(session.room_id) if active_room else rt.hms.live_session(session.room_id)
    concluded = checks.check(session, call_id, live, rt.clock())
    if concluded:
        _record(rt, concluded)
        log.info("session %s of room %s is over in 100ms: recorded its lost close", session_id, session.room_id)
        reconcile_call(rt, call_id)
    return bool(concluded)


def adopt_session(rt: Runtime, call_id: str, live: checks.LiveSession) -> None:
    """Record a session 100ms lists live as its webhook would have (rule 4's adoption), then
    schedule its channel's reconcile."""
    _record(rt, [checks.adopted(live, call_id, rt.clock())])
    reconcile_call(rt, call_id)


def end_session(rt: Runtime, call_id: str, session_id: str, reason: str) -> None:
    """End the session's room for everyone through 100ms, then reconcile its channels.

    Only once 100ms confirms the session is the room's live one (core.checks.end); otherwise the
    session is recorded closed and the live one adopted. (A session that starts between the
    check and the end-room call is the one gap left: the API names no session to end.)
    """
    session = checks.unsettled(rt.state.call(call_id).session, session_id)
    if session is None:
        return
    live = rt.hms.active_session(session.room_id)
    now = rt.clock()
    for action in checks.end(session, call_id, live, reason, now):
        if isinstance(action, EndRoom):
            rt.state.begin_ending(call_id, session_id, now)
            ended = rt.hms.end_room(session.room_id, action.reason)
            log.info("end-room %s for session %s: %s", session.room_id, session_id, "ending" if ended else "no active session")
        else:
            _record(rt, [action])
            if isinstance(action, RecordClosed):
                log.info(
                    "session %s of room %s is not the live one in 100ms: recorded closed, not ended", session_id, session.room_id
                )
    reconcile_call(rt, call_id)


def _record(rt: Runtime, actions: Sequence[SessionChange]) -> None:
    for action in actions:
        note_session(rt, rt.state.record_session(action))  # an adoption opens, a check closes: rule 13
        if isinstance(action, RecordOpen):
            log.info("adopted live session %s of call %s", action.session.session_id, action.session.room_name)
