"""The base of callsync's tasks: `self.runtime`, this process's Runtime, built on first use.

Celery's "Instantiation" recipe (a task instance is made once per process and keeps what
its runs share) with one change: the Runtime is kept on the app, so the tasks of one app
share one (one Redis pool, one pair of platform clients, one counter flusher a process). It
is checked by pid: a prefork child inherits its parent's app and builds its own, as a
client from before a fork would share the parent's sockets.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, Task, current_app, signals

from worker.settings import Settings
from worker.steps.messages import upsert_message_user
from worker.steps.runtime import Runtime, build_runtime
from worker.store.enqueue import send
from worker.store.migrate import ensure_schema

log = logging.getLogger("callsync.worker")
_building = threading.Lock()  # the threads pool asks from several threads at once
HELD = "callsync_runtime"  # the app's attribute: (pid, Runtime) of the process that built it


class RuntimeTask(Task):  # type: ignore[misc]
    """A task with `self.runtime` (the base of every task in worker/jobs/tasks.py)."""

    @property
    def runtime(self) -> Runtime:
        return runtime_of(self.app)


def runtime_of(app: Celery) -> Runtime:
    """This process's Runtime for `app`, built on first use (again in a forked child)."""
    pid = os.getpid()
    with _building:
        held: tuple[int, Runtime] | None = getattr(app, HELD, None)
        if held is None or held[0] != pid:
            held = (pid, _build_runtime(app))
            setattr(app, HELD, held)
        return held[1]


def _build_runtime(app: Celery) -> Runtime:
    settings: Settings = app.callsync_settings  # type: ignore[attr-defined]

    def publish(task: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        send(app, task, args, countdown)

    runtime = build_runtime(settings, publish)
    ensure_schema(runtime.redis)  # once per process: what an earlier release wrote, converted
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
        upsert_message_user(runtime_of(app))
    except Exception as error:
        log.warning("could not upsert the call message user: %s", type(error).__name__)


@signals.worker_shutdown.connect  # the threads and solo pools: the sender is the worker
@signals.worker_process_shutdown.connect  # each process of the prefork pool: its app is the current one
def _close_runtime(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None) or current_app._get_current_object()
    held: tuple[int, Runtime] | None = getattr(app, HELD, None)
    if held is not None and held[0] == os.getpid():
        delattr(app, HELD)
        held[1].close()
