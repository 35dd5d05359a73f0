"""Writes at an endpoint's ceiling: the registry of endpoints and the drain (docs/behaviour.md, rule 8).

A step that must write offers its key to the endpoint's queue (worker/store/writequeue.py):
with the line empty and the pace allowing, it writes at once; otherwise the key waits in line
(once, in the order keys became wrong) and one drain task is published. The drain holds the
endpoint's turn, sleeps inside the task until each slot (one sleeper, not a storm of
re-published tasks), takes the oldest key and runs its writer fresh: the writer loads what is
recorded now and writes once, or not at all (a call that opened and closed while its channel
waited costs nothing). After a bounded slice it gives the turn back and, if keys are left,
publishes itself again.

An endpoint is a name, a ceiling from the settings and a writer, each with its own line, pace
and pauses: `channels` (Stream channel updates, keyed by cid, at CALLSYNC_STREAM_UPDATE_RATE) is
registered by worker/steps/sync.py, `messages` (Stream message sends and updates, keyed by call
session id, at CALLSYNC_STREAM_MESSAGE_RATE) by worker/steps/messages.py.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import redis

from worker.core.actions import DrainWrites
from worker.core.upstream import UpstreamError, retry_delay
from worker.logs import fields
from worker.ops import counters
from worker.settings import Rate, Settings
from worker.steps.runtime import Runtime, acting_for, lock_token
from worker.store.writequeue import LEASE_SECONDS, WriteQueue

log = logging.getLogger("callsync.writes")

SLICE_SECONDS = 10.0  # a drain's turn at most (and half the countdown limit): then it re-publishes


@dataclass(frozen=True)
class Turn:
    """The drainer's hold on an endpoint's turn, handed to the writer it runs."""

    queue: WriteQueue
    token: str


class WriteLater(Exception):
    """The writer could not write the key now (its channel busy, the endpoint paused): back in
    line in its own place, not taken before `not_before`."""

    def __init__(self, not_before: float, why: str):
        super().__init__(why)
        self.not_before = not_before


@dataclass(frozen=True)
class Endpoint:
    """`write(rt, key, turn)` writes the key's latest recorded state (raises WriteLater or
    UpstreamError); `task` and its arguments `(key,)` are what a dead letter replays. The
    `source` label of callsync_rate_limit_wait(s|_seconds)_total for the drain's sleeps to its
    slot (`ceiling_source`) and a 429's pause (`throttled_source`). `takes_back`: the writer's
    locks are the queue entry's (`entry_token`), so the next turn takes back at once what a
    killed drainer held; False keeps them the drain task's, and a killed drainer's key waits out
    its lock (an endpoint whose late write must never overtake a newer one)."""

    name: str
    rate: Callable[[Settings], Rate]
    write: Callable[[Runtime, str, Turn], None]
    task: str
    ceiling_source: str = "ceiling"
    throttled_source: str = "upstream_429"
    takes_back: bool = True

    def queue(self, rt: Runtime) -> WriteQueue:
        rate = self.rate(rt.settings)
        return WriteQueue(rt.redis, self.name, rate.count, rate.period)


ENDPOINTS: dict[str, Endpoint] = {}


def register(endpoint: Endpoint) -> Endpoint:
    ENDPOINTS[endpoint.name] = endpoint
    return endpoint


def offer(rt: Runtime, endpoint: Endpoint, key: str, now: float, direct: bool = True) -> bool:
    """The key needs a write: True when the slot is taken (write now), else it waits in line
    and a drain is published unless one is live or scheduled."""
    offered = endpoint.queue(rt).offer(key, now, now, direct)
    if offered.publish:
        rt.schedule(DrainWrites(endpoint.name))
    return offered.write_now


def wait_for_slot(rt: Runtime, turn: Turn) -> None:
    """The turn holder sleeps until the write's slot is its (a direct write may have taken the
    one it waited for, once the line ran empty)."""
    while (wait := turn.queue.slot(turn.token, rt.clock())) > 0:
        _nap(rt, turn.queue.endpoint, min(wait, LEASE_SECONDS / 3))


def kick(rt: Runtime) -> int:
    """Publish a drain for each endpoint whose keys wait with no live turn (a killed drainer's
    lapsed); the sweep runs this. Returns how many were published."""
    kicked = 0
    for endpoint in ENDPOINTS.values():
        if endpoint.queue(rt).kick():
            rt.schedule(DrainWrites(endpoint.name))
            kicked += 1
    return kicked


def drain(rt: Runtime, name: str) -> None:
    """One turn of `name`'s queue: at most a slice, then the turn is given back."""
    endpoint = ENDPOINTS[name]
    queue = endpoint.queue(rt)
    token = lock_token()  # the task's id: its redelivery takes its own turn back at once
    if not queue.take_turn(token):
        return  # another drainer holds it and publishes again if it leaves keys behind
    ends = rt.clock() + min(SLICE_SECONDS, rt.settings.longest_countdown_seconds / 2)
    later = 0.0
    try:
        while True:
            step = queue.next(token, rt.clock())
            if step.kind in ("empty", "lost"):
                return
            if step.kind == "wait":
                left = ends - rt.clock()
                if left <= 0:
                    later = step.seconds
                    break
                _nap(rt, name, min(step.seconds, left, LEASE_SECONDS / 3))
                continue
            with acting_for(entry_token(name, step.key, step.score) if endpoint.takes_back else token):
                _write_one(rt, endpoint, queue, Turn(queue, token), step.key, step.attempts)
            if rt.clock() >= ends:
                break
    except BaseException:
        # The key being written stays in `processing`: the next turn puts it back in line.
        if queue.release(token):
            rt.schedule(DrainWrites(name))
        raise
    if queue.release(token):
        rt.schedule(DrainWrites(name), countdown=min(later, rt.settings.longest_countdown_seconds) or None)


