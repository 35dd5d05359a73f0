"""Celery tasks: short adapters from a message to a `worker.steps` step, under the retry
policy of worker.core.upstream (docs/behaviour.md, rule 7)."""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Task, shared_task
from celery.exceptions import Reject, Retry

from worker.core.actions import (
    APPLY_HMS_EVENT,
    APPLY_STREAM_EVENT,
    CHECK_SESSION,
    DRAIN_WRITES,
    END_SESSION,
    RECONCILE,
    RECORD_OWNER,
    RESYNC,
    SWEEP,
    WRITE_CALL_MESSAGE,
)
from worker.core.binding import call_of_room
from worker.core.events import HmsEvent, StreamEvent, cid_of_room
from worker.core.upstream import Retry as UpstreamRetry
from worker.core.upstream import UpstreamError, redis_retry_delay, retry_delay
from worker.jobs.runtimes import RuntimeTask
from worker.logs import fields
from worker.ops import counters
from worker.steps import messages, owners, sessions, sync, writes
from worker.steps import resync as resyncs
from worker.steps import sweep as sweeps
from worker.steps.runtime import Runtime, acting_for
from worker.store.keys import REDELIVERIES_PREFIX, RETRY_WAIT_PREFIX

log = logging.getLogger("callsync.tasks")


def run_step(task: RuntimeTask, step: Callable[..., object], *args: Any) -> None:
    """Run one step under docs/behaviour.md, rule 7 (wait, back off, or dead-letter); count and log its outcome."""
    rt = task.runtime
    started = time.perf_counter()
    outcome, retry_in = "error", None
    failure: list[str] = []
    try:
        outcome = _attempt(rt, task, step, args, failure)
    except Retry as retry:
        outcome, retry_in = "retry", retry.when
        raise
    except Exception as error:
        failure.append(type(error).__name__)
        raise
    finally:
        seconds = time.perf_counter() - started
        labels = {"task": task.name, "outcome": outcome}
        rt.tally.inc(counters.TASK_RUNS, labels)
        rt.tally.observe(counters.TASK_DURATION, labels, seconds)
        level = logging.INFO if outcome in ("success", "deferred") else logging.WARNING
        line = fields(
            task=task.name,
            task_id=task.request.id,
            outcome=outcome,
            attempt=task.request.retries + 1,
            duration_ms=round(seconds * 1000, 2),
            error=failure[0] if failure else None,
            retry_in=round(retry_in, 3) if isinstance(retry_in, int | float) else None,
            **ids_of(task.name, args),
        )
        log.log(level, "task %s %s", task.name, outcome, extra=line)


def _attempt(rt: Runtime, task: Task, step: Callable[..., object], args: tuple[Any, ...], failure: list[str]) -> str:
    """One attempt: returns its outcome or raises Celery's Retry; appends what failed to `failure`."""
    attempt = task.request.retries
    try:
        if (task.request.delivery_info or {}).get("redelivered") and _redelivered_too_often(rt, task, args):
            return "dead_letter"
        waiting = _wait_goes_on(rt, task, args) if attempt else None
        if waiting is not None:
            return waiting
        with acting_for(task.request.id):
            step(rt, *args)
    except sync.Deferred as later:
        # A busy channel lock (held for one reconcile; the Stream ceiling never defers: a write
        # waits in its endpoint's queue). Not a failure: a fresh message, so it does not spend
        # the retry budget. The step asks again when it runs, so a wait longer than a hop is simply asked for again then. Same
        # task id: a redelivered task that defers (its dead worker's channel lock) keeps its count.
        try:
            countdown = min(later.seconds, rt.settings.longest_countdown_seconds)
            task.apply_async(args=args, countdown=countdown, task_id=task.request.id)
        except Exception as unpublished:
            failure.append(f"not deferred: {type(unpublished).__name__}")
            return _unpublished(rt, task, args, f"{later}; its deferred run could not be published", unpublished, attempt + 1)
        return "deferred"
    except UpstreamError as error:
        failure.append(str(error))
        delay = retry_delay(error, attempt, random.random(), rt.settings.task_max_retries)
        if delay is None:
            _dead_letter(rt, task, args, str(error), attempt + 1)
            return "dead_letter"
        if error.retry is UpstreamRetry.AFTER:
            wait = {"api": error.api, "source": "upstream_429"}
            rt.tally.inc(counters.RATE_LIMIT_WAITS, wait)
            rt.tally.inc(counters.RATE_LIMIT_WAIT_SECONDS, wait, delay)
        return _retry(rt, task, args, error, str(error), delay, attempt + 1)
    except redis.RedisError as error:
        failure.append(f"redis: {type(error).__name__}")
        text = f"redis: {type(error).__name__}: {error}"
        delay = redis_retry_delay(attempt, random.random())
        if delay is None:
            _dead_letter(rt, task, args, text, attempt + 1)
            return "dead_letter"
        return _retry(rt, task, args, error, text, delay, attempts=attempt + 1)
    except Exception as error:  # a bug or a hostile-but-authenticated event: keep it, do not loop
        log.exception("%s failed", task.name, extra=fields(task=task.name, task_id=task.request.id))
        failure.append(type(error).__name__)
        _dead_letter(rt, task, args, f"{type(error).__name__}: {error}", attempt + 1)
        return "dead_letter"
    return "success"


