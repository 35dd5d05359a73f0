"""The courier: the platforms' webhook delivery, late, shuffled and sometimes twice; and, for a
share of callsync's writes, Stream's echo at once, before the write's answer."""

from __future__ import annotations

import heapq
import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from standins import FakeHms, FakeStream
from standins.base import Fake
from tests.support.chaos.workload import Config


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
        """Start delivering; from now on a `echo_first` share of callsync's writes have their echo
        delivered before their answer (the outbox copy follows later, as a duplicate)."""
        stream = next(fake for source, fake in self.sources if isinstance(fake, FakeStream))
        stream.echo_before_answer(self.cfg.echo_first, self.cfg.echo_lead, self.cfg.seed + 5, send=self.deliver_now)
        self.thread.start()

    def deliver_now(self, hook: tuple[dict[str, str], bytes]) -> None:
        """Deliver a Stream echo while its write waits for its answer: once, without retries."""
        headers, body = hook
        try:
            answer = self.http.post(f"{self.web}/webhooks/stream", content=body, headers=headers)
            outcome = f"answered {answer.json().get('status')}" if answer.is_success else f"answered {answer.status_code}"
        except (httpx.HTTPError, ValueError) as exc:
            outcome = f"not delivered: {type(exc).__name__}"
        with self.lock:
            self.stats["stream echoes before their answer"] += 1
            self.stats[f"echo before its answer {outcome}"] += 1

    def pending(self) -> tuple[int, int]:
        """Deliveries scheduled and not yet sent, and those being sent (or retried after a 503)."""
        self._collect()
        with self.lock:
            return len(self.heap), self.busy

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
