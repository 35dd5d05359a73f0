"""`callsync resync`: read the truth back from both platforms now, and say what it found and changed
(docs/behaviour.md, rule 12; docs/operations.md, "Resync")."""

from __future__ import annotations

import json
from typing import Any

from worker.settings import Settings


def run_resync(settings: Settings, full: bool, as_json: bool) -> tuple[int, str]:
    """One whole resync in this process (the reconciles it schedules go to the workers); the exit
    code and what to print."""
    from worker.jobs.app import create_celery
    from worker.steps import resync
    from worker.steps.runtime import build_runtime
    from worker.store.enqueue import send
    from worker.store.resync import load_run

    app = create_celery(settings)

    def publish(task: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        send(app, task, args, countdown)

    rt = build_runtime(settings, publish)
    try:
        summary = resync.resync(rt, full=full, slice_seconds=None)
        rt.tally.flush(rt.redis)
        if summary is None:
            running = load_run(rt.redis) or {}
            which = f"{running.get('id', '?')}, phase {running.get('phase', '?')}"
            return 1, f"another process is running a resync ({which}): try again later"
    finally:
        rt.close()
    return 0, json.dumps(summary, indent=2) if as_json else render(summary)


def render(summary: dict[str, Any]) -> str:
    return (
        f"resync {summary['id']} ({summary['mode']}) took {summary['duration_seconds']:.1f} s\n"
        f"found:   {summary['sessions_listed']} live session(s) in 100ms, "
        f"{summary['channels_read']} channel(s) read from Stream\n"
        f"changed: {summary['adopted']} session(s) adopted, {summary['closed']} recorded closed (confirmed with 100ms), "
        f"{summary['recorded']} channel(s) showing something callsync did not know\n"
        f"then:    {summary['reconciles']} reconcile(s) scheduled (the workers write what is wrong), "
        f"{summary['skipped']} channel(s) skipped (a write of callsync's in flight), {summary['unchanged']} as recorded\n"
        f"calls:   {summary['stream_calls']} to Stream, {summary['hms_calls']} to 100ms"
    )