# A task waiting on a countdown is held unacknowledged by a worker, and Redis hands it out
# again once it has been held CALLSYNC_VISIBILITY_TIMEOUT_SECONDS: each copy would then run,
# and a copy that defers itself again multiplies. So no
# countdown is longer than Settings.longest_countdown_seconds (half the timeout): a longer
# retry wait is a hop of that length, its end kept here under the task id (a retry keeps its
# id: RETRY_WAIT_PREFIX), and each hop is re-published until the wait is over, without spending a retry.
def _retry(rt: Runtime, task: Task, args: tuple[Any, ...], error: Exception, text: str, delay: float, attempts: int) -> str:
    """Publish the retry and raise Celery's Retry. A retry Celery cannot publish (the broker
    gone, a countdown it cannot encode) is a Reject without requeue there: the task would be
    acknowledged and lost, so it becomes a dead letter instead."""
    hop = rt.settings.longest_countdown_seconds
    try:
        if delay > hop:
            rt.redis.set(RETRY_WAIT_PREFIX + task.request.id, repr(rt.clock() + delay), ex=int(delay + 2 * hop) + 1)
        retry = task.retry(exc=error, countdown=min(delay, hop), throw=False)
    except Reject as rejected:
        cause = rejected.reason if isinstance(rejected.reason, BaseException) else rejected
        return _unpublished(rt, task, args, f"{text}; its retry could not be published", cause, attempts)
    except redis.RedisError as lost:  # the wait could not be kept: nor could its hops be served
        return _unpublished(rt, task, args, f"{text}; its retry could not be published", lost, attempts)
    raise retry


def _wait_goes_on(rt: Runtime, task: Task, args: tuple[Any, ...]) -> str | None:
    """None when this retry's wait is over (run it); otherwise publish the next hop (the same
    retry: same id, same count) and return this run's outcome."""
    key = RETRY_WAIT_PREFIX + task.request.id
    raw = rt.redis.get(key)
    left = float(raw) - rt.clock() if raw is not None else 0.0
    if left <= 0:
        if raw is not None:
            rt.redis.delete(key)
        return None
    countdown = min(left, rt.settings.longest_countdown_seconds)
    hop = task.signature_from_request(task.request, args, task.request.kwargs, countdown=countdown, retries=task.request.retries)
    try:
        hop.apply_async()
    except Exception as unpublished:
        why = f"waiting {left:.0f} s more before a retry; its next hop could not be published"
        return _unpublished(rt, task, args, why, unpublished, task.request.retries)
    return "deferred"


# Redis hands a task out again when its worker died holding it (task_acks_late): a task that
# kills its worker (memory, a crash in a C extension) would be handed out forever. kombu marks
# such a message `redelivered` (kombu/transport/redis.py, _do_restore_message); each run of
# one is counted under its task id (REDELIVERIES_PREFIX), and past CALLSYNC_MAX_REDELIVERIES it is a dead letter.
def _redelivered_too_often(rt: Runtime, task: Task, args: tuple[Any, ...]) -> bool:
    key = REDELIVERIES_PREFIX + task.request.id
    pipe = rt.redis.pipeline(transaction=False)
    pipe.incr(key)
    # Each redelivery comes a visibility timeout after the last: keep the count across all of them.
    pipe.expire(key, 2 * (rt.settings.max_redeliveries + 1) * rt.settings.visibility_timeout_seconds)
    count = int(pipe.execute()[0])
    if count <= rt.settings.max_redeliveries:
        return False
    why = f"redelivered {count} times: its worker died (or was stopped) each time it ran"
    _dead_letter(rt, task, args, why, count)
    return True


def _unpublished(rt: Runtime, task: Task, args: tuple[Any, ...], text: str, cause: BaseException, attempts: int) -> str:
    """Dead-letter a task whose next run could not be published."""
    _dead_letter(rt, task, args, f"{text} ({type(cause).__name__})", attempts)
    return "dead_letter"


