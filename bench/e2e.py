#!/usr/bin/env python3
"""Webhook POST → upstream PATCH latency, measured at the Stream stand-in, with real processes.

    .venv/bin/python bench/e2e.py [--rate 100] [--seconds 30] [--steps 100,125,150,175,200,250,300] [--step-seconds 10]
                                  [--echo-first 0.25]

Runs `callsync web` (gunicorn, 2 x 8 threads) and ONE `callsync worker` (callsync's default
pool unless --pool) on a real Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379/13: the database is
flushed) against the stand-ins, which run in a child process of their own. Every webhook is
a 100ms session.open.success or session.close.success that needs a channel write: channels
take turns, each alternating open and close, so each webhook flips one channel. The
latency of a webhook is the arrival time of its PATCH at the stand-in minus the time just
before it was POSTed (one clock: same machine). The Stream update ceiling is lifted for
the bench (the stand-in does not limit); each PATCH's echo `channel.updated` comes back to
the receiver as in production, so the worker runs two tasks per webhook. `--echo-first SHARE`:
that share of the echoes is delivered before its write's answer, which waits 50 ms more (as
Stream may deliver it: issue 23).

Phase 1: `--rate` webhooks/s for `--seconds`: p50, p99, max. Phase 2: rates of `--steps`,
`--step-seconds` each, until the queue grows (depth rising through the step, or not
draining within 2 s of its end) or p99 passes 1 s: the highest rate held is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from standins.credentials import HMS_KEY, HMS_SECRET, STREAM_KEY, STREAM_SECRET
from standins.credentials import HOOK_SECRET as HOOK
from standins.running import platform_settings
from worker.cli import launch
from worker.cli.processes import freeze_startup_objects
from worker.store.enqueue import QUEUE

CHANNELS = 2000
SENDERS = 16


def standins(conn: Connection, receiver: str, channels: int, echo_first: float = 0.0) -> None:
    """The child process: both stand-ins, recording (arrival, cid, active) of every PATCH."""
    from standins import FakeHms, FakeStream, serve

    os.setpgrp()  # a process group of its own, so the bench can count its CPU apart
    stream = FakeStream(STREAM_KEY, STREAM_SECRET, webhook_url=f"{receiver}/webhooks/stream")
    stream.update_limit = 100_000_000  # the bench runs far past Stream's default 300/m
    # A share of writes whose echo is delivered (and taken) before their answer, which then waits 50 ms.
    stream.echo_before_answer(echo_first, lead=0.05, seed=23)
    hms = FakeHms(HMS_KEY, HMS_SECRET, webhook_url=f"{receiver}/webhooks/hms", webhook_secret=HOOK)
    for n in range(channels):
        stream.create_channel(f"messaging:bench-{n}")
    patches: list[tuple[float, str, bool]] = []

    def record(at: float, call: tuple[str, str, dict[str, Any] | None]) -> None:
        method, path, body = call
        if method == "PATCH" and body:
            patches.append((at, path.removeprefix("/channels/").replace("/", ":"), bool(body["set"].get("data.callActive"))))

    stream.watchers.append(record)
    # The harness must not add pauses of its own to the figures: a collector pause in the
    # stand-ins delays the arrival times they record, so no cyclic collection here (a run
    # makes little cyclic garbage).
    freeze_startup_objects()
    gc.disable()
    stream_url, _ = serve(stream.app)
    hms_url, _ = serve(hms.app)
    conn.send((stream_url, hms_url))
    while True:
        command = conn.recv()
        if command == "take":
            conn.send((patches[:], stream.deliveries_in_flight))
            patches.clear()
        elif command == "in-flight":
            conn.send(stream.deliveries_in_flight)
        else:
            return


def envelope(n: int, session: str, kind: str) -> bytes:
    room = f"call-messaging:bench-{n}"
    data = {"room_id": f"room{n:020d}", "room_name": room, "session_id": session, "template_id": "t"}
    # Started now: a session dated in the past would be ended by the 12-hour sweep mid-bench.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    data["session_started_at"] = now
    if kind == "session.close.success":
        data |= {"session_stopped_at": now, "session_duration": 1}
    body = {"version": "2.0", "id": str(uuid.uuid4()), "timestamp": now, "type": kind, "data": data}
    return json.dumps(body).encode()


class Load:
    """Open loop: webhook i is due at start + i/rate whatever the answers take."""

    def __init__(self, web: str, channels: int):
        self.web, self.channels = web, channels
        self.turn = [0] * channels  # per channel: even → next is an open, odd → a close
        self.sessions = [""] * channels
        self.next = 0
        # One client per sender for the whole run: building one costs milliseconds of CPU, and
        # a phase that began by building 16 and connecting them timed that, not callsync.
        self.clients = [httpx.Client(base_url=web, headers={"X-Callsync-Secret": HOOK}, timeout=10) for _ in range(SENDERS)]

    def plan(self, count: int) -> list[tuple[str, bool, bytes]]:
        """The next `count` webhooks: (cid, active after it, body)."""
        out = []
        for _ in range(count):
            n = self.next % self.channels
            self.next += 1
            opening = self.turn[n] % 2 == 0
            if opening:
                self.sessions[n] = uuid.uuid4().hex[:24]
            kind = "session.open.success" if opening else "session.close.success"
            out.append((f"messaging:bench-{n}", opening, envelope(n, self.sessions[n], kind)))
            self.turn[n] += 1
        return out

    def send(self, rate: float, seconds: float) -> list[tuple[float, str, bool, float]]:
        """Send for `seconds` at `rate`; returns (posted at, cid, active, answer seconds) per webhook."""
        plan = self.plan(int(rate * seconds))
        sent: list[tuple[float, str, bool, float]] = []
        lock = threading.Lock()
        start = time.time() + 0.2

        def sender(k: int) -> None:
            client = self.clients[k]
            for i in range(k, len(plan), SENDERS):
                due = start + i / rate
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                cid, active, body = plan[i]
                posted = time.time()
                answer = client.post("/webhooks/hms", content=body)
                took = time.time() - posted
                assert answer.status_code == 202, answer.text
                with lock:
                    sent.append((posted, cid, active, took))

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sent


def latencies(sent: list[tuple[float, str, bool, float]], patches: list[tuple[float, str, bool]]) -> tuple[list[float], int]:
    """Match each webhook with the first unused PATCH of its channel and state after it."""
    by_channel: dict[str, list[tuple[float, bool]]] = {}
    for at, cid, active in sorted(patches):
        by_channel.setdefault(cid, []).append((at, active))
    used: dict[str, int] = {}
    out, missing = [], 0
    for posted, cid, active, _ in sorted(sent):
        candidates = by_channel.get(cid, [])
        i = used.get(cid, 0)
        while i < len(candidates) and not (candidates[i][1] == active and candidates[i][0] >= posted):
            i += 1
        if i == len(candidates):
            missing += 1
            continue
        out.append(candidates[i][0] - posted)
        used[cid] = i + 1
    return out, missing


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Depth:
    """Samples the queue depth every 0.1 s in the background."""

    def __init__(self, store: redis.Redis):
        self.store, self.samples = store, [(time.time(), 0)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append((time.time(), int(self.store.llen(QUEUE))))

    def between(self, start: float, end: float) -> list[int]:
        return [depth for at, depth in self.samples if start <= at <= end]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def drain(conn: Connection, store: redis.Redis, timeout: float = 60) -> float:
    """Wait until the queue is empty and no echo is in flight; returns the seconds it took."""
    start = time.time()

    def quiet() -> bool:
        conn.send("in-flight")
        in_flight = conn.recv()
        return store.llen(QUEUE) == 0 and store.zcard("unacked_index") == 0 and in_flight == 0

    launch.wait_for(lambda: quiet() and time.sleep(0.2) is None and quiet(), timeout, "the queue to drain", every=0.05)
    return time.time() - start


def cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by every process of each named process group."""
    tick = os.sysconf("SC_CLK_TCK")
    used = dict.fromkeys(groups, 0.0)
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        for name, group in groups.items():
            if int(fields[2]) == group:  # field 5 of stat: the process group
                used[name] += (int(fields[11]) + int(fields[12])) / tick
    return used


