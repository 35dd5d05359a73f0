"""The Celery app, built by a factory from Settings (nothing is configured at import).

It imports no step: the receiver builds one to encode its messages (worker.store.enqueue),
and a worker process builds its Runtime on first use (worker.jobs.runtimes.RuntimeTask).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from worker.connect import settings_client
from worker.core.actions import RESYNC, SWEEP
from worker.jobs import broker
from worker.ops.heartbeat import Heartbeat
from worker.settings import Settings
from worker.store.enqueue import QUEUE, route
from worker.store.keys import BEAT_PREFIX

REDBEAT_REDIS_OPTIONS = {"health_check_interval": 30, "socket_connect_timeout": 5, "socket_timeout": 10}


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """Redelivery of tasks a worker took and never acknowledged (it was killed).

    Redis redelivers such a task `CALLSYNC_VISIBILITY_TIMEOUT_SECONDS` after the worker
    took it: that bounds how long a killed worker's tasks wait for another worker. A task
    waiting on a countdown (backoff, a 429's wait, the stale-flag grace) is also held
    unacknowledged, so no countdown is longer than half the timeout: longer waits hop
    (worker/jobs/tasks.py `_retry`). Workers look for such tasks every tenth of the timeout
    (at most every 10 s); kombu's default, every 100 s, would add up to 100 s to a short timeout.

    A look holds kombu's `unacked_mutex` for milliseconds, but a worker killed or a Redis
    restarted while it is held leaves the mutex behind until it expires: kombu's 300 s would
    stop every redelivery for five minutes. Here it expires after a look's interval (at least
    5 s). A look that outlasts it is harmless: each message is restored in its own WATCH
    transaction, so two looks cannot restore one message twice.

    With REDIS_URL's Sentinel form, also which primary to ask the Sentinels for and how to log
    in to them (`broker.sentinel_transport_options`).
    """
    timeout = settings.visibility_timeout_seconds
    interval = max(1, min(10, timeout // 10))
    sentinel = settings.sentinel
    return {
        "visibility_timeout": timeout,
        "unacked_restore_interval": interval,
        "unacked_restore_throttle": 1,  # one ZRANGE under kombu's mutex per look
        "unacked_mutex_expire": max(5, interval),
        **(broker.sentinel_transport_options(sentinel) if sentinel else {}),
    }


def create_celery(settings: Settings) -> Celery:
    app = Celery("callsync", broker=broker.broker_url(settings.redis_url), include=["worker.jobs.tasks"])
    app.conf.update(
        broker_transport=broker.transport_for(settings.redis_url),
        broker_use_ssl=broker.ssl_options(settings.redis_url),
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_expires=None,  # no result backend: no daily backend_cleanup entry in the schedule
        task_default_queue=QUEUE,
        task_routes=(route,),  # every publish and retry: worker/store/enqueue.py `queue_of`
        # Every task is idempotent (level-triggered), so a task lost with its worker is
        # re-run: acknowledge after running, requeue when the worker process dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=4,
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        # Three events per task cost a worker about a tenth of its CPU. Flower turns them on
        # while it watches (its --enable-events, on by default); CALLSYNC_TASK_EVENTS keeps
        # them on for other consumers (`celery events`, exporters).
        worker_send_task_events=settings.task_events,
        worker_hijack_root_logger=False,
        beat_schedule={
            "sweep": {"task": SWEEP, "schedule": float(settings.sweep_interval_seconds), "options": {"queue": QUEUE}},
            # docs/behaviour.md, rule 12: a run starts if none is under way (full when one is due).
            "resync": {"task": RESYNC, "schedule": float(settings.resync_interval_seconds), "options": {"queue": QUEUE}},
        },
        # RedBeat keeps the schedule in Redis and holds a lock there: any number of beat
        # processes may run, one schedules; a standby takes over within the lock timeout.
        # Its Redis URL is set by the beat role alone (`beat_settings`): `celery inspect conf`
        # and Flower show a worker's configuration, masking only the broker URL's password.
        beat_scheduler="worker.jobs.beat:SteadyRedBeatScheduler",
        redbeat_redis_options=REDBEAT_REDIS_OPTIONS,
        redbeat_key_prefix=BEAT_PREFIX,
        redbeat_lock_timeout=30,
        beat_max_loop_interval=5,
    )
    app.steps["consumer"].add(Heartbeat)  # `callsync status` sees workers without a broadcast
    app.callsync_settings = settings  # type: ignore[attr-defined]
    return app


def beat_settings(app: Celery, settings: Settings) -> None:
    """What only the beat role needs: RedBeat's Redis, a client made as every role's
    (worker/connect.py), so that the schedule and its lock follow a Sentinel failover too.

    RedBeat takes a client already set on the app as its connection (redbeat/schedulers.py
    `get_redis`: `app.redbeat_redis`), and reads replies as str (its own clients'
    `decode_responses=True`). Its URL is then only shown in beat's banner: the broker's form,
    which kombu masks (it cannot parse the Sentinel form's host list).
    """
    from redbeat.schedulers import REDBEAT_REDIS_KEY  # the beat role's import alone

    app.conf.redbeat_redis_url = broker.broker_url(settings.redis_url)
    client = settings_client(settings, decode_responses=True, **REDBEAT_REDIS_OPTIONS)
    setattr(app, REDBEAT_REDIS_KEY, client)
