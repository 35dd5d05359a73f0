"""The channel steps: record an event, then make the channel's call fields what recorded state
says (load it, ask the pure core, perform the actions it returns). The session steps (what
callsync asks 100ms about a session) are in worker/steps/sessions.py.

Each function is what one Celery task does; they take a Runtime, so tests drive them
with fakeredis and a fake upstream transport, and Celery only adds retries.
"""

from __future__ import annotations

import contextlib
import logging

import redis

from worker import logs
from worker.core.actions import RECONCILE, EndSession, ReadChannel, Recheck, Reconcile, RecordOwner, VerifyCall
from worker.core.binding import call_of_room
from worker.core.channels import WRITE_INTENT_SECONDS, WriteIntent, settle_write
from worker.core.events import HMS_PEER_TYPES, CallFields, HmsEvent, StreamEvent
from worker.core.reconcile import busy_wait, call_id_turned_off_by_client, live_call, open_call_to_end_for_client, plan_channel
from worker.core.timebounds import admit_hms_event
from worker.core.upstream import Retry as UpstreamRetry
from worker.core.upstream import UpstreamError
from worker.ops.counters import RATE_LIMIT_WAIT_SECONDS, RATE_LIMIT_WAITS
from worker.steps import writes
from worker.steps.messages import note_session
from worker.steps.runtime import Deferred as Deferred  # re-exported: the tasks catch sync.Deferred
from worker.steps.runtime import Runtime, lock_token
from worker.steps.sessions import verify_call
from worker.store import intents, peers
from worker.store.keys import later_key
from worker.store.state import Loaded

log = logging.getLogger("callsync.sync")

# Longer than one reconcile's worst case (two upstream calls with timeouts); a write in flight is
# believed in flight as long (core.channels.WRITE_INTENT_SECONDS): its writer holds the channel.
LOCK_SECONDS = int(WRITE_INTENT_SECONDS)
MAX_STEPS = 4  # read → verify → write is the longest path through plan_channel


def apply_stream_event(rt: Runtime, event: StreamEvent) -> None:
    """Record what Stream showed for the channel, end the call if a client ended it, reconcile it."""
    assert event.cid is not None
    now = rt.clock()
    observed, bound = rt.state.record_stream_event(event, now)
    if bound is not None and bound.first:
        rt.schedule(RecordOwner(bound.call_id, event.cid))
    if not observed.needs_reconcile:
        return  # the echo of callsync's own write, a duplicate, an older event: nothing to do
    shown = observed.current.fields if observed.applied and observed.current is not None else None
    # Judged against the fields before the pending change, so a re-run of this task after its
    # first try failed midway still sees the client's flip. The calls are read only for a flip.
    if (
        shown is not None
        and rt.settings.end_room_on_call_end
        and call_id_turned_off_by_client(observed.before, shown, event.from_server)
    ):
        calls = rt.state.calls_of_channel(event.cid)  # the channel's own: another's call is not among them
        ended = open_call_to_end_for_client(observed.before, shown, event.from_server, calls)
        # Mark it first: a reconcile racing the end-room call must not put the flag back.
        if ended is not None and ended.session is not None:
            session_id = ended.session.session_id
            if rt.state.begin_ending(ended.call_id, session_id, now):
                rt.schedule(EndSession(ended.call_id, session_id, f"call ended in channel {event.cid}"))
    reconcile_channel(rt, event.cid)


def apply_hms_event(rt: Runtime, event: HmsEvent) -> None:
    """Record the session change and reconcile every channel bound to the room."""
    now = rt.clock()
    admitted = admit_hms_event(event, now)
    if admitted is None:
        log.info("ignored %s of session %s: its times are outside what callsync believes", event.type, event.session_id)
        return
    peer = admitted.peer()
    if peer is not None:  # who is in the call (GET /calls/{id}, call messages), in any order
        peers.record_peer(rt.redis, admitted.session_id, peer)
    # An event that left the call's record as it was (most peer events, a duplicate, an older
    # session's late event) reconciles nothing: what a channel should show is computed from
    # recorded state alone (level-triggered), and none of it moved. A channel that is wrong for
    # another reason has its own reconcile owed: every change of a call's record sets the call's
    # owed mark in the same step (keys.owed_key), dropped only after a reconcile that followed it,
    # so a change whose reconcile did not happen (a task that failed before it, the calls API's
    # adoption) is reconciled by this event; a Stream change stays marked pending until a
    # reconcile that read it completes; a claim waiting on time has its delayed reconcile
    # (`_schedule_once`). The receiver settles the commonest of these events without a task
    # (core.sessions.settled_at_ingest), and never while the mark is there.
    session, cids, owed = rt.state.record_hms_event_and_channels(admitted, now)
    # A session opened or closed: its call message (rule 13); a peer event only when it is how
    # callsync learned of the session (its open lost), so an adopted session is announced too.
    note_session(rt, session, peer_event=admitted.type in HMS_PEER_TYPES)
    for cid in sorted(cids):
        reconcile_channel(rt, cid)
    if owed is not None and admitted.room_name:
        rt.state.settle_owed(call_of_room(admitted.room_name), owed)


