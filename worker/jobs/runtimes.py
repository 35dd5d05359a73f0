"""A worker process's Runtime for a Celery app, built on first use (after any fork)."""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery, signals

from worker.settings import Settings
from worker.steps.runtime import Runtime, build_runtime
from worker.store.enqueue import QUEUE
from worker.store.migrate import ensure_schema

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


@signals.worker_shutdown.connect  # the threads and solo pools
@signals.worker_process_shutdown.connect  # each process of the prefork pool
def _close_runtimes(**_: Any) -> None:
    for key in [key for key in _runtimes if key[1] == os.getpid()]:
        _runtimes.pop(key).close()
