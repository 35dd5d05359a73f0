"""The Procfile's roles as real processes, two of each, against the stand-ins and real Redis
(docs/behaviour.md end to end: tests/e2e/test_e2e.py, test_e2e_time.py; the fixtures are in
tests/e2e/conftest.py)."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from standins import FakeHms, FakeStream, running
from tests.support.roles import environment, procfile, wait_for
from tests.support.servers import real_redis, real_url
from worker.cli import launch
from worker.store.enqueue import QUEUES

MAX_SESSION, SWEEP, GRACE, RATE = 20, 1, 1, 20  # seconds, seconds, seconds, updates per second


@dataclass
class System:
    stream: FakeStream
    hms: FakeHms
    webs: list[str]
    store: redis.Redis
    env: dict[str, str]
    children: list[launch.Child] = field(default_factory=list)

    def alive(self) -> None:
        dead = [f"{c.name} (exit {c.process.returncode})" for c in self.children if not c.alive()]
        assert not dead, f"processes died: {dead}; logs in {self.children[0].log and self.children[0].log.parent}"

    def quiet(self) -> bool:
        pipe = self.store.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
        pipe.zcard("unacked_index")
        *lengths, running = pipe.execute()
        waiting = sum(lengths)
        return waiting == 0 and running == 0 and self.stream.deliveries_in_flight == 0 and self.hms.deliveries_in_flight == 0

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until nothing is queued, running or being delivered, three looks in a row."""
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < 3:
            assert time.monotonic() < deadline, "the system did not settle"
            calm = calm + 1 if self.quiet() else 0
            time.sleep(0.05)

    def patches(self, cid: str) -> list[dict[str, Any] | None]:
        path = "/channels/" + cid.replace(":", "/")
        return [body for method, p, body in self.stream.calls if method == "PATCH" and p == path]

    def hms_calls(self, needle: str) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.hms.calls if needle in path]

    def post_hms(self, raw: bytes, web: int = 0) -> httpx.Response:
        return httpx.post(
            f"{self.webs[web]}/webhooks/hms",
            content=raw,
            headers={"X-Callsync-Secret": self.hms.webhook_secret, "Content-Type": "application/json"},
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*launch.CALLSYNC, *args], env=self.env, capture_output=True, text=True, timeout=60, check=False)


@contextlib.contextmanager
def running_system(logs: Path) -> Iterator[System]:
    """Two of each of the Procfile's roles against the stand-ins and real Redis, a canary call
    through the whole pipeline seen through, and a sweep scheduled by beat."""
    store = real_redis()  # flushes the test database before anything starts
    stack = contextlib.ExitStack()
    platforms = stack.enter_context(running())
    stream, hms = platforms.stream, platforms.hms
    stream.update_limit = 1_000_000  # the stand-in reports no lower limit than the run's ceiling
    ports = [launch.free_port(), launch.free_port()]
    webs = [f"http://127.0.0.1:{port}" for port in ports]
    platforms.send_webhooks_to(webs[0])
    env = environment(
        platforms,
        real_url(),
        CALLSYNC_SWEEP_INTERVAL_SECONDS=SWEEP,
        CALLSYNC_STALE_FLAG_GRACE_SECONDS=GRACE,
        CALLSYNC_MAX_SESSION_SECONDS=MAX_SESSION,
        CALLSYNC_STREAM_UPDATE_RATE=f"{RATE}/s",
        WEB_CONCURRENCY=1,
        CALLSYNC_WORKER_CONCURRENCY=2,
    )
    system = System(stream, hms, webs, store, env)
    try:
        for n in range(2):  # scaled as `ps:scale web=2 worker=2 beat=2`
            for name, argv in procfile(ports[n]).items():
                child = launch.start(f"{name}{n + 1}", argv, {**env, "PORT": str(ports[n])}, logs)
                system.children.append(child)
        for web in webs:
            wait_for(lambda web=web: launch.http_ok(f"{web}/readyz"), 30, f"{web}/readyz")
        # A canary call through the whole pipeline proves the workers consume; a recorded sweep proves beat.
        stream.create_channel("messaging:canary")
        room = hms.create_room("call-messaging:canary")
        session = hms.open_session(room["id"])
        wait_for(lambda: stream.call_fields("messaging:canary").get("callActive") is True, 60, "a worker to consume")
        hms.close_session(session["id"])
        wait_for(lambda: stream.call_fields("messaging:canary").get("callActive") is False, 15, "the canary to end")
        wait_for(lambda: store.get("cs:sweep:last"), 30, "a sweep scheduled by beat")
        system.settle()
        yield system
    finally:
        launch.stop(system.children)
        stack.close()
        store.flushdb()
        store.close()


def names(tag: str) -> tuple[str, str]:
    """A fresh channel and the reference client's call id for it."""
    cid = f"messaging:{tag}-{uuid.uuid4().hex[:8]}"
    return cid, f"call-{cid}"


def fields(sut: System, cid: str) -> dict[str, Any]:
    return sut.stream.call_fields(cid)


ACTIVE = lambda call: {"callActive": True, "callId": call}  # noqa: E731
INACTIVE = {"callActive": False}