# The two apply steps reconcile in the same task: recording an event is idempotent, so a
# retry (or a Deferred) re-runs both, and a webhook costs one task instead of two. Steps whose
# retry would repeat an upstream call that already took effect (end-room) or that cannot
# re-run their reconcile (a check that already recorded the close) schedule it instead.
def reconcile_channel(rt: Runtime, cid: str, turn: writes.Turn | None = None) -> None:
    """Make the channel's call fields what recorded state says they should be.

    Under the channel's lock, taken in the same round trip that reads the channel (a
    write's bookkeeping releases it in the round trip that records the write). The lock is
    held for the task (worker/steps/runtime.py `acting_for`): its retry or redelivery takes
    back a lock this run could not release. `turn`: run by the drain of the channels' queue,
    which holds the endpoint's turn (a busy channel stays in line instead of deferring).
    """
    token = lock_token()
    loaded = rt.state.load(cid, lock=(token, LOCK_SECONDS))
    if loaded is None:
        left = rt.state.lock_left(cid)
        held_for = LOCK_SECONDS - left if left is not None else None
        if turn is not None:
            raise writes.WriteLater(rt.clock() + busy_wait(held_for), f"channel {cid} is being reconciled")
        raise Deferred(busy_wait(held_for), f"channel {cid} is being reconciled")
    try:
        finished = _reconcile_locked(rt, cid, loaded, token, turn)
    except BaseException:
        rt.state.unlock(cid, token)  # not finished: a pending mark stays for the retry
        raise
    if finished is not None:
        rt.state.finish(cid, token, finished)


def _reconcile_locked(rt: Runtime, cid: str, loaded: Loaded, token: str, turn: writes.Turn | None) -> Loaded | None:
    """The reconcile's steps; returns the last snapshot it planned from, or None when its
    write already recorded the outcome and released the lock."""
    grace = float(rt.settings.stale_flag_grace_seconds)
    for step in range(MAX_STEPS):
        now = rt.clock()
        if step:
            loaded = rt.state.load(cid) or loaded  # without a token the load always answers
        action = plan_channel(loaded.channel, loaded.calls, now, grace)
        if isinstance(action, ReadChannel):
            fields = rt.stream.read_call_fields(cid)
            live = live_call(loaded.calls)
            # Dated like a write (see _write): Stream showed this at or after `now`.
            missing_for = live.session.session_id if fields is None and live and live.session else None
            rt.state.record_channel(cid, fields, now, exists=fields is not None, missing_for=missing_for)
        elif isinstance(action, VerifyCall):
            verify_call(rt, action.call_id)
        elif isinstance(action, Recheck):
            _log_recheck(cid, loaded, action, now)
            _schedule_once(rt, cid, action.at - now)
            return loaded
        elif action is None:
            return loaded
        else:
            _write_fields(rt, cid, loaded, action.fields, token, now, turn)
            return None
    return loaded


