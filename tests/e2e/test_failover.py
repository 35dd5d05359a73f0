"""A Sentinel failover under load (issue 19): the Procfile's roles on REDIS_URL's Sentinel form, the
primary SIGKILLed while session opens stream in through the stand-ins; every role must follow
the failover without a restart.

Three Sentinels (quorum 2, down after 1 s), a primary and a replica, all on loopback
(tests/support/sentinels.py). The webhooks are sent as a platform sends them: each one again
until it is answered 2xx. Redis replicates asynchronously, so a delivery answered 2xx in the
last moment before the kill may never reach the replica: it is lost with the old primary, and
its channel stays wrong until a resync reads 100ms again (docs/operations.md, "Sentinel
deployment"). On loopback replication lags by well under a millisecond, so the test makes that
moment last: the replica is cut off the primary CUT_BEFORE opens (0.2 s) before the kill, and the
deliveries answered 2xx meanwhile are lost. The test counts and prints them (their records
absent from the new primary) and requires every other channel to be right soon after the
failover: the tasks the worker held when the primary died (it can neither
acknowledge nor give them back) come back after the visibility timeout, and a write-queue turn
held by an interrupted drain lapses within its lease (10 s).

Some session opens (UNDELIVERED, before and after the kill) are never delivered at all, as when
100ms gave up on them: after the failover `callsync resync`, run through the Sentinels as an
operator would, must adopt them and every delivery lost with the old primary, so that every
channel is right after the failover and that resync, with no process restarted.

celery#6348 reports Celery workers that do not follow a Sentinel failover; here the worker's
consumer (kombu's Sentinel transport, worker/jobs/broker.py) must take the tasks of the webhooks
sent after the kill from the new primary, and beat's schedule (RedBeat) must go on.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from standins import FakeHms, FakeStream, Platforms
from tests.support.roles import environment, start_roles
from tests.support.sentinels import PRIMARY_PASSWORD, SENTINEL_PASSWORD, Group, sentinel_group
from worker.cli import launch
from worker.connect import redis_client
from worker.store.keys import dedupe_key
from worker.store.resync import last_resync

pytestmark = pytest.mark.redis  # it starts its own servers, whatever CALLSYNC_TEST_REDIS_URL says

CHANNELS = 200  # one session open each
RATE = 50.0  # session opens a second
KILL_AFTER = 60  # opens sent before the primary is killed
CUT_BEFORE = 10  # the replica is cut off this many opens (0.2 s) before the kill: what they write is lost
VISIBILITY = 20  # CALLSYNC_VISIBILITY_TIMEOUT_SECONDS: a task the worker held when the primary died waits this long
SETTLE_SECONDS = VISIBILITY + 10.0  # the most a channel may take to be right after the failover
UNDELIVERED = frozenset({7, 45, 75, 130, 190})  # opens whose webhook 100ms never delivers


class Sender:
    """Delivers the stand-ins' webhooks as the platforms do: concurrently, each one again until
    it is answered 2xx (100ms and Stream retry a failed delivery), noting when that was."""

    def __init__(self, hms: FakeHms, stream: FakeStream, web: str):
        self.targets = ((hms, f"{web}/webhooks/hms"), (stream, f"{web}/webhooks/stream"))
        self.taken = [0, 0]
        self.answered: dict[str, float] = {}  # 100ms envelope id -> when it was answered 2xx
        self.retried = 0
        self.pool = ThreadPoolExecutor(16)
        self.client = httpx.Client(timeout=10)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while not self.stopping.is_set():
            for index, (fake, url) in enumerate(self.targets):
                new = fake.outbox[self.taken[index] :]
                self.taken[index] += len(new)
                for headers, body in new:
                    self.pool.submit(self._post, url, headers, body, fake is self.targets[0][0])
            time.sleep(0.01)

    def _post(self, url: str, headers: dict[str, str], body: bytes, is_hms: bool) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                if self.client.post(url, content=body, headers=headers).status_code // 100 == 2:
                    if is_hms:
                        self.answered[json.loads(body)["id"]] = time.monotonic()
                    return
            except httpx.HTTPError:
                pass
            self.retried += 1
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def start_stack(group: Group, platforms: Platforms, logs: Path) -> tuple[list[launch.Child], str, dict[str, str]]:
    port = launch.free_port()
    env = environment(
        platforms,
        group.url,
        CALLSYNC_SWEEP_INTERVAL_SECONDS=1,
        CALLSYNC_STREAM_UPDATE_RATE="6000/m",  # the test measures the failover, not the ceiling
        CALLSYNC_VISIBILITY_TIMEOUT_SECONDS=VISIBILITY,
        WEB_CONCURRENCY=2,
        CALLSYNC_WORKER_CONCURRENCY=8,
    )
    children = start_roles(env, logs, port)
    web = f"http://127.0.0.1:{port}"
    launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver on the Sentinels' primary")
    launch.wait_for(lambda: " ready." in (logs / "worker.log").read_text(errors="replace"), 60, "the worker")
    # The first start's full resync (beat found no epoch marker) is over before any session opens:
    # the sessions never delivered are left for the resync after the failover.
    with redis_client(group.url, socket_timeout=5) as store:
        launch.wait_for(lambda: last_resync(store), 60, "the first start's resync")
    return children, web, env


def last_sweep_age(env: dict[str, str]) -> float | None:
    """`callsync status --json`'s last sweep age, read through the Sentinels as the CLI reads it."""
    shown = subprocess.run([*launch.CALLSYNC, "status", "--json"], env=env, capture_output=True, text=True, timeout=30)
    if shown.returncode != 0:
        return None
    age = json.loads(shown.stdout).get("last_sweep_age_seconds")
    return float(age) if age is not None else None