def run_phase(
    load: Load, conn: Connection, store: redis.Redis, depth: Depth, rate: float, seconds: float, groups: dict[str, int]
) -> dict[str, Any]:
    conn.send("take")
    conn.recv()
    cpu_before = cpu_seconds(groups)
    start = time.time()
    sent = load.send(rate, seconds)
    end = time.time()
    drained = drain(conn, store)
    cpu = {name: used - cpu_before[name] for name, used in cpu_seconds(groups).items()}
    conn.send("take")
    patches, _ = conn.recv()
    lat, missing = latencies(sent, patches)
    if os.environ.get("BENCH_DUMP"):  # every webhook's (posted at, answer s, latency s) for a closer look
        with open(os.environ["BENCH_DUMP"], "a") as dump:
            json.dump(
                {"rate": rate, "sent": [s[0] for s in sorted(sent)], "answer": [s[3] for s in sorted(sent)], "latency": lat}, dump
            )
            dump.write("\n")
    depths = depth.between(start, end)
    third = max(len(depths) // 3, 1)
    return {
        "rate": rate,
        "achieved": len(sent) / (max(s[0] for s in sent) - min(s[0] for s in sent)),
        "p50": pct(lat, 0.5) * 1000,
        "p99": pct(lat, 0.99) * 1000,
        "max": max(lat) * 1000 if lat else float("nan"),
        "answer_p50": pct([s[3] for s in sent], 0.5) * 1000,
        "answer_p99": pct([s[3] for s in sent], 0.99) * 1000,
        "missing": missing,
        "depth_first": statistics.mean(depths[:third]) if depths else 0,
        "depth_last": statistics.mean(depths[-third:]) if depths else 0,
        "depth_max": max(depths, default=0),
        "drain": drained,
        "patches": len(patches),
        "sent": len(sent),
        "cpu_ms": {name: used * 1000 / max(len(sent), 1) for name, used in cpu.items()},
    }


def line(r: dict[str, Any]) -> str:
    return (
        f"{r['rate']:5.0f}/s (sent {r['achieved']:5.0f}/s): POST→PATCH p50 {r['p50']:6.1f} ms  p99 {r['p99']:7.1f} ms  "
        f"max {r['max']:7.1f} ms | receiver answer p50 {r['answer_p50']:.1f} ms p99 {r['answer_p99']:.1f} ms | "
        f"queue depth mean first/last third {r['depth_first']:.1f}/{r['depth_last']:.1f}, max {r['depth_max']}, "
        f"drained in {r['drain']:.1f} s | {r['patches']} PATCHes for {r['sent']} webhooks, {r['missing']} unmatched | "
        "CPU per webhook: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in r["cpu_ms"].items())
    )


def held(r: dict[str, Any]) -> bool:
    growing = r["depth_last"] > max(2 * r["depth_first"], 10)
    return not growing and r["drain"] < 2.5 and r["p99"] < 1000 and r["missing"] == 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--steps", default="100,125,150,175,200,250,300")
    parser.add_argument("--step-seconds", type=float, default=10)
    parser.add_argument("--pool", default=None, choices=["prefork", "threads", "solo"], help="worker pool (default: callsync's)")
    parser.add_argument("--concurrency", type=int, default=None, help="worker concurrency (default: callsync's)")
    parser.add_argument("--echo-first", type=float, default=0.0, help="share of writes whose echo comes before their answer")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that `finally` stops the processes
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    port = launch.free_port()
    web = f"http://127.0.0.1:{port}"
    parent, child = multiprocessing.Pipe()
    stand = multiprocessing.Process(target=standins, args=(child, web, CHANNELS, args.echo_first), daemon=True)
    stand.start()
    stream_url, hms_url = parent.recv()
    env = {
        **launch.clean_environment(),
        "REDIS_URL": redis_url,
        **platform_settings(stream_url, hms_url),
        "CALLSYNC_STREAM_UPDATE_RATE": "1000000/s",
    }
    logs = Path(tempfile.mkdtemp(prefix="callsync-bench-"))
    worker_args: list[Any] = (["--pool", args.pool] if args.pool else []) + (
        ["--concurrency", args.concurrency] if args.concurrency else []
    )
    children = [
        launch.start("web", launch.role_argv("web", "--port", port, "--host", "127.0.0.1"), env, logs),
        launch.start("worker", launch.role_argv("worker", *worker_args), env, logs),
    ]
    depth = Depth(store)
    # Each role runs in a process group of its own, and so do the stand-ins.
    groups = {**{child.name: child.process.pid for child in children}, "stand-ins": stand.pid or 0}
    try:
        launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver")
        launch.wait_for(lambda: " ready." in (logs / "worker.log").read_text(errors="replace"), 60, "the worker")
        load = Load(web, CHANNELS)
        freeze_startup_objects()  # nor in the load generator, which dates each POST
        gc.disable()
        print(
            f"callsync web (2 x 8 threads) + 1 callsync worker ({args.pool or 'default'} pool); Redis {redis_url}; logs {logs}",
            flush=True,
        )
        warm = run_phase(load, parent, store, depth, 200, 2 * CHANNELS / 200, groups)  # every channel known, every child warm
        print(f"warm-up, every channel opened and closed once: {line(warm)}", flush=True)
        main_run = run_phase(load, parent, store, depth, args.rate, args.seconds, groups)
        print(f"\nphase 1, {args.rate:.0f} webhooks/s for {args.seconds:.0f} s:\n  {line(main_run)}", flush=True)
        print(
            f"  target p50 <= 10 ms: {main_run['p50']:.1f} ms ({main_run['p50'] / 10:.2f} of it); "
            f"p99 <= 50 ms: {main_run['p99']:.1f} ms ({main_run['p99'] / 50:.2f} of it)",
            flush=True,
        )
        print("\nphase 2, stepping the rate:", flush=True)
        best = 0.0
        for rate in [float(r) for r in args.steps.split(",")]:
            result = run_phase(load, parent, store, depth, rate, args.step_seconds, groups)
            ok = held(result)
            print(f"  {'held ' if ok else 'GROWS'} {line(result)}", flush=True)
            if not ok:
                break
            best = rate
        print(
            f"\nhighest sustained rate with one worker process: {best:.0f} webhooks/s ({best / args.rate:.1f} x the {args.rate:.0f}/s target)"
        )
    finally:
        depth.stop()
        launch.stop(children)
        parent.send("stop")
        stand.join(5)
        store.flushdb()


if __name__ == "__main__":
    main()