def _dead_letter(rt: Runtime, task: Task, args: tuple[Any, ...], error: str, attempts: int) -> None:
    """Keep the task as a dead letter; if even that fails (Redis gone), give the message back to
    the broker (requeued, or redelivered after the visibility timeout): never a silent loss."""
    try:
        letter = rt.dead_letters.add(task.name, list(args), error, attempts, rt.clock(), task.request.id)
    except Exception as lost:
        log.error("%s could not be dead-lettered (%s); given back to the broker", task.name, type(lost).__name__)
        raise Reject(lost, requeue=True) from None
    rt.tally.inc(counters.DEAD_LETTERED, {"task": task.name})
    log.error(
        "%s dead-lettered as %s after %d attempt(s)",
        task.name,
        letter.id,
        attempts,
        extra=fields(task=task.name, dead_letter_id=letter.id, attempts=attempts, error=letter.error, **ids_of(task.name, args)),
    )


def ids_of(task_name: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """The delivery, channel, room and session ids a task's arguments carry, for its log line."""
    first = args[0] if args else None
    if task_name == APPLY_STREAM_EVENT and isinstance(first, dict):
        fields_ = first.get("fields") or {}
        return {"event_type": first.get("type"), "cid": first.get("cid"), "call_id": fields_.get("call_id")}
    if task_name == APPLY_HMS_EVENT and isinstance(first, dict):
        return {
            "delivery_id": first.get("id"),
            "event_type": first.get("type"),
            "room_id": first.get("room_id"),
            "session_id": first.get("session_id"),
            "call_id": call_of_room(first["room_name"]) if isinstance(first.get("room_name"), str) else None,
        }
    if task_name == RECONCILE:
        return {"cid": first}
    if task_name in (END_SESSION, CHECK_SESSION) and len(args) > 1:
        return {"call_id": first, "session_id": args[1], "cid": cid_of_room(str(first))}
    if task_name == WRITE_CALL_MESSAGE:
        return {"session_id": first}
    if task_name == RECORD_OWNER and len(args) > 1:
        return {"call_id": first, "cid": args[1]}
    if task_name == DRAIN_WRITES:
        return {"endpoint": first}
    return {}


# callsync's own policy bounds the retries (core.upstream), then dead-letters: Celery's default
# cap (3) would fail the fourth retry, the task acknowledged and lost.
task = functools.partial(shared_task, bind=True, max_retries=None, base=RuntimeTask)


def _stream(rt: Runtime, raw: dict[str, Any]) -> None:
    sync.apply_stream_event(rt, StreamEvent.from_json(raw))


def _hms(rt: Runtime, raw: dict[str, Any]) -> None:
    sync.apply_hms_event(rt, HmsEvent.from_json(raw))


@task(name=APPLY_STREAM_EVENT)
def apply_stream_event(self: RuntimeTask, raw: dict[str, Any]) -> None:
    run_step(self, _stream, raw)


@task(name=APPLY_HMS_EVENT)
def apply_hms_event(self: RuntimeTask, raw: dict[str, Any]) -> None:
    run_step(self, _hms, raw)


@task(name=RECONCILE)
def reconcile_channel(self: RuntimeTask, cid: str) -> None:
    run_step(self, sync.reconcile_channel, cid)


@task(name=END_SESSION)
def end_session(self: RuntimeTask, call_id: str, session_id: str, reason: str) -> None:
    run_step(self, sessions.end_session, call_id, session_id, reason)


@task(name=CHECK_SESSION)
def check_session(self: RuntimeTask, call_id: str, session_id: str) -> None:
    run_step(self, sessions.check_session, call_id, session_id)


@task(name=SWEEP)
def sweep(self: Task) -> None:
    run_step(self, sweeps.sweep)


@task(name=RECORD_OWNER)
def record_owner(self: RuntimeTask, call_id: str, cid: str) -> None:
    run_step(self, owners.record_owner, call_id, cid)


@task(name=WRITE_CALL_MESSAGE)
def write_call_message(self: RuntimeTask, session_id: str) -> None:
    run_step(self, messages.write_call_message, session_id)


@task(name=DRAIN_WRITES)
def drain_writes(self: RuntimeTask, endpoint: str) -> None:
    run_step(self, writes.drain, endpoint)


@task(name=RESYNC)
def resync(self: RuntimeTask, full: bool = False, goes_on: bool = False) -> None:
    run_step(self, resyncs.resync, full, goes_on)