def stream_opens(stream: FakeStream, hms: FakeHms, group: Group) -> tuple[dict[str, str], float]:
    """Open a session in a room of each of CHANNELS channels at RATE a second, SIGKILLing the
    primary after KILL_AFTER of them; the channels (cid → call id) and when the kill was."""
    channels, killed_at = {}, 0.0
    cut: redis.Redis | None = None
    for index in range(CHANNELS):
        if index == KILL_AFTER - CUT_BEFORE:
            cut = group.cut_replica()
        if index == KILL_AFTER:
            group.kill("primary")
            killed_at = time.monotonic()
            assert cut is not None
            cut.close()
        cid = f"messaging:failover-{index}"
        channels[cid] = f"call-{cid}"
        stream.create_channel(cid)
        if index in UNDELIVERED:
            hms.lose_next_webhooks(1)  # out of the outbox: the Sender never sees it
        hms.open_session(hms.create_room(channels[cid])["id"])
        time.sleep(1 / RATE)
    return channels, killed_at


def test_every_role_follows_a_sentinel_failover_under_load(tmp_path: Path, platforms: Platforms) -> None:
    stream, hms = platforms.stream, platforms.hms
    stream.update_limit = 1_000_000  # the stand-in reports no lower limit than the run's ceiling
    with sentinel_group(tmp_path) as group:
        children, web, env = start_stack(group, platforms, tmp_path)
        pids = {child.name: child.process.pid for child in children}
        sender = Sender(hms, stream, web)
        try:
            old_primary = group.primary_port
            channels, killed_at = stream_opens(stream, hms, group)
            launch.wait_for(lambda: group.primary_now() not in (None, old_primary), 30, "the Sentinels to elect a primary")
            elected = time.monotonic() - killed_at
            delivered = CHANNELS - len(UNDELIVERED)
            answered = launch.wait_for(lambda: len(sender.answered) == delivered or None, 60, "every delivery answered 2xx")
            assert answered
            store = redis_client(group.url, socket_timeout=5)
            envelopes = {hook_cid(body): json.loads(body)["id"] for _, body in hms.outbox if b"session.open" in body}
            recorded = {cid for cid, envelope in envelopes.items() if store.exists(dedupe_key("hms", envelope))}
            lost = set(envelopes) - recorded  # answered 2xx (every one was), gone with the old primary
            undelivered = {f"messaging:failover-{index}" for index in UNDELIVERED}

            def wrong() -> set[str]:
                return {cid for cid, call in channels.items() if stream.call_fields(cid) != {"callActive": True, "callId": call}}

            launch.wait_for(lambda: not (wrong() & recorded) or None, SETTLE_SECONDS, "every recorded channel right")
            all_right = time.monotonic() - killed_at
            shown_wrong = wrong() - undelivered
            sweep_after = launch.wait_for(lambda: swept_since(env, killed_at), 30, "a sweep scheduled by beat after the failover")
            print(
                f"\nfailover: Sentinels named a new primary {elected:.1f} s after the SIGKILL; every channel whose "
                f"delivery was recorded right {all_right:.1f} s after it ({CHANNELS} session opens at {RATE:.0f}/s, the kill "
                f"after {KILL_AFTER}, the replica cut off {CUT_BEFORE} opens before it, {len(UNDELIVERED)} never delivered); "
                f"the last delivery answered 2xx {max(sender.answered.values()) - killed_at:.1f} s after it; "
                f"{sender.retried} delivery attempts refused or failed and sent again; {len(lost)} webhook(s) answered 2xx "
                f"but lost with the old primary (asynchronous replication: only a resync repairs them), "
                f"{len(shown_wrong)} of their channels wrong: {sorted(shown_wrong)}; a sweep {sweep_after:.1f} s old "
                f"{time.monotonic() - killed_at:.1f} s after the kill"
            )
            assert shown_wrong <= lost, "a channel whose delivery survived the failover is wrong"
            assert 0 < len(lost) <= CUT_BEFORE + 5, "not what the replica's cut explains"
            assert wrong() >= undelivered, "a session nobody reported is shown before a resync"

            summary, resynced = resync_through_the_sentinels(env)
            launch.wait_for(lambda: not wrong() or None, SETTLE_SECONDS, f"every channel right after the resync ({wrong()})")
            print(
                f"resync after the failover (callsync resync through the Sentinels): took {summary['duration_seconds']:.1f} s, "
                f"{summary['sessions_listed']} live session(s) listed, {summary['adopted']} adopted; every channel right "
                f"{time.monotonic() - resynced:.1f} s after it ended ({time.monotonic() - killed_at:.1f} s after the kill)"
            )
            assert summary["adopted"] >= len(undelivered | shown_wrong), summary
            assert hms.calls and not [path for _, path, _ in hms.calls if path.endswith("/end-room")]
            assert launch.http_ok(f"{web}/readyz")
            assert {c.name: c.process.pid for c in children if c.alive()} == pids, "a role died"
        finally:
            sender.stop()
            launch.stop(children)
    for child in children:
        assert child.log is not None
        text = child.log.read_text(errors="replace")
        assert PRIMARY_PASSWORD not in text and SENTINEL_PASSWORD not in text, child.name
        assert "starting it again" not in text, f"{child.name} restarted itself (worker/cli/processes.py)"


def resync_through_the_sentinels(env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """`callsync resync --json` on the roles' REDIS_URL (the Sentinels); once more while beat's
    own run holds the lock (exit 1: "another process is running a resync"). Its summary, and
    when it ended (time.monotonic)."""

    def once() -> subprocess.CompletedProcess[str] | None:
        done = subprocess.run([*launch.CALLSYNC, "resync", "--json"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 1), done.stderr
        return done if done.returncode == 0 else None

    done = launch.wait_for(once, 60, "callsync resync", every=1.0)
    assert PRIMARY_PASSWORD not in done.stdout + done.stderr and SENTINEL_PASSWORD not in done.stdout + done.stderr
    return json.loads(done.stdout), time.monotonic()


def hook_cid(body: bytes) -> str:
    room_name = json.loads(body)["data"]["room_name"]
    return str(room_name).removeprefix("call-")


def swept_since(env: dict[str, str], killed_at: float) -> float | None:
    """The last sweep's age once it is younger than the failover (beat and a worker on the new primary)."""
    age = last_sweep_age(env)
    return max(age, 0.01) if age is not None and age < time.monotonic() - killed_at - 1 else None
