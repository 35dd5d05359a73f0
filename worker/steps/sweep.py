"""The periodic sweep: end sessions past the maximum length, re-check open sessions.

Its cost follows the work due, not the number of open sessions: both steps read the
open-session index by start time, from a cutoff or a cursor, with a limit. Any number of
beat processes may run it (RedBeat's lock keeps one scheduling; a sweep lock keeps passes
from overlapping), and it is idempotent: only the caller that moves a session to "ending"
ends its room.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from worker.core.actions import CheckSession, EndSession
from worker.core.timebounds import FUTURE_SKEW_SECONDS
from worker.steps import writes
from worker.steps.runtime import Runtime
from worker.store.ending import claim_stuck_endings
from worker.store.keys import BOUND_CHANNELS, CHECK_CURSOR, LAST_SWEEP, SWEEP_LOCK

log = logging.getLogger("callsync.sweep")

PAGE = 1000
# A session marked "ending" is closed within seconds when all goes well (the end task runs, then
# 100ms's close arrives, or the task records the session over). One still ending this long after
# its mark had its end lost (a task dead-lettered or dropped with a lost Redis, a close never
# seen): it is ended again, once per this interval while it stays so. Longer than a queue that
# is merely slow, so a busy hour costs few duplicate end tasks (each finds the room over and
# records the close).
ENDING_RETRY_SECONDS = 300


@dataclass(frozen=True)
class SweepResult:
    ran: bool
    ended: int = 0
    checks: int = 0
    ended_again: int = 0  # sessions left ending past ENDING_RETRY_SECONDS, sent to be ended again


def checks_per_sweep(per_minute: int, interval_seconds: int) -> int:
    """How many open sessions one sweep may re-check under the per-minute ceiling."""
    return max(1, math.floor(per_minute * interval_seconds / 60))


def sweep(rt: Runtime) -> SweepResult:
    """One pass; returns what it did (nothing if another pass holds the lock)."""
    lock = rt.redis.lock(SWEEP_LOCK, timeout=max(rt.settings.sweep_interval_seconds, 30), blocking=False)
    if not lock.acquire():
        return SweepResult(ran=False)
    try:
        now = rt.clock()
        # Scores are callsync's clock; one from the future (left by a version that scored event
        # times) would outrank every real binding for good.
        rt.redis.zremrangebyscore(BOUND_CHANNELS, f"({now + FUTURE_SKEW_SECONDS}", "+inf")
        ended = end_overdue(rt, now)
        ended_again = end_stuck(rt, now)
        checks = schedule_checks(rt)
        # Keys waiting with no live turn (its drainer killed, its drain task lost): drain them.
        writes.kick(rt)
        rt.redis.set(LAST_SWEEP, repr(now))
    finally:
        lock.release()
    if ended or checks or ended_again:
        log.info(
            "sweep: %d session(s) past the limit ended, %d left ending ended again, %d re-check(s) scheduled",
            ended,
            ended_again,
            checks,
        )
    return SweepResult(ran=True, ended=ended, checks=checks, ended_again=ended_again)


def end_overdue(rt: Runtime, now: float) -> int:
    """End every open session that started more than CALLSYNC_MAX_SESSION_SECONDS ago."""
    cutoff = now - rt.settings.max_session_seconds
    ended = 0
    while True:
        # Each claim drops what it moved from the index, so every page is new work.
        moved = rt.state.claim_overdue(cutoff, PAGE, now)
        for call_id, session_id in moved:
            rt.schedule(EndSession(call_id, session_id, "maximum session length reached"))
        ended += len(moved)
        if len(moved) < PAGE:
            return ended


def end_stuck(rt: Runtime, now: float) -> int:
    """End again every session marked ending more than ENDING_RETRY_SECONDS ago that is still ending."""
    sent = 0
    while True:
        looked_at, stuck = claim_stuck_endings(rt.redis, now - ENDING_RETRY_SECONDS, PAGE, now)
        for call_id, session_id in stuck:
            rt.schedule(EndSession(call_id, session_id, f"still ending {ENDING_RETRY_SECONDS} s after its end was asked"))
        sent += len(stuck)
        if looked_at < PAGE:
            return sent


def schedule_checks(rt: Runtime) -> int:
    """Schedule re-checks of the next open sessions in a round over all of them."""
    count = checks_per_sweep(rt.settings.session_checks_per_minute, rt.settings.sweep_interval_seconds)
    cursor = _cursor(rt.redis.get(CHECK_CURSOR))
    page = rt.state.open_page(cursor, count)
    if len(page) < count and cursor is not None:  # the round ends: continue from the oldest
        page += [item for item in rt.state.open_page(None, count - len(page)) if item not in page]
    if page:
        bucket, call_id = page[-1]
        rt.redis.set(CHECK_CURSOR, f"{bucket} {call_id}")
    for _, call_id in page:
        session = rt.state.call(call_id).session
        if session is not None and session.is_open:
            rt.schedule(CheckSession(call_id, session.session_id))
    return len(page)


def _cursor(raw: bytes | str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    bucket, _, call_id = (raw.decode() if isinstance(raw, bytes) else raw).partition(" ")
    return int(bucket), call_id
