"""The pure parts of bench/scale.py: the event mix of an app with many rooms, the perfect
queue that gives its floor, the minimum number of writes, and time-to-right.

No I/O and no clock: the bench feeds these the times it recorded, and tests/unit/test_scale.py
holds them to hand-worked cases.

A channel's *wanted* value is the call id it should show (`None`: no call) and its *shown*
value what Stream shows (`callId` when `callActive` is true, else `None`). Both start at
`None` (a new channel shows nothing and has no call). A channel is *wrong* while the two differ.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class Change:
    """At `at`, channel `cid` came to want (or, for a write, to show) the call `call` (None: no call)."""

    at: float
    cid: str
    call: str | None


def shown_value(fields: dict[str, object]) -> str | None:
    """What a channel's call fields show: its call id while `callActive` is true, else None."""
    if fields.get("callActive") is not True:
        return None
    call = fields.get("callId")
    return str(call) if call is not None else ""


def perfect_queue(changes: Iterable[Change], interval: float) -> list[Change]:
    """The writes of a perfect single queue at the ceiling: one write at most every `interval`
    seconds (evenly spaced, no burst), channels written in the order they became wrong (a
    channel is queued once), each write showing what the channel wants at that moment, done the
    instant its slot comes (no processing time). A channel right again before its turn (a call
    opened and closed while it waited) leaves the queue without a write. At equal times a change
    is applied before a write, so a write due at a change's time already sees it.

    Its writes are the minimum any correct implementation needs for these arrivals at this
    ceiling (`len(...)`), and the times it makes channels right are the floor of time-to-right."""
    ordered = sorted(changes, key=lambda c: c.at)
    want: dict[str, str | None] = {}
    shown: dict[str, str | None] = {}
    queue: dict[str, float] = {}  # cid -> when it became wrong; insertion order is the line's
    writes: list[Change] = []
    next_slot = -math.inf

    def drain(until: float) -> None:
        nonlocal next_slot
        while queue:
            cid, since = next(iter(queue.items()))
            at = max(next_slot, since)
            if at >= until:
                return
            del queue[cid]
            shown[cid] = want.get(cid)
            writes.append(Change(at, cid, shown[cid]))
            next_slot = at + interval

    for change in ordered:
        drain(change.at)
        want[change.cid] = change.call
        if change.call != shown.get(change.cid):
            queue.setdefault(change.cid, change.at)
        else:
            queue.pop(change.cid, None)
    drain(math.inf)
    return writes


def minimum_writes(changes: Iterable[Change], interval: float) -> int:
    """How many channel updates any correct implementation needs for `changes` at one write per
    `interval`: the perfect queue's (a call opened and closed while its channel waited needs none)."""
    return len(perfect_queue(changes, interval))


@dataclass
class Rightness:
    """Every stretch of time a channel was wrong: its length (`durations`, seconds, in order of
    start), and the stretches still open at the end (`still_wrong`, counted from their start)."""

    durations: list[float] = field(default_factory=list)
    still_wrong: list[tuple[str, float]] = field(default_factory=list)  # (cid, wrong since)


def times_to_right(wanted: Iterable[Change], shown: Iterable[Change]) -> Rightness:
    """From the event that made a channel wrong (a change of what it wants, or a write showing
    something else) to the moment it showed the right fields again (a write, or a change that
    makes what it already shows right: a call that opened and closed before any write). At
    equal times a wanted change comes first."""
    timeline = sorted([(c.at, 0, c.cid, c.call) for c in wanted] + [(c.at, 1, c.cid, c.call) for c in shown])
    want: dict[str, str | None] = {}
    show: dict[str, str | None] = {}
    since: dict[str, float] = {}
    result = Rightness()
    for at, kind, cid, call in timeline:
        (want if kind == 0 else show)[cid] = call
        right = want.get(cid) == show.get(cid)
        if right and cid in since:
            result.durations.append(at - since.pop(cid))
        elif not right and cid not in since:
            since[cid] = at
    result.still_wrong = sorted(((cid, at) for cid, at in since.items()), key=lambda kv: kv[1])
    return result


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# The event mix -------------------------------------------------------------------------------

# Kinds of scheduled actions on the 100ms stand-in.
OPEN, CLOSE, JOIN, LEAVE = "open", "close", "join", "leave"


