"""The beat role's scheduler: RedBeat, made to outlive a Redis restart.

RedBeat extends its lock and reads the schedule from Redis in every tick, and Celery beat
exits on any exception a tick raises, so a Redis restart would take every beat process down
at once. Here a tick that meets a Redis error logs it and comes back
shortly, and a beat that lost or never got the lock (it expired during the outage, or
RedBeat's startup acquire failed) tries to take it again instead of crashing or scheduling
without it.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis

from worker.core.actions import Resync
from worker.store.enqueue import send
from worker.store.resync import claim_epoch

log = logging.getLogger("callsync.beat")
RETRY_SECONDS = 2.0  # how soon a beat looks at Redis again after an error


class SteadyRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat whose tick survives Redis errors and re-takes a lost lock."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            if self.lock_key and not self._hold_lock():
                return float(self.max_interval)  # a standby: another beat schedules
            self._check_epoch()
            return float(super().tick(*args, **kwargs))
        except redis.RedisError as exc:
            log.warning("beat: Redis unavailable (%s); trying again in %.0f s", type(exc).__name__, RETRY_SECONDS)
            return RETRY_SECONDS

    def _check_epoch(self) -> None:
        """A store without callsync's epoch marker is new or lost its data (FLUSHALL, a failover
        that lost it): the schedule RedBeat kept there is gone too, so it is written again, and a
        full resync runs at once (docs/behaviour.md, rule 12). Only the caller that writes the
        marker sees it missing: one full resync, however many beats and restarts."""
        if not claim_epoch(get_redis(self.app)):
            return
        log.warning("beat: callsync's Redis holds no epoch marker (first start, or its data was lost): full resync now")
        self.setup_schedule()
        action = Resync(full=True)
        send(self.app, action.task, action.args())

    def _hold_lock(self) -> bool:
        """Keep the lock if still ours, else try once to take it (never blocks)."""
        lock: Any = getattr(self, "lock", None)
        if lock is None:
            client = get_redis(self.app)
            lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)  # as RedBeat's own lock
            self.lock = lock
        try:
            lock.extend(int(self.lock_timeout))
            return True
        except redis.exceptions.LockError:  # not ours (any more): expired during an outage, or never taken
            taken = bool(lock.acquire(blocking=False))
            if taken:
                log.info("beat: took the scheduling lock")
            return taken

    def close(self) -> None:
        try:
            super().close()
        except redis.RedisError as exc:  # shutting down while Redis is away: the lock expires by itself
            log.warning("beat: could not release the lock (%s)", type(exc).__name__)
