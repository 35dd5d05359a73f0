"""The resync (docs/behaviour.md, rule 12): read the truth back from both platforms and record it
as the events that would have said it; the normal path (the reconcile's tasks) repairs the rest.

It records and schedules only: every write to Stream goes through the reconcile (and its fair
write queue), so the resync never competes with it for Stream's update ceiling. Its reads are
paced (`Pacer`) under CALLSYNC_RESYNC_QUERY_PERCENT of Stream's QueryChannels quota and
CALLSYNC_RESYNC_HMS_RATE. One run at a time across processes (a lock); a run works in slices of
at most SLICE_SECONDS, its progress kept in Redis between them, so a resync of 100k bound
channels is one run of many short tasks that any worker may continue.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from worker import logs
from worker.core import binding
from worker.core import resync as core
from worker.core.actions import Reconcile, RecordOwner, Resync
from worker.core.checks import LiveSession
from worker.core.events import CallFields, valid_room_name
from worker.core.reconcile import plan_channel
from worker.ops import counters
from worker.settings import Rate
from worker.steps import sessions
from worker.steps.runtime import Runtime
from worker.store import resync as store
from worker.store.keys import RESYNC_HMS_RATE, RESYNC_LOCK, RESYNC_QUERY_RATE
from worker.store.ratelimit import RateLimiter

log = logging.getLogger("callsync.resync")

SLICE_SECONDS = 60.0  # one task's share of a run: well under the visibility timeout
LOCK_SECONDS = 120  # a slice extends it page by page; a dead holder frees it this soon
RUN_TTL = 86400  # a run nobody continues for a day is forgotten
OPEN_PAGE = 1000
T = TypeVar("T")


class Pacer:
    """The resync's reads wait for a share of the platforms' quotas, shared by every process.

    The one place the resync meets a rate limiter: for now worker/store/ratelimit.py's sliding log
    (a grant held while the call is in flight), so the limiter may be replaced here alone."""

    def __init__(self, rt: Runtime, sleep: Callable[[float], None] = time.sleep):
        percent = rt.settings.resync_query_percent
        self._stream = RateLimiter(rt.redis, RESYNC_QUERY_RATE, Rate(core.reads_per_minute(percent), 60.0))
        self._hms = RateLimiter(rt.redis, RESYNC_HMS_RATE, rt.settings.resync_hms_rate)
        self._sleep = sleep

    def stream(self, call: Callable[[], T]) -> T:
        return self._paced(self._stream, call)

    def hms(self, call: Callable[[], T]) -> T:
        return self._paced(self._hms, call)

    def _paced(self, limiter: RateLimiter, call: Callable[[], T]) -> T:
        while True:
            with limiter.update() as grant:
                if grant.wait == 0:
                    return call()
            self._sleep(grant.wait)


def resync(
    rt: Runtime,
    full: bool = False,
    goes_on: bool = False,
    slice_seconds: float | None = SLICE_SECONDS,
    pacer: Pacer | None = None,
) -> dict[str, Any] | None:
    """One slice of the resync: start a run (full when asked or due), or continue the one under
    way; returns the run's summary when it is done, else None (another process holds it, or it
    goes on in a task scheduled here). `slice_seconds` None: until done (`callsync resync`)."""
    lock = rt.redis.lock(RESYNC_LOCK, timeout=LOCK_SECONDS, blocking=False)
    if not lock.acquire():
        return None
    go_on = False
    try:
        now = rt.clock()
        run = store.load_run(rt.redis)
        if run is not None and not goes_on and slice_seconds is not None and now - run["updated_at"] < LOCK_SECONDS:
            return None  # its own chain of tasks continues it: a second chain would double the reads
        if run is None:
            last_full = store.last_full_resync(rt.redis)
            due = last_full is None or now - last_full >= rt.settings.full_resync_interval_seconds
            run = _new_run(now, "full" if full or due else "bound")
        elif full and run["tally"]["mode"] != "full":
            run["tally"]["mode"] = "full"  # a lost Redis asks for a full pass: this run adds it
        _work(rt, run, slice_seconds, pacer or Pacer(rt), lock.extend)
        run["updated_at"] = rt.clock()
        if run["phase"] != "done":
            store.save_run(rt.redis, run, RUN_TTL)
            go_on = True
            return None
        return _finish(rt, run)
    finally:
        lock.release()
        if go_on:
            rt.schedule(Resync(full=False, goes_on=True))


def _new_run(now: float, mode: core.Mode) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex[:12],
        "started_at": now,
        "updated_at": now,
        "phase": "hms",
        "bound_cursor": 0,
        "full_cursor": None,
        "tally": core.Tally(mode=mode).as_dict(),
    }


def _work(rt: Runtime, run: dict[str, Any], slice_seconds: float | None, pacer: Pacer, extend: Callable[..., Any]) -> None:
    """Run phases until the run is done or its slice is spent."""
    ends = None if slice_seconds is None else time.monotonic() + slice_seconds
    tally = core.Tally.from_dict(run["tally"])

    def more() -> bool:
        extend(LOCK_SECONDS, replace_ttl=True)
        run["tally"] = tally.as_dict()
        return ends is None or time.monotonic() < ends

    try:
        if run["phase"] == "hms":
            _hms_phase(rt, tally, pacer)
            run["phase"] = "bound"
        if run["phase"] == "bound":  # each slice reads at least a page of each phase it reaches: progress
            resume: tuple[int, int] | None = (int(run["bound_cursor"]), int(run.get("bound_skip", 0)))
            at = resume or (0, 0)
            for resume, cids in store.bound_pages(rt.redis, at[0], at[1], core.QUERY_CHANNELS_PAGE):
                _read_channels(rt, tally, pacer, core.bound_query(cids), cids)
                run["bound_cursor"], run["bound_skip"] = resume or (0, 0)
                if resume is not None and not more():
                    break
            else:
                resume = None  # every page read (or none bound)
            if resume is None:
                run["phase"] = "full" if tally.mode == "full" else "done"
        if run["phase"] == "full":
            _full_phase(rt, tally, pacer, run, more)
    finally:
        run["tally"] = tally.as_dict()


def _hms_phase(rt: Runtime, tally: core.Tally, pacer: Pacer) -> None:
    """Record every session 100ms lists live as its webhook would have; confirm each session
    recorded open that the list lacks with the active-rooms API, then record it closed. The
    live call ids are held in memory: as many as sessions run at once (not resumable: one go)."""
    live_calls: set[str] = set()
    start: str | None = None
    while True:
        params = core.sessions_params(start)
        found, size, last = pacer.hms(lambda: rt.hms.live_sessions(params))  # noqa: B023 - called at once
        tally.hms_calls += 1
        tally.sessions_listed += len(found)
        names = store.room_names(rt.redis, [live.room_id for live in found])
        for live in found:
            call_id = _call_of(rt, live, names.get(live.room_id), tally, pacer)
            if call_id is None:
                continue
            live_calls.add(call_id)
            recorded = rt.state.call(call_id).session
            if recorded is not None and recorded.session_id == live.session_id:
                continue
            sessions.adopt_session(rt, call_id, live)
            tally.add("adopted")
            log.info(
                "resync: adopted live session %s of call %s",
                live.session_id,
                call_id,
                extra=logs.fields(call_id=call_id, session_id=live.session_id, resync="adopted"),
            )
        start = core.sessions_next(size, last)
        if start is None:
            break
    cursor = None
    while page := rt.state.open_page(cursor, OPEN_PAGE):
        for call_id in core.absent((c for _, c in page), live_calls):
            session = rt.state.call(call_id).session
            if session is None or not session.is_open:
                continue
            tally.hms_calls += 1
            if pacer.hms(functools.partial(sessions.check_session, rt, call_id, session.session_id, active_room=True)):
                tally.add("closed")
        if len(page) < OPEN_PAGE:
            break
        cursor = page[-1]


def _call_of(rt: Runtime, live: LiveSession, name: str | None, tally: core.Tally, pacer: Pacer) -> str | None:
    """The call id of a live session's room: the list names rooms by id only, so the name is looked
    up once (GET /rooms/{id}) and kept."""
    if name is None:
        tally.hms_calls += 1
        room = pacer.hms(lambda: rt.hms.room(live.room_id))
        name = room.name if room is not None else None
        if name is None or valid_room_name(name) is None:
            return None
        store.keep_room_name(rt.redis, live.room_id, name)
    return binding.call_of_room(name)


def _full_phase(rt: Runtime, tally: core.Tally, pacer: Pacer, run: dict[str, Any], more: Callable[[], bool]) -> None:
    """Find the channels callsync knows nothing of that show a call (a first claim whose delivery
    was lost, every channel after a lost Redis): filtered on `callActive` with top-level fields,
    every channel with the nested layout (Stream cannot filter inside a custom object)."""
    layout: core.Layout = "top-level" if not rt.settings.field_path else "nested"
    raw = run.get("full_cursor")
    cursor: core.FullCursor | None = core.FullCursor(raw[0], tuple(raw[1])) if raw else core.FullCursor()
    while cursor is not None:
        body = core.full_query(layout, rt.settings.field_prefix, cursor)
        page = _read_channels(rt, tally, pacer, body, None)
        cursor = core.next_cursor(cursor, [(cid, at) for cid, _, at in page])
        run["full_cursor"] = [cursor.created_at, list(cursor.seen)] if cursor else None
        if cursor is None:
            run["phase"] = "done"
        elif not more():
            return


def _read_channels(
    rt: Runtime, tally: core.Tally, pacer: Pacer, body: dict[str, Any], asked: list[str] | None
) -> list[tuple[str, CallFields, str]]:
    """One QueryChannels page, recorded channel by channel as the Stream event that would have
    said it (`asked`: the cids asked for; one Stream did not return no longer exists)."""
    at = rt.clock()  # before the read left: a change Stream applies after it is newer
    page = pacer.stream(lambda: rt.stream.query_call_fields(body))
    tally.stream_calls += 1
    reads: dict[str, CallFields | None] = {cid: fields for cid, fields, _ in page}
    for cid in asked or []:
        reads.setdefault(cid, None)
    records = store.channel_records(rt.redis, list(reads))
    grace = float(rt.settings.stale_flag_grace_seconds)
    for cid, fields in reads.items():
        tally.channels_read += 1
        now = rt.clock()
        if core.skips(records[cid], now):
            tally.add("skipped")
            continue
        observed, bound = rt.state.record_stream_event(core.read_as_event(cid, fields, at), at)
        if bound is not None and bound.first:
            rt.schedule(RecordOwner(bound.call_id, cid))
        loaded = rt.state.load(cid)
        step = plan_channel(loaded.channel, loaded.calls, now, grace) if loaded is not None else None
        if observed.changed:
            tally.add("recorded")
            shown = fields if fields is not None else None
            log.info(
                "resync: channel %s shows active=%s callId=%s, recorded",
                cid,
                shown.active if shown else None,
                shown.call_id if shown else None,
                extra=logs.fields(
                    cid=cid, active=shown.active if shown else None, call_id=shown.call_id if shown else None, resync="recorded"
                ),
            )
        else:
            tally.add("unchanged")
        if core.wants_reconcile(observed, step):
            rt.schedule(Reconcile(cid))
            tally.add("reconciles")
    return page


def _finish(rt: Runtime, run: dict[str, Any]) -> dict[str, Any]:
    now = rt.clock()
    tally = core.Tally.from_dict(run["tally"])
    summary = {
        "id": run["id"],
        "at": now,
        "started_at": run["started_at"],
        "duration_seconds": round(now - run["started_at"], 3),
        **tally.as_dict(),
    }
    store.finish_run(rt.redis, summary, tally.mode == "full", now)
    rt.tally.inc(counters.RESYNC_RUNS, {"mode": tally.mode})
    for outcome in core.OUTCOMES:
        if tally.counts.get(outcome):
            rt.tally.inc(counters.RESYNC_OUTCOMES, {"outcome": outcome}, tally.counts[outcome])
    log.info(
        "resync %s (%s) done in %.1f s: %d session(s) listed, %d channel(s) read, %d adopted, %d closed, "
        "%d recorded, %d reconcile(s) scheduled, %d skipped (write in flight)",
        run["id"],
        tally.mode,
        summary["duration_seconds"],
        tally.sessions_listed,
        tally.channels_read,
        tally.counts["adopted"],
        tally.counts["closed"],
        tally.counts["recorded"],
        tally.counts["reconciles"],
        tally.counts["skipped"],
        extra=logs.fields(**{k: v for k, v in summary.items() if k != "at"}),
    )
    return summary
