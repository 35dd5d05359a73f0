"""The tasks' retry policy (worker/jobs/tasks.py, docs/behaviour.md rule 7), one attempt at a time:
a retry with backoff up to CALLSYNC_TASK_MAX_RETRIES, then a dead letter; a Redis outage backed off
up to its own bound, then a dead letter; a step that must wait deferred under its own id without
spending a retry; an event that breaks a step dead-lettered at once.

Each test runs a task of a real Celery app (`create_celery`) as a worker would: the request pushed
(id, retry count), the task's body run. What an attempt publishes (its retry, its deferred run) is
read back from kombu's in-memory broker with its id, retry count and eta. The Runtime is a test
world's (fakeredis, the stand-ins at the HTTP transport), handed to the app as its tasks' `self.runtime` would
build it; nothing of callsync's is patched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from celery import Celery
from celery.exceptions import Retry

import worker.jobs.tasks
from tests.support.state import record_hms_event
from tests.support.world import CALL, CID, World, hand_runtime
from worker.core import actions
from worker.core.events import parse_stream_event
from worker.core.upstream import REDIS_RETRIES
from worker.jobs.app import create_celery
from worker.jobs.runtimes import HELD
from worker.ops import counters
from worker.settings import Settings
from worker.steps.runtime import Runtime, build_runtime
from worker.store.deadletters import DeadLetters
from worker.store.enqueue import QUEUES

MAX_RETRIES = 5  # CALLSYNC_TASK_MAX_RETRIES here: more than Celery's own default cap of 3
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@dataclasses.dataclass
class Published:
    id: str
    retries: int
    wait: float  # seconds from now until its eta (0 without one)


class Worker:
    """A real Celery app on kombu's in-memory broker, its tasks run one request at a time."""

    def __init__(self) -> None:
        self.app: Celery = create_celery(Settings(redis_url="memory://"))
        self.world = World(fakeredis.FakeRedis(), task_max_retries=MAX_RETRIES, call_messages=True)
        self.use(self.world.rt)
        self.published()  # the in-memory broker is the process's: start empty

    def use(self, rt: Runtime) -> None:
        hand_runtime(self.app, rt)
        self.rt = rt

    def run(self, name: str, *args: Any, retries: int = 0, task_id: str = "t-1") -> str:
        """Run one attempt; "retry" when it raised Celery's Retry, else "returned"."""
        task = self.app.tasks[name]
        task.push_request(retries=retries, called_directly=False, is_eager=False, id=task_id, args=list(args), kwargs={})
        try:
            task.run(*args)
        except Retry:
            return "retry"
        finally:
            task.pop_request()
        return "returned"

    def published(self) -> list[Published]:
        """Every message on callsync's queues (a drain's retry goes to its own), taken off them."""
        out = []
        with self.app.connection_for_read() as connection:
            for name in QUEUES:
                queue = connection.SimpleQueue(name)
                while queue.qsize():
                    message = queue.get(timeout=1)
                    eta = message.headers.get("eta")
                    wait = datetime.fromisoformat(eta).timestamp() - time.time() if eta else 0.0
                    out.append(Published(message.headers["id"], message.headers["retries"], wait))
                    message.ack()
                queue.close()
        return out

    def outcomes(self) -> Counter[str]:
        """The task runs counted since the last look, by outcome (callsync_task_runs_total)."""
        runs: Counter[str] = Counter()
        for key, amount in self.rt.tally.take().items():
            decoded = counters.decode(key)
            if decoded and decoded[0] == counters.TASK_RUNS:
                runs[dict(decoded[1])["outcome"]] += int(amount)
        return runs

    def close(self) -> None:
        vars(self.app).pop(HELD, None)


@pytest.fixture
def worker() -> Iterator[Worker]:
    worker = Worker()
    yield worker
    worker.close()


def redis_gone(worker: Worker) -> fakeredis.FakeRedis:
    """Make the worker's Redis unreachable, keeping a dead-letter store that works; return the latter's client."""
    server = fakeredis.FakeServer()
    server.connected = False
    rt = build_runtime(worker.world.settings, worker.world.queue, redis_client=fakeredis.FakeRedis(server=server))
    letters = fakeredis.FakeRedis()
    worker.use(dataclasses.replace(rt, dead_letters=DeadLetters(letters), clock=lambda: worker.world.now))
    return letters


