"""The chaos run (bench/chaos.py has the whole story): real processes, the stand-ins served
over HTTP, the courier, the faults, and the judgement at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from standins import FakeHms, FakeStream, Platforms, running
from tests.support.chaos.courier import Courier
from tests.support.chaos.redis_server import RedisServer
from tests.support.chaos.report import Report, busiest_window, classify
from tests.support.chaos.workload import (
    SECRETS,
    TOKENISH,
    TOPIC,
    Config,
    Plan,
    cid_of,
    plan_workload,
    room_of,
)
from tests.support.roles import environment
from worker.cli import launch
from worker.core.events import parse_time
from worker.settings import load_settings
from worker.store.deadletters import DeadLetters
from worker.store.enqueue import QUEUES


@dataclass(frozen=True)
class LiveClear:
    """A flag callsync cleared while the session it was raised for was live."""

    cid: str
    session: str  # the live session it was raised for
    line: str
    arrived: float  # when the PATCH reached the stand-in (wall time)
    claim: float | None  # the member's claim's `created_at`, when the member raised the flag
    version_at_arrival: float | None  # the channel record's version in callsync's Redis then
    had_session_at_arrival: bool  # ...and whether the room's call record held the session open


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
        self.clears: list[LiveClear] = []  # flags cleared while the session they were raised for was live

    def note(self, what: str) -> None:
        line = f"t={time.monotonic() - self.started:6.1f} s  {what}"
        self.report.timeline.append(line)
        print(line, flush=True)

    def env(self, store: RedisServer, platforms: Platforms) -> dict[str, str]:
        return environment(
            platforms,
            store.url,
            CALLSYNC_STREAM_UPDATE_RATE=self.cfg.rate,
            CALLSYNC_VISIBILITY_TIMEOUT_SECONDS=self.cfg.visibility_timeout,
            CALLSYNC_SWEEP_INTERVAL_SECONDS=5,
            CALLSYNC_STALE_FLAG_GRACE_SECONDS=5,
            CALLSYNC_WORKER_CONCURRENCY=4,
            WEB_CONCURRENCY=2,
        )

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
            with running() as platforms:  # no webhook_url: webhooks wait in the outbox
                stream, hms = platforms.stream, platforms.hms
                stream.update_limit = 1_000_000  # the ceiling under test is the setting's
                env = self.env(store, platforms)
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
                    self.judge_clears()
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
        channel showed a call, and note every flag cleared while the session it was raised for is
        still live. A flag is raised for the room's live session when a member raises it, or when
        callsync does and had taken that session's open at least a second before (callsync's late
        write for the last session, landing a moment after the next one began, is not for it).
        `judge_clears` tells, once the logs are complete, which of them count against callsync."""
        shown: dict[str, dict[str, Any]] = {}
        raised: dict[str, tuple[str, str, float]] = {}  # cid -> (session, "client" | "server", when)
        arrivals: dict[str, tuple[float, float | None, Any, Any]] = {}  # cid -> (wall time, its records) at the PATCH
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
                arrivals[cid] = (arrived, float(version) if version else None, session, status)

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
                    arrived, version, recorded, status = arrivals.get(cid, (time.time(), None, None, None))
                    claim = parse_time(self.member_claims.get(cid)) if raiser == "client" else None
                    had_session = recorded == live.encode() and status == b"open"
                    self.clears.append(LiveClear(cid, live, line, arrived, claim, version, had_session))
            shown[cid] = fields

        stream.watchers.append(on_call)
        stream.change_watchers.append(on_change)

    def judge_clears(self) -> None:
        """Each flag cleared while its session was live counts against callsync when callsync
        had the member's claim (the channel record's version, the Stream time of its newest news,
        at or after the claim's `created_at`) or the session's open when it decided. Otherwise it
        decided before it had either and its clear landed after the member's claim: the race of
        two unconditional partial updates (Stream has no conditional one), counted apart; the
        session's open puts the flag back.

        What callsync had when it decided is the record version its write was planned from (the
        worker's log line of that write, the first one for the channel after the PATCH arrived);
        without that line, what callsync's Redis held as the PATCH arrived, which may be newer."""
        writes: dict[str, list[tuple[float, float | None, str | None]]] = {}  # cid -> (logged at, planned from, live session)
        for path in sorted(self.logs.glob("worker*.log")):
            for text in path.read_text(errors="replace").splitlines():
                if '"planned_from"' not in text and "call fields set" not in text:
                    continue
                try:
                    line = json.loads(text)
                except ValueError:
                    continue
                if line.get("active") is False and "cid" in line:
                    at = datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                    writes.setdefault(line["cid"], []).append((at, line.get("planned_from"), line.get("session_id")))
        for clear in self.clears:
            logged = sorted((w for w in writes.get(clear.cid, []) if w[0] >= clear.arrived - 0.002), key=lambda w: w[0])
            if logged:
                version, had_session = logged[0][1], logged[0][2] == clear.session
            else:
                version, had_session = clear.version_at_arrival, clear.had_session_at_arrival
            had_claim = clear.claim is not None and version is not None and version >= clear.claim - 1e-6
            (self.report.live_cleared if had_claim or had_session else self.report.raced).append(clear.line)

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
        """Quiet: nothing to deliver, queued or held by a worker, and no Stream call for 3 s, five
        looks in a row. When the deadline passes first, the timeline says what was still busy."""
        deadline = time.monotonic() + self.cfg.settle_deadline
        calm, last_calls, last_change = 0, -1, time.monotonic()
        busy = ""
        while time.monotonic() < deadline:
            calls = len(stream.calls)
            if calls != last_calls:
                last_calls, last_change = calls, time.monotonic()
            try:
                pipe = client.pipeline(transaction=False)
                for queue in QUEUES:
                    pipe.llen(queue)
                pipe.zcard("unacked_index")
                *lengths, held = pipe.execute()
                waiting = sum(lengths)
            except redis.RedisError:
                waiting = held = -1
            delivering = courier.pending()
            silent = time.monotonic() - last_change
            quiet = delivering == (0, 0) and waiting == 0 and held == 0 and silent > 3.0
            calm = calm + 1 if quiet else 0
            if calm >= 5:
                return True
            busy = (
                f"courier: {delivering[0]} deliveries scheduled, {delivering[1]} in flight; "
                f"queue {waiting}, unacknowledged {held}{self.held_tasks(client) if held > 0 else ''}; "
                f"last Stream call {silent:.1f} s before"
            )
            time.sleep(0.2)
        self.note(f"still busy at the deadline: {busy}")
        return False

    @staticmethod
    def held_tasks(client: redis.Redis) -> str:
        """The tasks kombu holds unacknowledged, and its restore mutex's time to live."""
        try:
            held = client.hvals("unacked")
            ttl = client.ttl("unacked_mutex")
        except redis.RedisError as exc:
            return f" (unreadable: {type(exc).__name__})"
        names = Counter(json.loads(raw)[0]["headers"].get("task", "?") for raw in held)
        return f" ({', '.join(f'{n} {c}' for n, c in names.most_common())}; restore mutex ttl {ttl})"

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


def run(cfg: Config) -> Report:
    with tempfile.TemporaryDirectory(prefix="callsync-chaos-") as tmp:
        return Chaos(cfg, Path(tmp)).run()
