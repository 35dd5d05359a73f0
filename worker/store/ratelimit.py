"""A sliding-log ceiling shared by every worker: the resync's reads (worker/steps/resync.py).

Writes (channel updates, call messages) are paced by the fair write queue instead
(worker/store/writequeue.py, docs/behaviour.md rule 8)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from worker.settings import Rate
from worker.store import scripts
from worker.store.scripts import Script

# A sliding log of updates in a sorted set, on the Redis clock so every host agrees. The
# platform counts a request when it arrives, some time between our grant and the answer,
# so a grant is logged as "in flight" (scored HOLD seconds ahead: it fills the window)
# until `release` logs the time the answer came. Then no window of `period` seconds at
# the platform can hold more than `count` updates, however long each request takes.
HOLD = 30.0  # longer than an update's timeout; a worker killed mid-request frees its grant after this
_ACQUIRE = Script.named("rate_acquire")
_RELEASE = Script.named("rate_release")


@dataclass
class Grant:
    """One ask for an update: `wait` seconds to wait (0: granted), and whether its release is done."""

    token: str
    wait: float
    released: bool = False


class RateLimiter:
    def __init__(self, client: redis.Redis, key: str, rate: Rate):
        self._client, self._key, self._rate = client, key, rate

    def acquire(self, token: str) -> float:
        """Take one grant now and return 0, or return the seconds to wait before asking again."""
        wait = _ACQUIRE(self._client, [self._key], [self._rate.count, self._rate.period, token, HOLD])
        return max(float(wait), 0.0)

    def release_call(self, token: str) -> scripts.ScriptCall:
        """`release` as a step for `scripts.run` with others (then mark the grant released)."""
        return (_RELEASE, [self._key], [token])

    def release(self, token: str) -> None:
        """The granted request has been answered (or failed): log it at this time."""
        scripts.run(self._client, [self.release_call(token)])

    @contextlib.contextmanager
    def update(self) -> Iterator[Grant]:
        """Ask for a grant; yields it (wait 0: granted, and released on exit unless already)."""
        grant = Grant(str(uuid.uuid4()), 0.0)
        grant.wait = self.acquire(grant.token)
        try:
            yield grant
        finally:
            if grant.wait == 0 and not grant.released:
                self.release(grant.token)
