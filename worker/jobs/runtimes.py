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
    try:  # the sender of call messages (rule 13); a failure here is retried by the next worker start
        upsert_message_user(runtime)
    except Exception as error:  # a send by an unknown user then fails and is retried (rule 7)
        log.warning("could not upsert the call message user: %s", type(error).__name__)
    return runtime


@signals.worker_shutdown.connect  # the threads and solo pools
@signals.worker_process_shutdown.connect  # each process of the prefork pool
def _close_runtimes(**_: Any) -> None:
    for key in [key for key in _runtimes if key[1] == os.getpid()]:
        _runtimes.pop(key).close()
