"""A test world: callsync's worker steps on Redis, the platform stand-ins at the HTTP
transport, and a clock the test moves by hand."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from standins import FakeHms, FakeStream
from standins.base import rfc3339
from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from worker.core import actions
from worker.core.events import HmsEvent, StreamEvent, parse_hms_event, parse_stream_event
from worker.jobs.runtimes import HELD
from worker.settings import Settings
from worker.steps import messages, owners, resync, sessions, sync, writes
from worker.steps import sweep as sweeps
from worker.steps.runtime import build_runtime
from worker.store import scripts
from worker.store.enqueue import _call, _Pending, settle_stream
from worker.store.keys import DEDUPE_TTL

CID, CALL = "messaging:general", "call-messaging:general"
INGEST_QUEUE = "world:ingest"  # where the receiver's step pushes a task the World then runs itself


def _apply_stream_event(rt: Any, raw: dict[str, Any]) -> None:
    sync.apply_stream_event(rt, StreamEvent.from_json(raw))


STEPS = {
    actions.APPLY_STREAM_EVENT: _apply_stream_event,
    actions.RECONCILE: sync.reconcile_channel,
    actions.END_SESSION: sessions.end_session,
    actions.CHECK_SESSION: sessions.check_session,
    actions.RECORD_OWNER: owners.record_owner,
    actions.WRITE_CALL_MESSAGE: messages.write_call_message,
    actions.DRAIN_WRITES: writes.drain,
    actions.RESYNC: resync.resync,
}


class Recorder:
    """A `schedule` that records follow-up tasks instead of enqueueing them, each with the time
    it comes due by `clock` (its countdown after it was scheduled)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.tasks: list[tuple[str, tuple[Any, ...], float | None]] = []
        self.due: list[float] = []

    def __call__(self, task: str, args: tuple[Any, ...], countdown: float | None = None) -> None:
        self.tasks.append((task, args, countdown))
        self.due.append(self.clock() + (countdown or 0.0))

    def take(self) -> list[tuple[str, tuple[Any, ...], float | None]]:
        tasks, self.tasks, self.due = self.tasks, [], []
        return tasks

    def take_due(self, until: float) -> tuple[str, tuple[Any, ...], float | None] | None:
        """The first recorded task due by `until` (the earliest first), taken off the record."""
        due = [(at, n) for n, at in enumerate(self.due) if at <= until]
        if not due:
            return None
        _, n = min(due)
        self.due.pop(n)
        return self.tasks.pop(n)


class Platforms(httpx.BaseTransport):
    """Routes requests to the Stream or the 100ms stand-in by host; `to_stream` runs as a request
    reaches Stream (the World moves its clock by the way's length there)."""

    def __init__(self, stream: FakeStream, hms: FakeHms, to_stream: Callable[[], None] = lambda: None):
        self._stream = httpx.WSGITransport(app=stream.app)
        self._hms = httpx.WSGITransport(app=hms.app)
        self._to_stream = to_stream

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "stream.test":
            self._to_stream()
            return self._stream.handle_request(request)
        return self._hms.handle_request(request)