def channel_to_write(world: World) -> None:
    """A session recorded open whose channel does not show it yet: a reconcile writes."""
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    record_hms_event(world.rt.state, world.hms_event("session.open.success", session, room), world.now)


def task_arguments(world: World) -> dict[str, tuple[Any, ...]]:
    """Each of callsync's tasks with arguments it runs on."""
    room, session = {"id": "room-1", "name": CALL}, {"id": "s-1", "created_at": None}
    stream_event = parse_stream_event(
        json.loads((SAMPLES / "stream_channel_updated.json").read_text()), world.settings.field_path
    )
    assert stream_event is not None
    return {
        "callsync.apply_stream_event": (stream_event.to_json(),),
        "callsync.apply_hms_event": (world.hms_event("session.open.success", session, room).to_json(),),
        actions.RECONCILE: (CID,),
        actions.END_SESSION: (CALL, "s-1", "maximum session length reached"),
        actions.CHECK_SESSION: (CALL, "s-1"),
        "callsync.sweep": (),
        actions.RECORD_OWNER: ("standup", CID),
        actions.WRITE_CALL_MESSAGE: ("s-1",),
        actions.DRAIN_WRITES: ("channels",),
        actions.RESYNC: (False, False),
    }


def test_every_task_is_retried_past_celerys_default_cap(worker: Worker) -> None:
    # Celery's default cap (3) failed the fourth retry: the task acknowledged and lost, neither
    # retried nor dead-lettered. A tenth attempt of each task, Redis gone, is still a retry.
    arguments = task_arguments(worker.world)
    assert set(arguments) == {name for name in worker.app.tasks if name.startswith("callsync.")}
    letters = redis_gone(worker)
    for name, args in arguments.items():
        assert worker.run(name, *args, retries=9, task_id=f"t-{name}") == "retry", name
        [retry] = worker.published()
        assert (retry.id, retry.retries) == (f"t-{name}", 10), name
        assert retry.wait <= 60.5, name  # the Redis backoff's cap
    assert DeadLetters(letters).list() == []
    assert worker.outcomes() == {"retry": len(arguments)}


