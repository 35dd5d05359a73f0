"""Celery tasks: short adapters from a message to a `worker.sync` step, with the retry policy."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import redis
from celery import Task, shared_task

from . import sweeps, sync
from .celery_app import runtime_for
from .core.events import HmsEvent, StreamEvent
from .core.upstream import UpstreamError, backoff_seconds, retry_delay
from .runtime import Runtime

log = logging.getLogger("callsync.tasks")
REDIS_RETRIES = 20


def run_step(task: Task, step: Callable[..., object], *args: Any) -> None:
    """Run one step under CONTRACT §4 rule 7: wait, back off, or dead-letter."""
    rt: Runtime = runtime_for(task.app)
    attempt = task.request.retries
    try:
        step(rt, *args)
    except sync.Later as later:
        # Not a failure: a fresh message, so it does not spend the retry budget.
        task.apply_async(args=args, countdown=later.seconds)
    except UpstreamError as error:
        delay = retry_delay(error, attempt, random.random())
        if delay is None:
            _dead_letter(rt, task, args, str(error), attempt + 1)
            return
        log.warning("%s: %s; retry %d in %.1fs", task.name, error, attempt + 1, delay)
        raise task.retry(countdown=delay, max_retries=None) from None
    except redis.RedisError as error:
        if attempt >= REDIS_RETRIES:
            raise
        raise task.retry(countdown=backoff_seconds(attempt, random.random(), cap=60), max_retries=None) from error
    except Exception as error:  # a bug or a hostile-but-authenticated event: keep it, do not loop
        log.exception("%s failed", task.name)
        _dead_letter(rt, task, args, f"{type(error).__name__}: {error}", attempt + 1)


def _dead_letter(rt: Runtime, task: Task, args: tuple[Any, ...], error: str, attempts: int) -> None:
    letter = rt.dead_letters.add(task.name, list(args), error, attempts, rt.clock())
    log.error("%s dead-lettered as %s after %d attempt(s): %s", task.name, letter.id, attempts, error)


def _stream(rt: Runtime, raw: dict[str, Any]) -> None:
    sync.apply_stream_event(rt, StreamEvent.from_json(raw))


def _hms(rt: Runtime, raw: dict[str, Any]) -> None:
    sync.apply_hms_event(rt, HmsEvent.from_json(raw))


@shared_task(bind=True, name="callsync.apply_stream_event")
def apply_stream_event(self: Task, raw: dict[str, Any]) -> None:
    run_step(self, _stream, raw)


@shared_task(bind=True, name="callsync.apply_hms_event")
def apply_hms_event(self: Task, raw: dict[str, Any]) -> None:
    run_step(self, _hms, raw)


@shared_task(bind=True, name=sync.RECONCILE)
def reconcile_channel(self: Task, cid: str) -> None:
    run_step(self, sync.reconcile_channel, cid)


@shared_task(bind=True, name=sync.END_SESSION)
def end_session(self: Task, call_id: str, session_id: str, reason: str) -> None:
    run_step(self, sync.end_session, call_id, session_id, reason)


@shared_task(bind=True, name=sync.CHECK_SESSION)
def check_session(self: Task, call_id: str, session_id: str) -> None:
    run_step(self, sync.check_session, call_id, session_id)


@shared_task(bind=True, name="callsync.sweep")
def sweep(self: Task) -> None:
    run_step(self, sweeps.sweep)