class World:
    """callsync's worker steps wired to Redis and the stand-ins, with a hand-moved clock."""

    def __init__(self, redis_client: Any, prefix: str = "data.", ingest: bool = False, **overrides: Any):
        self.now = time.time()  # the world's clock starts at wall time (tokens are checked in it)
        self.stream = FakeStream(KEY, SECRET, field_prefix=prefix)
        self.hms = FakeHms(HMS_KEY, HMS_SECRET)
        self.stream.clock = self.hms.clock = lambda: self.now  # the platforms' stamps follow it
        self.settings = Settings(
            redis_url="redis://unused",
            stream_api_key=KEY,
            stream_api_secret=SECRET,
            stream_base_url="http://stream.test",
            hms_access_key=HMS_KEY,
            hms_app_secret=HMS_SECRET,
            hms_base_url="http://hms.test",
            field_prefix=prefix,
            **overrides,
        )
        self.queue = Recorder(lambda: self.now)
        # `ingest`: a Stream delivery goes through the receiver's one step first, which settles
        # what provably changes nothing (callsync's own echo, worker/store/enqueue.settle_stream).
        self.ingest = ingest
        # Seconds a request takes to reach Stream: the clock moves by it, so Stream stamps what
        # a write causes (its echo) after the time callsync read before sending it.
        self.stream_latency = 0.0
        self.rt = build_runtime(
            self.settings,
            self.queue,
            redis_client=redis_client,
            transport=Platforms(self.stream, self.hms, self._reach_stream),
            clock=lambda: self.now,
            sleep=self._sleep,
        )

    def _sleep(self, seconds: float) -> None:
        """The drain's wait for its slot: the world's clock moves by it."""
        self.now += seconds

    def _reach_stream(self) -> None:
        self.now += self.stream_latency

    # --- deliveries, as the receiver would hand them over -----------------------------
    def hms_event(self, kind: str, session: dict[str, Any], room: dict[str, Any], **data: Any) -> HmsEvent:
        body = {
            "id": f"{kind}:{session['id']}",
            "type": kind,
            "timestamp": rfc3339(self.now, micro=False),
            "data": {
                "room_id": room["id"],
                "room_name": room["name"],
                "session_id": session["id"],
                "session_started_at": session["created_at"],
                **data,
            },
        }
        event = parse_hms_event(body)
        assert event is not None
        return event

    def deliver_hms(self, event: HmsEvent) -> None:
        sync.apply_hms_event(self.rt, event)
        self.drain()

    def deliver_stream_outbox(self) -> None:
        """Feed every webhook the Stream stand-in produced back to callsync (echoes too)."""
        while self.stream.outbox:
            _, body = self.stream.outbox.pop(0)
            event = parse_stream_event(json.loads(body), self.settings.field_path)
            if event is not None and not self._settled_at_ingest(event):
                sync.apply_stream_event(self.rt, StreamEvent.from_json(event.to_json()))
                self.drain()

    def _settled_at_ingest(self, event: StreamEvent) -> bool:
        """With `ingest`, the receiver's step (no dedupe keys: the World repeats bodies on
        purpose): whether it settled `event`, so no task runs."""
        if not self.ingest:
            return False
        item = _Pending([INGEST_QUEUE], "task", settle_stream(event, self.now))
        [result] = scripts.run(self.rt.redis, [_call(item, DEDUPE_TTL, 1 << 30)])
        self.rt.redis.delete(INGEST_QUEUE)
        return bool(result == 2)

    def echo_before_answer(self, share: float = 1.0, seed: int = 0, keep: bool = False) -> None:
        """Make the Stream stand-in hand a share of callsync's writes' echoes to callsync while
        their PATCH is in flight, before its answer (as Stream may): the echo's task runs there
        and then, and is deferred as Celery would defer it if its channel is busy (the writer
        holds the lock); it runs again once the clock passes its wait. `keep`: the outbox keeps
        the echo too, for a later copy."""

        def send(hook: tuple[dict[str, str], bytes]) -> None:
            if not keep:
                self.stream.outbox.remove(hook)
            self.apply_stream_body(hook[1])

        self.stream.echo_before_answer(share, seed=seed, send=send)

    def apply_stream_body(self, body: bytes) -> None:
        """What the task of one Stream webhook does, a busy channel deferring it as Celery would."""
        event = parse_stream_event(json.loads(body), self.settings.field_path)
        if event is None or self._settled_at_ingest(event):
            return
        raw = event.to_json()
        try:
            _apply_stream_event(self.rt, raw)
        except sync.Deferred as later:
            self.queue(actions.APPLY_STREAM_EVENT, (raw,), countdown=later.seconds)

    def drain(self, until: float | None = None) -> None:
        """Run the scheduled follow-ups due by `until` (the world's clock when not given), the
        earliest first, and those they schedule in turn; later ones stay scheduled."""
        until = self.now if until is None else until
        while (task := self.queue.take_due(until)) is not None:
            name, args, _ = task
            STEPS[name](self.rt, *args)

    def sweep(self) -> sweeps.SweepResult:
        result = sweeps.sweep(self.rt)
        self.drain()
        return result

    def patches(self) -> list[dict[str, Any]]:
        return [body for method, path, body in self.stream.calls if method == "PATCH" and body is not None]

    def fields(self) -> dict[str, Any]:
        return self.stream.channels[CID].get("data", {})


def open_call(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    return room, session


def hand_runtime(app: Any, rt: Any) -> None:
    """Give a Celery app this process's Runtime, as its tasks' `self.runtime` would build it
    (worker.jobs.runtimes.RuntimeTask)."""
    setattr(app, HELD, (os.getpid(), rt))
