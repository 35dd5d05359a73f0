"""Workers say they are alive in Redis, so `status` and `/metrics` need no broadcast.

`celery inspect ping` waits for every worker to answer a broadcast; a worker that is busy
or gone just makes it slow. Instead each worker's consumer stamps its hostname in a sorted
set every HEARTBEAT_SECONDS; a worker is "seen" while its stamp is younger than SEEN_SECONDS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, cast

import redis
from celery import bootsteps

from worker.connect import settings_client
from worker.store.keys import WORKER_INFO, WORKERS

HEARTBEAT_SECONDS = 10.0
SEEN_SECONDS = 3 * HEARTBEAT_SECONDS
FORGET_SECONDS = 86400.0

log = logging.getLogger("callsync.heartbeat")


def record_heartbeat(client: redis.Redis, hostname: str, info: dict[str, Any], now: float) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.zadd(WORKERS, {hostname: now})
    pipe.hset(WORKER_INFO, hostname, json.dumps(info))
    stale = cast(list[bytes], client.zrangebyscore(WORKERS, "-inf", now - FORGET_SECONDS))
    if stale:
        pipe.zrem(WORKERS, *stale)
        pipe.hdel(WORKER_INFO, *stale)
    pipe.execute()


def forget(client: redis.Redis, hostname: str) -> None:
    pipe = client.pipeline(transaction=False)
    pipe.zrem(WORKERS, hostname)
    pipe.hdel(WORKER_INFO, hostname)
    pipe.execute()


def workers_seen(client: redis.Redis, now: float) -> list[dict[str, Any]]:
    """Workers whose last heartbeat is younger than SEEN_SECONDS, with what they reported."""
    seen = cast(list[tuple[bytes, float]], client.zrangebyscore(WORKERS, now - SEEN_SECONDS, "+inf", withscores=True))
    infos = client.hmget(WORKER_INFO, [name for name, _ in seen]) if seen else []
    out = []
    for (name, at), raw in zip(seen, infos, strict=True):
        info = json.loads(raw) if raw else {}
        out.append({"hostname": name.decode(), "last_seen_age_seconds": round(now - at, 1), **info})
    return out


class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    """A consumer step: stamp this worker in Redis on the consumer's timer; forget it on stop."""

    requires = {"celery.worker.consumer.connection:Connection"}

    def __init__(self, parent: Any, **kwargs: Any):
        super().__init__(parent, **kwargs)
        self._tref: Any = None
        self._client: redis.Redis | None = None

    def start(self, consumer: Any) -> None:
        settings = consumer.app.callsync_settings
        self._client = settings_client(settings, socket_timeout=2)
        info = {
            "pid": os.getpid(),
            "concurrency": consumer.controller.concurrency,
            "started_at": time.time(),
        }
        hostname = consumer.hostname

        def tick() -> None:
            try:
                assert self._client is not None
                record_heartbeat(self._client, hostname, info, time.time())
            except redis.RedisError as exc:  # the broker connection has its own recovery
                log.warning("heartbeat not recorded: %s", type(exc).__name__)

        tick()
        self._tref = consumer.timer.call_repeatedly(HEARTBEAT_SECONDS, tick, priority=10)

    def stop(self, consumer: Any) -> None:
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None
        if self._client is not None:
            with contextlib.suppress(redis.RedisError):
                forget(self._client, consumer.hostname)
            self._client.close()
            self._client = None

    shutdown = stop
