"""A worker process's Runtime for a Celery app, built on first use (after any fork)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, signals

from worker.settings import Settings
from worker.steps.messages import upsert_message_user
from worker.steps.runtime import Runtime, build_runtime
from worker.store.enqueue import QUEUE
from worker.store.migrate import ensure_schema

log = logging.getLogger("callsync.worker")
_runtimes: dict[tuple[int, int], Runtime] = {}
_runtimes_lock = threading.Lock()


def runtime_for(app: Celery) -> Runtime:
    """This process's Runtime for `app`, built on first use (after any fork)."""
    key = (id(app), os.getpid())
    with _runtimes_lock:  # the threads pool asks from several threads at once
        return _runtimes.get(key) or _build_runtime(app, key)


def _build_runtime(app: Celery, key: tuple[int, int]) -> Runtime:
    settings: Settings = app.callsync_settings  # type: ignore[attr-defined]

    def publish(task: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        app.send_task(task, args=args, countdown=countdown, queue=QUEUE)

    runtime = build_runtime(settings, publish)
    ensure_schema(runtime.redis)  # once per process: what an earlier release wrote, converted
    _runtimes[key] = runtime
    runtime.tally.flush_every(runtime.redis)  # counters reach Redis once a second
    runtime.closers.append(lambda: runtime.tally.stop(runtime.redis))
    return runtime


@signals.worker_ready.connect
def _upsert_message_user(sender: Any = None, **_: Any) -> None:
    """At worker start, the user call messages come from (rule 13, with CALLSYNC_CALL_MESSAGES).
    A failure is logged, not fatal: a send by an unknown user fails and is retried (rule 7),
    and the next worker start upserts again."""
    app = getattr(sender, "app", None)
    if app is None or not getattr(app, "callsync_settings", None) or not app.callsync_settings.call_messages:
        return
    try:
        upsert_message_user(runtime_for(app))
    except Exception as error:
        log.warning("could not upsert the call message user: %s", type(error).__name__)


@signals.worker_shutdown.connect  # the threads and solo pools
@signals.worker_process_shutdown.connect  # each process of the prefork pool
def _close_runtimes(**_: Any) -> None:
    for key in [key for key in _runtimes if key[1] == os.getpid()]:
        _runtimes.pop(key).close()
