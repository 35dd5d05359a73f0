"""The Celery tasks' retry settings (worker/tasks.py)."""

from __future__ import annotations

from celery.exceptions import Retry

from worker import tasks
from worker.celery_app import create_celery
from worker.settings import load_settings


def test_celery_never_caps_the_retries_callsync_allows():
    # Celery's default cap (3) failed the fourth retry of a task: acknowledged and lost, neither
    # retried nor dead-lettered (bench/chaos.py). callsync's own policy bounds the retries.
    app = create_celery(load_settings({}))
    names = [name for name in app.tasks if name.startswith("callsync.")]
    assert len(names) == 6
    assert all(app.tasks[name].max_retries is None for name in names)


def test_a_tenth_retry_is_still_a_retry():
    app = create_celery(load_settings({}))
    task = app.tasks["callsync.reconcile_channel"]
    task.push_request(retries=9, called_directly=False, is_eager=True, id="t", args=["messaging:x"], kwargs={})
    try:
        retry = task.retry(exc=RuntimeError("upstream 503"), countdown=1, throw=False)
    finally:
        task.pop_request()
    assert isinstance(retry, Retry)
    assert tasks.REDIS_RETRIES > 3