def test_an_upstream_failure_backs_off_until_the_bound_then_is_a_dead_letter(
    worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    world = worker.world
    channel_to_write(world)
    world.stream.fail_next(100, 503)
    caplog.set_level(logging.INFO, "callsync.tasks")
    for attempt in range(MAX_RETRIES):
        assert worker.run(actions.RECONCILE, CID, retries=attempt) == "retry", attempt
        [retry] = worker.published()
        assert (retry.id, retry.retries) == ("t-1", attempt + 1)
        assert 0 <= retry.wait <= 2**attempt + 0.5  # full-jitter backoff: uniform in [0, 2^attempt] s
        line = caplog.records[-1]
        assert line.levelno == logging.WARNING
        assert line.cs["outcome"] == "retry" and line.cs["attempt"] == attempt + 1 and line.cs["cid"] == CID
        assert line.cs["error"].startswith("stream 503")
    assert world.rt.dead_letters.list() == []
    assert worker.run(actions.RECONCILE, CID, retries=MAX_RETRIES) == "returned"
    assert worker.published() == []
    [letter] = world.rt.dead_letters.list()
    assert letter.task == actions.RECONCILE and letter.args == [CID] and letter.task_id == "t-1"
    assert letter.attempts == MAX_RETRIES + 1 and letter.error.startswith("stream 503")
    assert worker.outcomes() == {"retry": MAX_RETRIES, "dead_letter": 1}
    assert world.fields() == {}  # never written: 503 each time


def test_a_refusal_is_a_dead_letter_at_once(worker: Worker) -> None:
    world = worker.world
    channel_to_write(world)
    world.stream.fail_next(1, 400)
    assert worker.run(actions.RECONCILE, CID) == "returned"
    assert worker.published() == []
    [letter] = world.rt.dead_letters.list()
    assert letter.attempts == 1 and letter.error.startswith("stream 400")
    assert worker.outcomes() == {"dead_letter": 1}


def test_a_redis_outage_backs_off_until_its_own_bound_then_is_a_dead_letter(worker: Worker) -> None:
    letters = redis_gone(worker)
    waits = {}
    for attempt in (0, 3, 7, REDIS_RETRIES - 1):
        assert worker.run(actions.RECONCILE, CID, retries=attempt) == "retry", attempt
        [retry] = worker.published()
        assert retry.retries == attempt + 1
        waits[attempt] = retry.wait
    assert waits[0] <= 1.5 and waits[3] <= 8.5 and all(wait <= 60.5 for wait in waits.values())  # min(60, 2^attempt)
    assert DeadLetters(letters).list() == []
    assert worker.run(actions.RECONCILE, CID, retries=REDIS_RETRIES) == "returned"
    assert worker.published() == []
    [letter] = DeadLetters(letters).list()
    assert letter.attempts == REDIS_RETRIES + 1 and letter.error.startswith("redis: ConnectionError")
    assert worker.outcomes() == {"retry": 4, "dead_letter": 1}


def test_a_step_that_must_wait_is_deferred_under_its_own_id_without_spending_a_retry(worker: Worker) -> None:
    world = worker.world
    channel_to_write(world)
    assert world.rt.state.load(CID, lock=("someone-else", 60)) is not None  # another worker holds the channel
    assert worker.run(actions.RECONCILE, CID, retries=2, task_id="t-busy") == "returned"
    [deferred] = worker.published()
    assert deferred.id == "t-busy" and deferred.retries == 0, deferred  # a fresh message: no retry spent
    assert 0 < deferred.wait <= 0.25 + 0.5  # the step asked for 0.25 s
    assert world.rt.dead_letters.list() == [] and world.fields() == {}
    assert worker.outcomes() == {"deferred": 1}


def test_a_channel_held_long_is_asked_for_again_every_few_seconds_not_four_times_a_second(worker: Worker) -> None:
    world = worker.world
    channel_to_write(world)
    assert world.rt.state.load(CID, lock=("a-dead-worker", 60)) is not None
    world.rt.redis.pexpire(f"cs:lock:{CID}", 20_000)  # taken 40 s ago: its holder is likely gone
    assert worker.run(actions.RECONCILE, CID, task_id="t-waits") == "returned"
    [deferred] = worker.published()
    assert deferred.id == "t-waits" and deferred.retries == 0
    assert 4.5 <= deferred.wait <= 5.5, deferred  # not 0.25 s


def test_a_retry_takes_back_the_channel_lock_its_first_attempt_could_not_release(worker: Worker) -> None:
    # Redis goes away as the PATCH reaches Stream: the write's bookkeeping and the unlock both
    # fail, and the channel's lock stays behind for its full time (60 s). The retry carries the
    # task's id, the lock's token: it takes the lock back at once and finishes, where another
    # task (last test) is deferred until the lock expires.
    server = fakeredis.FakeServer()
    world = worker.world = World(fakeredis.FakeRedis(server=server), task_max_retries=MAX_RETRIES, call_messages=True)
    worker.use(world.rt)
    channel_to_write(world)

    def redis_dies_at_the_patch(_arrived: float, call: Any) -> None:
        if call[0] == "PATCH":
            server.connected = False

    world.stream.watchers.append(redis_dies_at_the_patch)
    assert worker.run(actions.RECONCILE, CID, task_id="t-cut") == "retry"
    [retry] = worker.published()
    assert retry.id == "t-cut"
    server.connected = True
    world.stream.watchers.clear()
    assert world.rt.state.load(CID, lock=("someone-else", 60)) is None  # the lock is still held
    assert worker.run(actions.RECONCILE, CID, retries=1, task_id="t-cut") == "returned"
    assert worker.published() == [] and world.rt.dead_letters.list() == []  # not deferred
    assert world.fields() == {"callActive": True, "callId": CALL}
    assert world.rt.state.load(CID, lock=("someone-else", 60)) is not None  # released
    assert worker.outcomes() == {"retry": 1, "success": 1}


def test_an_event_that_breaks_a_step_is_a_dead_letter_not_a_retry(worker: Worker) -> None:
    # Authenticated but not what the step can take (here, an event without its fields).
    assert worker.run("callsync.apply_hms_event", {"id": "d-1", "type": "session.open.success"}) == "returned"
    assert worker.published() == []
    [letter] = worker.world.rt.dead_letters.list()
    assert letter.task == "callsync.apply_hms_event" and letter.attempts == 1
    assert letter.error.startswith("TypeError"), letter.error
    assert worker.outcomes() == {"dead_letter": 1}