def _write_fields(
    rt: Runtime, cid: str, loaded: Loaded, wanted: CallFields, token: str, now: float, turn: writes.Turn | None = None
) -> None:
    """Take the write's slot at the channels' ceiling (or queue the channel and release its
    lock: the drain writes it later, fresh), record the write's intent, write the call fields to
    Stream, then record what Stream answered (settling the intent), what it said of the ceiling
    and release the channel's lock, all three in one round trip."""
    if turn is None:
        if not writes.offer(rt, CHANNELS, cid, now):
            rt.state.unlock(cid, token)  # in line: the drain reconciles it when its slot comes
            return
    else:
        writes.wait_for_slot(rt, turn)
        now = rt.clock()  # still before the PATCH leaves (the intent's date, below)
    live = live_call(loaded.calls)
    # Dated `now`, read before the PATCH left (Stream's answer carries no event time): its echo
    # and every later change are dated after it, a late older change before it. The claim it
    # writes belongs to the session it is for, whatever the clocks say (docs/design.md, "State
    # in Redis").
    intent = WriteIntent(wanted, now, live.session.started_at if live and live.session else None)
    # Before the PATCH leaves: Stream sends its echo as soon as it applies it, so the echo's
    # task may record it before the answer is here.
    read, record = intents.record_intent(rt.state, cid, loaded.raw, intent)
    try:
        fields, limit = _send(rt, cid, wanted, intent)
    except UpstreamError as error:
        if error.retry is not UpstreamRetry.AFTER:
            raise
        _paused(rt, cid, error, turn)  # a 429: the whole endpoint waits, the channel in line
        rt.state.unlock(cid, token)
        if turn is not None:
            raise writes.WriteLater(rt.clock(), f"channel updates paused by a 429 ({error})") from None
        return
    settled, _ = settle_write(cid, record, record, fields, intent)
    as_planned = rt.state.record_write(cid, read, settled, token, also=[CHANNELS.queue(rt).report_call(limit, rt.clock())])
    # `planned_from`: the version of the channel record the write was planned from (the Stream
    # time of the newest news callsync had of the channel), to tell a decision from its arrival.
    planned_from = loaded.record.version if loaded.record else None
    session = live.session.session_id if live and live.session else None
    line = logs.fields(cid=cid, active=fields.active, call_id=fields.call_id, planned_from=planned_from, session_id=session)
    log.info("channel %s call fields set to active=%s callId=%s", cid, fields.active, fields.call_id, extra=line)
    # The record changed since the intent was recorded: by the write's echo alone (settled
    # without more), or by news the write was not planned from (reconcile again).
    if not as_planned and intents.settle_write(rt.state, cid, read, fields, intent):
        rt.schedule(Reconcile(cid))


def _paused(rt: Runtime, cid: str, error: UpstreamError, turn: writes.Turn | None) -> None:
    """A 429 on a channel update: pause every channel update until the answer's wait is over
    (docs/behaviour.md, rule 7); the channel waits in line (queued first: its place is kept)."""
    now = rt.clock()
    wait = error.retry_after if error.retry_after is not None else 1.0
    labels = {"api": error.api, "source": "upstream_429"}
    rt.tally.inc(RATE_LIMIT_WAITS, labels)
    rt.tally.inc(RATE_LIMIT_WAIT_SECONDS, labels, wait)
    CHANNELS.queue(rt).report(error.reported_limit, now, pause_until=now + wait)
    if turn is None:
        writes.offer(rt, CHANNELS, cid, now, direct=False)


def _send(rt: Runtime, cid: str, wanted: CallFields, intent: WriteIntent) -> tuple[CallFields, int | None]:
    """The PATCH; a write that failed drops its intent (the task's retry plans again), so an
    echo of it that still comes, had it landed, is news."""
    try:
        return rt.stream.update_call_fields_reporting(cid, wanted)
    except BaseException:
        with contextlib.suppress(redis.RedisError):  # else the intent lapses (WRITE_INTENT_SECONDS)
            intents.drop_intent(rt.state, cid, intent)
        raise


def _write_queued(rt: Runtime, cid: str, turn: writes.Turn) -> None:
    """The channels' writer: the drain reconciles a queued channel fresh."""
    reconcile_channel(rt, cid, turn)


# Stream channel updates ("Update Channel": 300 a minute per app by default,
# https://getstream.io/chat/docs/react/rate-limits/), keyed by cid; a dead letter replays the
# channel's reconcile.
CHANNELS = writes.register(writes.Endpoint("channels", lambda settings: settings.stream_update_rate, _write_queued, RECONCILE))


def _log_recheck(cid: str, loaded: Loaded, action: Recheck, now: float) -> None:
    """The channel claims a call callsync cannot confirm yet (docs/behaviour.md, rule 4): say so, and when it looks again."""
    session = next((c.session for c in loaded.calls if c.call_id == action.call_id and c.session), None)
    line = logs.fields(
        cid=cid,
        call_id=action.call_id,
        claim_since=loaded.channel.claim_since,
        recheck_at=action.at,
        session_id=session.session_id if session else None,
        session_status=session.status if session else None,
        session_started_at=session.started_at if session else None,
        session_ended_at=session.ended_at if session else None,
    )
    log.info(
        "channel %s claims call %s, not confirmed: looking again in %.1f s", cid, action.call_id, action.at - now, extra=line
    )


def _schedule_once(rt: Runtime, cid: str, delay: float) -> None:
    """One delayed reconcile per channel at a time, however many events ask for it.

    At most a hop ahead (worker/jobs/tasks.py `_retry` says why): a reconcile that runs before
    its time plans again and schedules the next hop."""
    delay = min(delay, rt.settings.longest_countdown_seconds)
    if rt.redis.set(later_key(cid), "1", nx=True, px=max(int(delay * 1000), 1)):
        rt.schedule(Reconcile(cid), countdown=delay)