@dataclass(frozen=True, order=True)
class Action:
    """At `at` seconds from the start: `kind` in room number `room`, session number `session`
    (peers: `peer`, a key unique in the session)."""

    at: float
    order: int  # ties: an open before its joins, leaves before the close
    kind: str
    room: int
    session: int
    peer: int = -1


@dataclass(frozen=True)
class Mix:
    """The shape of an app's traffic. Times are at Stream's default ceiling (300 a minute, one
    update per 0.2 s) and compressed by `ceiling / 5` for a faster one, so the mix keeps its
    shape (as many rooms live, as many events per slot) in a shorter run."""

    median_minutes: float = 4.0  # a session's length: lognormal, median 4 min, mean ~6.6 min
    sigma: float = 1.0
    peer_counts: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 3, 3, 4, 6)  # drawn uniformly: mostly 1:1 calls
    rejoin: float = 0.15  # share of peers that drop and come back once (a network change)
    spread_seconds: float = 20.0  # peers join within this much after the open, leave as long before the close


def schedule(rooms: int, seconds: float, changes_per_second: float, scale: float, seed: int, mix: Mix = Mix()) -> list[Action]:
    """A seeded plan of `seconds` of traffic: sessions open (Poisson) in random idle rooms of
    `rooms` and close after a lognormal length; their peers join, some rejoin, and leave within
    the session. The opening rate is chosen so that opens + closes within the window average
    `changes_per_second` (each changes one channel). `scale` compresses the mix's times (the
    ceiling over Stream's default 5/s). Sessions still live at the end stay open."""
    median = mix.median_minutes * 60 / scale
    spread = mix.spread_seconds / scale

    def plan(rate: float) -> list[Action]:
        rng = random.Random(seed)
        actions: list[Action] = []
        live: list[tuple[float, int]] = []  # (close, room), a heap
        idle = list(range(rooms))
        at, session = 0.0, 0
        while True:
            at += rng.expovariate(rate)
            if at >= seconds:
                return actions
            while live and live[0][0] <= at:  # a room is idle again once its session closed
                idle.append(heapq.heappop(live)[1])
            if not idle:
                continue  # every room is live: this open does not happen
            k = rng.randrange(len(idle))
            idle[k], idle[-1] = idle[-1], idle[k]
            room = idle.pop()
            length = median * math.exp(rng.gauss(0, mix.sigma))
            end = at + length
            heapq.heappush(live, (end, room))
            actions.append(Action(at, 0, OPEN, room, session))
            margin = min(spread, length / 4)
            peer = 0
            for _ in range(rng.choice(mix.peer_counts)):
                joined, left = at + rng.uniform(0, margin), end - rng.uniform(0, margin)
                if rng.random() < mix.rejoin:
                    drop = rng.uniform(joined, left)
                    back = min(left, drop + rng.uniform(0, margin))
                    actions += [Action(joined, 1, JOIN, room, session, peer), Action(drop, 2, LEAVE, room, session, peer)]
                    peer += 1
                    joined = back
                actions += [Action(joined, 1, JOIN, room, session, peer), Action(left, 2, LEAVE, room, session, peer)]
                peer += 1
            actions.append(Action(end, 3, CLOSE, room, session))
            session += 1

    def window(actions: list[Action]) -> list[Action]:
        return sorted(a for a in actions if a.at < seconds)

    def changes(actions: list[Action]) -> int:
        return sum(a.kind in (OPEN, CLOSE) for a in actions)

    target = changes_per_second * seconds
    rate = max(changes_per_second / 2, 1e-3)
    actions = window(plan(rate))
    for _ in range(4):  # a fixed point: closes within the window depend on the opening rate
        if not changes(actions):
            break
        rate *= target / changes(actions)
        actions = window(plan(rate))
    return actions


def kinds_count(actions: Iterable[Action]) -> dict[str, int]:
    counts = dict.fromkeys((OPEN, CLOSE, JOIN, LEAVE), 0)
    for action in actions:
        counts[action.kind] += 1
    return counts


def live_at(actions: Sequence[Action], at: float) -> int:
    """How many sessions of the plan are live at `at` (opened at or before, not yet closed)."""
    opens = sorted(a.at for a in actions if a.kind == OPEN)
    closes = sorted(a.at for a in actions if a.kind == CLOSE)
    return bisect.bisect_right(opens, at) - bisect.bisect_right(closes, at)
