#!/usr/bin/env python3
"""Latency of joining a call, `POST /calls/{id}` (client.getCallToken), with membership and room
cached and uncached, beside a no-op route under the same gunicorn settings, in one run.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/10 .venv/bin/python bench/join.py [--requests 2000]
                                                   [--rounds 3] [--concurrency 1] [--members 100]

The web role's app (`create_app`, logging as `callsync web` configures it) serves against the
stand-ins of Stream and 100ms, which run in their own process and count the calls they get.
cached: the channel's roster and the call's room are in Redis (the target: p99 <= 20 ms and no
upstream call). uncached: both are deleted before each request, so each one asks Stream
(QueryChannels) and 100ms (GET /rooms?name=). The database at BENCH_REDIS_URL is flushed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from worker.cli.launch import free_port
from worker.cli.processes import GUNICORN_DEFAULTS, Gunicorn, NoAccessLog
from worker.settings import Rate, Settings

CID, CALL = "messaging:bench", "call-messaging:bench"
JOIN_PATH = f"/calls/{quote(CALL, safe='')}"
NOOP_ANSWER = '{"call": {"id": "x", "provider": "hms", "hms": {"room_id": "x", "room_name": "x"}}, "token": "x"}'


def run_standins(members: int, ready: Any, upstream_calls: Any) -> None:
    from standins import FakeHms, FakeStream, serve

    stream, hms = FakeStream(KEY, SECRET), FakeHms(HMS_KEY, HMS_SECRET)
    stream.create_channel(CID)
    for n in range(members):
        stream.add_member(CID, f"user-{n}")

    def count(_: float, __: object) -> None:
        with upstream_calls.get_lock():
            upstream_calls.value += 1

    stream.watchers.append(count)
    hms.watchers.append(count)
    stream_url, _ = serve(stream.app)
    hms_url, _ = serve(hms.app)
    ready.put((stream_url, hms_url))
    threading.Event().wait()


def settings_for(redis_url: str, stream_url: str, hms_url: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        stream_api_key=KEY,
        stream_api_secret=SECRET,
        stream_base_url=stream_url,
        hms_access_key=HMS_KEY,
        hms_app_secret=HMS_SECRET,
        hms_base_url=hms_url,
        hms_webhook_secrets=("bench",),
        calls_per_user=Rate(10**9, 60.0),  # the per-user ceiling is not what is measured
    )


def noop_app() -> Any:
    from flask import Flask, Response

    app = Flask("noop")

    @app.post("/calls/<call_id>")
    def join(call_id: str) -> Response:
        return Response(NOOP_ANSWER, status=200, mimetype="application/json")

    return app


def serve_web(kind: str, port: int, settings: Settings) -> None:
    from worker.logs import dict_config

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # the JSON log lines are written, as in production, and thrown away
    if kind == "noop":
        app = noop_app()
    else:
        from webhooks.app import create_app

        app = create_app(settings)
    options = {
        **GUNICORN_DEFAULTS,
        "bind": f"127.0.0.1:{port}",
        "logconfig_dict": dict_config(settings.secrets),
        "logger_class": NoAccessLog,
    }
    Gunicorn(app, options).run()


def start_web(kind: str, settings: Settings) -> tuple[multiprocessing.Process, str]:
    port = free_port()
    process = multiprocessing.Process(target=serve_web, args=(kind, port, settings), daemon=True)
    process.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/healthz", timeout=0.5)
            return process, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{kind} server did not start")


def measure(
    url: str, requests: int, concurrency: int, tokens: list[str], before: Callable[[], None] | None = None
) -> list[float]:
    """Seconds per request, each client on one keep-alive connection; `before` runs untimed."""
    latencies: list[float] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        mine = []
        with httpx.Client(base_url=url, timeout=10) as http:
            for n in range(offset, requests, concurrency):
                user = n % len(tokens)
                if before is not None:
                    before()
                started = time.perf_counter()
                answer = http.post(
                    JOIN_PATH,
                    params={"user_id": f"user-{user}", "api_key": KEY},
                    json={},
                    headers={"authorization": tokens[user], "stream-auth-type": "jwt"},
                )
                mine.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    raise SystemExit(f"join answered {answer.status_code}: {answer.text}")
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--members", type=int, default=100, help="the channel's members (QueryChannels lists up to 100)")
    args = parser.parse_args()
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
    store = redis.Redis.from_url(redis_url)
    store.flushdb()
    ready: Any = multiprocessing.Queue()
    upstream_calls: Any = multiprocessing.Value("l", 0)
    standins = multiprocessing.Process(target=run_standins, args=(args.members, ready, upstream_calls), daemon=True)
    standins.start()
    stream_url, hms_url = ready.get(timeout=20)
    settings = settings_for(redis_url, stream_url, hms_url)
    tokens = [jwt.encode({"user_id": f"user-{n}"}, SECRET, algorithm="HS256") for n in range(args.members)]
    (web, web_url), (noop, noop_url) = start_web("web", settings), start_web("noop", settings)
    w = GUNICORN_DEFAULTS
    print(
        f"gunicorn {w['workers']} workers x {w['threads']} threads; {args.requests} joins per kind and round, {args.concurrency} client(s)"
    )
    created = httpx.post(
        f"{web_url}/channels/messaging/bench/call",
        params={"user_id": "user-0", "api_key": KEY},
        json={"id": CALL, "type": "video"},
        headers={"authorization": tokens[0], "stream-auth-type": "jwt"},
    )
    assert created.status_code == 200, created.text

    def forget() -> None:
        store.delete(f"cs:roster:{CID}", f"cs:room:{CALL.lower()}")

    kinds: dict[str, tuple[str, Callable[[], None] | None]] = {
        "noop": (noop_url, None),
        "cached": (web_url, None),
        "uncached": (web_url, forget),
    }
    results: dict[str, list[list[float]]] = {kind: [] for kind in kinds}
    upstream: dict[str, int] = dict.fromkeys(kinds, 0)
    try:
        for url, before in kinds.values():  # warm up each
            measure(url, 200, args.concurrency, tokens, before)
        for n in range(args.rounds):
            order = list(kinds) if n % 2 == 0 else list(reversed(kinds))
            for kind in order:
                url, before = kinds[kind]
                if kind == "cached":
                    measure(url, 1, 1, tokens)  # the roster and room back in the cache after an uncached run
                asked = upstream_calls.value
                results[kind].append(measure(url, args.requests, args.concurrency, tokens, before))
                upstream[kind] += upstream_calls.value - asked
            print(
                f"round {n + 1}: "
                + " | ".join(
                    f"{k} p50 {ms(percentile(results[k][-1], 0.5))} p99 {ms(percentile(results[k][-1], 0.99))}" for k in kinds
                )
            )
    finally:
        for process in (web, noop, standins):
            process.terminate()
        store.flushdb()
    summary = {kind: (_median(runs, 0.5), _median(runs, 0.99)) for kind, runs in results.items()}
    noop50, noop99 = summary["noop"]
    for kind, (p50, p99) in summary.items():
        calls = upstream[kind] / (args.requests * args.rounds)
        print(
            f"{kind:>8}: p50 {ms(p50)}  p99 {ms(p99)}  (x{p50 / noop50:.2f} / x{p99 / noop99:.2f} of no-op)  upstream calls per join {calls:.2f}"
        )
    verdict = "met" if summary["cached"][1] <= 0.020 and upstream["cached"] == 0 else "NOT met"
    print(f"target (cached p99 <= 20 ms, no upstream call): {verdict}")


def _median(runs: list[list[float]], q: float) -> float:
    return statistics.median(percentile(run, q) for run in runs)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:6.2f} ms"


if __name__ == "__main__":
    main()
