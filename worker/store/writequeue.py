"""A fair write queue per upstream endpoint, drained at its ceiling (docs/behaviour.md, rule 8).

Modelled on client-go's rate-limited workqueue: a key (a channel's cid) is queued at most once
(ZADD NX: its score is the time it first became wrong, so the first wrong is written first),
and whoever writes it reads the latest recorded state then, so ten changes while it waits cost
one write. One drainer at a time holds the endpoint's *turn* (SET NX PX, renewed as it drains):
a killed drainer's turn lapses within LEASE_SECONDS and the key it was writing (kept in
`processing`) goes back in line. The pace is core.pacing's, applied by the Lua programs
worker/store/lua/wq_*.lua over the endpoint's pace hash. Times are the callers' clocks (NTP
keeps hosts within milliseconds of one another; the spacing is 200 ms at 300/m, and Stream's
per-second cap leaves twice that room).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from worker.core import pacing
from worker.store import scripts
from worker.store.keys import WRITE_QUEUE_PREFIX
from worker.store.scripts import Script

LEASE_SECONDS = 10.0  # longer than one write (CALL_DEADLINE_SECONDS, 7 s); renewed by each step
SCHEDULED_SECONDS = 10.0  # a published drain not started by then is published again if needed
SCAN = 64  # keys looked at from the head of the line for one not waiting out a backoff

_LIB = "wq_lib"
_OFFER = Script.named("wq_offer", _LIB)
_TURN = Script.named("wq_turn", _LIB)
_NEXT = Script.named("wq_next", _LIB)
_SLOT = Script.named("wq_slot", _LIB)
_DONE = Script.named("wq_done", _LIB)
_RELEASE = Script.named("wq_release", _LIB)
_PACE = Script.named("wq_pace", _LIB)


@dataclass(frozen=True)
class Offered:
    """`write_now`: the slot is taken, write at once; else queued, and `publish`: send a drain."""

    write_now: bool
    publish: bool


@dataclass(frozen=True)
class Step:
    """The drainer's next step: `kind` is "lost", "empty", "wait" (`seconds`) or "key"."""

    kind: str
    seconds: float = 0.0
    key: str = ""
    score: float = 0.0
    attempts: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class WriteQueue:
    """One endpoint's queue; `count` writes per `period` seconds is the configured ceiling."""

    def __init__(self, client: redis.Redis, endpoint: str, count: int, period: float):
        self._redis, self.endpoint, self._count, self._period = client, endpoint, count, period
        base = f"{WRITE_QUEUE_PREFIX}{endpoint}"
        self.queue, self.pace_key, self.turn = base, f"{base}:pace", f"{base}:turn"
        self.scheduled, self.not_before = f"{base}:sched", f"{base}:nb"
        self.processing, self.attempts = f"{base}:proc", f"{base}:att"

    def offer(self, key: str, first_wrong: float, now: float, direct: bool = True) -> Offered:
        """The key needs a write: take the slot now if the line is empty and the pace allows
        (`direct`), else queue it (once)."""
        keys = [self.queue, self.pace_key, self.turn, self.scheduled]
        args = [key, repr(first_wrong), self._count, self._period, repr(now), int(direct), _ms(SCHEDULED_SECONDS)]
        now_, publish = _OFFER(self._redis, keys, args)
        return Offered(bool(int(now_)), bool(int(publish)))

    def take_turn(self, token: str) -> bool:
        keys = [self.turn, self.scheduled, self.queue, self.processing]
        return bool(int(_TURN(self._redis, keys, [token, _ms(LEASE_SECONDS)])))

    def next(self, token: str, now: float) -> Step:
        keys = [self.turn, self.queue, self.pace_key, self.not_before, self.processing, self.attempts]
        answer = [_text(part) for part in _NEXT(self._redis, keys, [token, _ms(LEASE_SECONDS), repr(now), SCAN])]
        if answer[0] == "wait":
            return Step("wait", seconds=max(float(answer[1]), 0.0))
        if answer[0] == "key":
            return Step("key", key=answer[1], score=float(answer[2]), attempts=int(answer[3]))
        return Step(answer[0])

    def slot(self, token: str, now: float) -> float:
        """The turn holder asks for the write's slot: 0 (taken) or seconds to wait."""
        keys = [self.pace_key, self.turn]
        return max(float(_SLOT(self._redis, keys, [self._count, self._period, repr(now), token, _ms(LEASE_SECONDS)])), 0.0)

    def done(self, key: str) -> None:
        _DONE(self._redis, [self.queue, self.processing, self.not_before, self.attempts], [key, 0, "", ""])

    def again(self, key: str, not_before: float, attempts: int) -> None:
        """Back in line in its own place, not taken before `not_before` (a backoff, a busy lock)."""
        keys = [self.queue, self.processing, self.not_before, self.attempts]
        _DONE(self._redis, keys, [key, 1, repr(not_before), attempts])

    def release(self, token: str) -> bool:
        """Give the turn back; True when keys wait and a drain must be published (flag set)."""
        keys = [self.turn, self.queue, self.scheduled, self.processing]
        return bool(int(_RELEASE(self._redis, keys, [token, _ms(SCHEDULED_SECONDS)])))

    def kick(self) -> bool:
        """True when keys wait with no live turn and no drain scheduled (flag set: publish one)."""
        return self.release("")

    def report_call(self, limit: int | None, now: float, pause_until: float | None = None) -> scripts.ScriptCall:
        """What an answer said (X-RateLimit-Limit, a 429's wait), as a step for `scripts.run`."""
        args = [
            "" if pause_until is None else repr(pause_until),
            "" if limit is None else limit,
            repr(now),
            pacing.REPORTED_SECONDS,
        ]
        return (_PACE, [self.pace_key], args)

    def report(self, limit: int | None, now: float, pause_until: float | None = None) -> None:
        script, keys, args = self.report_call(limit, now, pause_until)
        script(self._redis, keys, args)

    def pace(self) -> pacing.Pace:
        raw = {_text(k): float(v) for k, v in self._redis.hgetall(self.pace_key).items()}
        reported = raw.get("r")
        return pacing.Pace(raw.get("n", 0.0), raw.get("p", 0.0), int(reported) if reported else None, raw.get("ru", 0.0))

    def depth(self) -> tuple[int, float | None]:
        """How many keys wait, and the first-wrong time of the oldest (None when none)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(self.queue)
        pipe.zrange(self.queue, 0, 0, withscores=True)
        count, head = pipe.execute()
        return int(count), (float(head[0][1]) if head else None)


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


# The queues `callsync status` and /metrics show (steps/writes.py registers their writers).
ENDPOINT_NAMES = ("channels", "messages")


def queued(client: redis.Redis, names: tuple[str, ...] = ENDPOINT_NAMES) -> dict[str, tuple[int, float | None]]:
    """Each endpoint's waiting keys and the first-wrong time of its oldest, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zcard(f"{WRITE_QUEUE_PREFIX}{name}")
        pipe.zrange(f"{WRITE_QUEUE_PREFIX}{name}", 0, 0, withscores=True)
    answers = pipe.execute()
    out: dict[str, tuple[int, float | None]] = {}
    for i, name in enumerate(names):
        count, head = answers[2 * i], answers[2 * i + 1]
        out[name] = (int(count), float(head[0][1]) if head else None)
    return out