def entry_token(endpoint: str, key: str, first_wrong: float) -> str:
    """Whose locks a drained write takes (an endpoint that `takes_back`): the queue entry's,
    not the drain task's. An entry keeps its first-wrong score through a backoff and through a
    drainer's death (the next turn puts it back in its place), so whichever drainer writes it
    next takes back at once a lock a killed drainer left behind, instead of waiting out the
    lock's time. Two drainers write one entry at once only if one stalled past its turn's lease
    (LEASE_SECONDS after its last renewal, longer than a write's deadline): then its late write
    is one more write of a level-triggered state, which the next reconcile repairs. Other
    writers (a reconcile task, a direct write) lock with their own tokens."""
    return f"wq:{endpoint}:{key}:{first_wrong!r}"


def _write_one(rt: Runtime, endpoint: Endpoint, queue: WriteQueue, turn: Turn, key: str, attempts: int) -> None:
    """Run the key's writer under rule 7: a 5xx or a timeout backs off in its place, then is a
    dead letter; another 4xx is a dead letter at once (a 429 pauses the endpoint: WriteLater)."""
    try:
        endpoint.write(rt, key, turn)
    except WriteLater as wait:
        queue.again(key, wait.not_before, attempts)
    except UpstreamError as error:
        delay = retry_delay(error, attempts, random.random(), rt.settings.task_max_retries)
        if delay is None:
            _dead_letter(rt, endpoint, key, str(error), attempts + 1)
            queue.done(key)
        else:
            queue.again(key, rt.clock() + delay, attempts + 1)
    except redis.RedisError:
        raise  # the key stays in `processing`: the next turn puts it back in line
    except Exception as error:  # a bug or a hostile-but-authenticated record: keep it, do not loop
        log.exception("writing %s of %s failed", key, endpoint.name)
        _dead_letter(rt, endpoint, key, f"{type(error).__name__}: {error}", attempts + 1)
        queue.done(key)
    else:
        queue.done(key)


def _dead_letter(rt: Runtime, endpoint: Endpoint, key: str, error: str, attempts: int) -> None:
    letter = rt.dead_letters.add(endpoint.task, [key], error, attempts, rt.clock())
    rt.tally.inc(counters.DEAD_LETTERED, {"task": endpoint.task})
    line = fields(dead_letter_id=letter.id, endpoint=endpoint.name, key=key, attempts=attempts, error=letter.error)
    log.error("write of %s to %s dead-lettered as %s", key, endpoint.name, letter.id, extra=line)


def _nap(rt: Runtime, endpoint: str, seconds: float) -> None:
    known = ENDPOINTS.get(endpoint)
    labels = {"api": "stream", "source": known.ceiling_source if known else "ceiling"}
    rt.tally.inc(counters.RATE_LIMIT_WAITS, labels)
    rt.tally.inc(counters.RATE_LIMIT_WAIT_SECONDS, labels, seconds)
    rt.sleep(seconds)
