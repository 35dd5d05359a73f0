"""The Celery tasks (worker/jobs/tasks.py): retries, dead letters, hops below the visibility timeout, redeliveries."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import fakeredis
import httpx
import pytest
import redis
from celery import Celery
from celery.exceptions import Reject, Retry

import worker.jobs.tasks  # noqa: F401 - registers the tasks on every app, as a worker's include does
from standins import FakeHms, Platforms
from tests.support.roles import environment
from tests.support.servers import real_redis, real_url
from tests.support.stack import running_stack
from tests.support.state import record_hms_event
from tests.support.world import CALL, CID, HMS_SECRET, SECRET, World, hand_runtime
from worker.cli import launch
from worker.cli.processes import worker_argv
from worker.core import actions
from worker.core.events import HmsEvent
from worker.jobs.app import create_celery
from worker.settings import Rate, Settings, load_settings
from worker.steps import sync
from worker.steps.runtime import build_runtime
from worker.store.deadletters import DeadLetters
from worker.store.enqueue import DRAIN_QUEUE, QUEUE, QUEUES
from worker.store.state import State

# The retry policy attempt by attempt (backoff, bounds, deferral, dead letters): test_retry_policy.py.


# --- a next run that cannot be published (issue 12, item 4) ----------------------------------
# The broker is a closed port: Celery cannot publish a retry or a deferred run. The worker's
# Runtime (state, dead letters) is the test world's, on fakeredis, handed to the app as
# its tasks' `self.runtime` would build it.


@pytest.fixture
def unpublishable() -> Iterator[tuple[Celery, World]]:
    app = create_celery(Settings(redis_url="redis://127.0.0.1:1/0"))
    # Fail at once instead of after Celery's and kombu's reconnection attempts.
    app.conf.task_publish_retry = False
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "max_retries": 0}
    world = World(fakeredis.FakeRedis())
    hand_runtime(app, world.rt)
    yield app, world


@pytest.mark.redis
def test_a_forked_child_builds_its_own_runtime_which_its_tasks_share() -> None:
    """A prefork child inherits its parent's app: its tasks' `self.runtime` is built afresh there
    (checked by pid), once for all of them, and the parent keeps its own."""
    app = create_celery(Settings(redis_url=real_url(), stream_api_secret=SECRET, hms_app_secret=HMS_SECRET))
    parent = app.tasks[actions.RECONCILE].runtime
    assert app.tasks[actions.SWEEP].runtime is parent  # one per app and process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer on the pipe, then leave without running pytest's teardown
        try:
            child = app.tasks[actions.RECONCILE].runtime
            own = child is not parent and child.redis is not parent.redis and app.tasks[actions.SWEEP].runtime is child
            os.write(write, b"own" if own else b"shared")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(pid, 0)
    assert (os.read(read, 16), status) == (b"own", 0)
    assert app.tasks[actions.RECONCILE].runtime is parent
    parent.close()


@pytest.mark.redis
def test_a_drain_goes_to_its_own_queue_and_every_other_task_to_callsyncs() -> None:
    """A drain re-published at the end of its slice must not wait behind a backlog of events
    (kombu's Redis transport takes from a worker's queues in turn): the runtime's publish puts
    it on DRAIN_QUEUE, every worker consumes both."""
    client = real_redis()
    client.delete(*QUEUES)
    app = create_celery(Settings(redis_url=real_url(), stream_api_secret=SECRET, hms_app_secret=HMS_SECRET))
    rt = app.tasks[actions.RECONCILE].runtime
    try:
        rt.schedule(actions.DrainWrites("channels"))
        rt.schedule(actions.Reconcile(CID))
        waiting = {queue: [json.loads(raw)["headers"]["task"] for raw in client.lrange(queue, 0, -1)] for queue in QUEUES}
        assert waiting == {QUEUE: [actions.RECONCILE], DRAIN_QUEUE: [actions.DRAIN_WRITES]}
        routed = {name: app.amqp.router.route({}, name)["queue"].name for name in (actions.DRAIN_WRITES, actions.SWEEP)}
        assert routed == {actions.DRAIN_WRITES: DRAIN_QUEUE, actions.SWEEP: QUEUE}  # a retry and apply_async too
        assert f"--queues={QUEUE},{DRAIN_QUEUE}" in worker_argv(2, "prefork")
    finally:
        client.delete(*QUEUES)
        rt.close()
        client.close()


ROOM = {"id": "room-1", "name": CALL}


def run_task(app: Celery, name: str, *args: Any) -> None:
    task = app.tasks[name]
    task.push_request(retries=0, called_directly=False, is_eager=False, id="task-1", args=list(args), kwargs={})
    try:
        task.run(*args)
    finally:
        task.pop_request()


def channel_to_write(world: World) -> None:
    """A session recorded open whose channel does not show it yet: a reconcile writes."""
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    record_hms_event(world.rt.state, world.hms_event("session.open.success", session, room), world.now)


def test_a_retry_that_cannot_be_published_is_a_dead_letter(unpublishable):
    app, world = unpublishable
    channel_to_write(world)
    world.stream.fail_next(1, 503)
    run_task(app, actions.RECONCILE, CID)  # Celery would have rejected the message without requeue: lost
    [letter] = world.rt.dead_letters.list()
    assert letter.task == actions.RECONCILE and letter.args == [CID] and letter.attempts == 1
    assert letter.error.startswith("stream 503") and "its retry could not be published" in letter.error


def test_a_deferred_run_that_cannot_be_published_is_a_dead_letter(unpublishable):
    app, world = unpublishable
    channel_to_write(world)
    assert world.rt.state.load(CID, lock=("someone-else", 60)) is not None  # busy: the task defers
    run_task(app, actions.RECONCILE, CID)
    [letter] = world.rt.dead_letters.list()
    assert "being reconciled" in letter.error and "could not be published" in letter.error


def test_when_not_even_the_dead_letter_can_be_written_the_broker_keeps_the_message(unpublishable):
    app, world = unpublishable
    server = fakeredis.FakeServer()
    world.rt = build_runtime(world.settings, world.queue, redis_client=fakeredis.FakeRedis(server=server))
    hand_runtime(app, world.rt)
    server.connected = False  # Redis gone: the step, its retry and the dead letter all fail
    with pytest.raises(Reject) as rejected:
        run_task(app, actions.RECONCILE, CID)
    assert rejected.value.requeue is True


def test_a_dead_letter_that_cannot_be_written_gives_the_message_back(unpublishable):
    app, world = unpublishable
    channel_to_write(world)
    world.stream.fail_next(1, 400)  # a dead letter at once...
    gone = fakeredis.FakeServer()
    gone.connected = False
    world.rt.dead_letters = DeadLetters(fakeredis.FakeRedis(server=gone))  # ...where none can be written
    with pytest.raises(Reject) as rejected:
        run_task(app, actions.RECONCILE, CID)
    assert rejected.value.requeue is True  # not acknowledged and lost


def test_a_dead_letter_keeps_no_configured_secret_a_platform_quoted(unpublishable):
    # A platform's message quoting a configured secret stayed in Redis (issue 12, item 5).
    app, world = unpublishable
    quoted = f'{{"message": "app secret {HMS_SECRET} is not valid for key {SECRET}"}}'
    refusing = httpx.MockTransport(lambda _: httpx.Response(400, content=quoted.encode()))
    world.rt = build_runtime(world.settings, world.queue, redis_client=world.rt.redis, transport=refusing)
    hand_runtime(app, world.rt)
    run_task(app, actions.CHECK_SESSION, CALL, "s-1")
    assert world.rt.state.call(CALL).session is None  # nothing recorded: the check is a no-op...
    record_hms_event(world.rt.state, world.hms_event("session.open.success", {"id": "s-1", "created_at": None}, ROOM), world.now)
    run_task(app, actions.CHECK_SESSION, CALL, "s-1")  # ...until a session is: then 100ms refuses
    [letter] = world.rt.dead_letters.list()
    assert letter.error.startswith("hms 400: app secret [redacted] is not valid for key [redacted]"), letter.error
    stored = b"".join(world.rt.redis.hvals("cs:dl"))
    assert HMS_SECRET.encode() not in stored and SECRET.encode() not in stored


# --- countdowns below the visibility timeout (issue 12, item 6) ------------------------------
# kombu's in-memory broker: what the task publishes is read back with its eta and retry count.


@pytest.fixture
def hopping() -> Iterator[tuple[Celery, World]]:
    app = create_celery(Settings(redis_url="memory://", visibility_timeout_seconds=20))
    world = World(fakeredis.FakeRedis(), visibility_timeout_seconds=20)
    hand_runtime(app, world.rt)
    published(app)  # the in-memory broker is the process's: start empty
    yield app, world


def published(app: Celery) -> list[dict[str, Any]]:
    """Every message on the queue, taken off it: id, retries, args, seconds until its eta."""
    out = []
    with app.connection_for_read() as connection:
        queue = connection.SimpleQueue(QUEUE)
        while queue.qsize():
            message = queue.get(timeout=1)
            eta = message.headers.get("eta")
            wait = datetime.fromisoformat(eta).timestamp() - time.time() if eta else 0.0
            out.append({"id": message.headers["id"], "retries": message.headers["retries"], "wait": wait})
            message.ack()
        queue.close()
    return out


def run_as(app: Celery, name: str, task_id: str, retries: int, *args: Any) -> None:
    task = app.tasks[name]
    task.push_request(retries=retries, called_directly=False, is_eager=False, id=task_id, args=list(args), kwargs={})
    try:
        task.run(*args)
    except Retry:
        pass
    finally:
        task.pop_request()


def test_a_long_retry_wait_is_served_in_hops_without_spending_retries(hopping):
    app, world = hopping
    channel_to_write(world)
    # A 5xx that asks for 300 s (a 429 of Stream's pauses the channels' queue instead).
    world.stream.fail_next(1, 503, {"Retry-After": "300"})
    run_as(app, actions.RECONCILE, "t-429", 0, CID)
    [retry] = published(app)
    assert retry["id"] == "t-429" and retry["retries"] == 1 and retry["wait"] <= 10.5  # not 300 s
    calls = len(world.stream.calls)
    for _ in range(3):  # hops before the 429's time: nothing is called, the retry count stays
        world.now += 10
        run_as(app, actions.RECONCILE, "t-429", 1, CID)
        [hop] = published(app)
        assert hop["id"] == "t-429" and hop["retries"] == 1 and hop["wait"] <= 10.5
    assert len(world.stream.calls) == calls
    world.now += 271  # past the 300 s and the jitter
    run_as(app, actions.RECONCILE, "t-429", 1, CID)
    assert published(app) == [] and world.fields() == {"callActive": True, "callId": CALL}
    assert not world.rt.redis.exists("cs:wait:t-429")


def test_a_drain_past_its_slice_publishes_itself_once_at_most_a_hop_ahead(hopping):
    app, world = hopping
    world = World(world.rt.redis, visibility_timeout_seconds=20, stream_update_rate=Rate(1, 60.0))
    hand_runtime(app, world.rt)
    channel_to_write(world)
    queue = sync.CHANNELS.queue(world.rt)
    assert queue.offer("messaging:other", world.now, world.now).write_now  # the minute's one update
    offered = queue.offer(CID, world.now, world.now)
    assert not offered.write_now and offered.publish  # in line, ~60 s to its slot; a drain is due
    world.queue.take()
    run_as(app, actions.DRAIN_WRITES, "t-drain", 0, "channels")  # sleeps its slice (5 s), then gives up its turn
    [(name, args, countdown)] = world.queue.take()  # published again, once
    assert (name, args) == (actions.DRAIN_WRITES, ("channels",)) and countdown is not None and 9 <= countdown <= 10
    assert published(app) == []  # no retry, nothing deferred
    assert world.stream.calls == [] and queue.depth()[0] == 1


@pytest.mark.redis
def test_a_short_visibility_timeout_and_a_slow_ceiling_do_not_multiply_tasks():
    # The shape: with a 10 s timeout and a 1/m ceiling, 3 deferred writes became 142
    # runs. Here 4 s and 1 per 6 s: three channels' writes take 12 s, every message held by the
    # worker is watched, and none may wait past the timeout or be handed out again.
    with running_stack(visibility_timeout_seconds=4, stream_update_rate=Rate(1, 6.0)) as stack:
        cids = [f"messaging:hop-{n}" for n in range(3)]
        for cid in cids:
            stack.stream.create_channel(cid)
        started = time.time()
        for cid in cids:
            stack.hms.open_session(stack.hms.create_room(f"call-{cid}")["id"])
        held, redelivered = 0.0, []
        while time.time() - started < 20 and not all(stack.stream.call_fields(cid).get("callActive") for cid in cids):
            for payload in messages(stack.redis):
                eta = payload["headers"].get("eta")
                if eta:
                    held = max(held, datetime.fromisoformat(eta).timestamp() - time.time())
                if payload["headers"].get("redelivered") or payload["properties"]["delivery_info"].get("redelivered"):
                    redelivered.append(payload["headers"]["id"])
            time.sleep(0.1)
        assert all(stack.stream.call_fields(cid).get("callActive") for cid in cids)
        assert time.time() - started >= 11  # the ceiling held: 1 per 6 s
        assert held <= 2.5 and not redelivered, (held, redelivered)
        patches = [path for method, path, _ in stack.stream.calls if method == "PATCH"]
        assert sorted(patches) == sorted("/channels/" + cid.replace(":", "/") for cid in cids)  # one write each


def messages(client: redis.Redis) -> list[dict[str, Any]]:
    """Every task message waiting on the queue or held by a worker (kombu's `unacked` hash)."""
    waiting = [json.loads(raw) for queue in QUEUES for raw in client.lrange(queue, 0, -1)]
    held = [json.loads(raw)[0] for raw in client.hvals("unacked")]
    return waiting + held


# --- a task that kills its worker (issue 12, "also reasoned") --------------------------------
def redelivered(app: Celery, name: str, task_id: str, *args: Any) -> None:
    """Run a task as a worker runs a message Redis handed out again (kombu marks it `redelivered`)."""
    task = app.tasks[name]
    info = {"exchange": "", "routing_key": QUEUE, "priority": 0, "redelivered": True}
    task.push_request(
        retries=0, called_directly=False, is_eager=False, id=task_id, args=list(args), kwargs={}, delivery_info=info
    )
    try:
        task.run(*args)
    finally:
        task.pop_request()


def test_a_task_redelivered_past_the_bound_is_a_dead_letter_not_run(unpublishable):
    app, world = unpublishable
    channel_to_write(world)
    world.stream.create_channel("messaging:other")
    run_task(app, actions.RECONCILE, "messaging:other")  # a first delivery counts nothing
    assert not world.rt.redis.keys("cs:redeliveries:*")
    for _ in range(world.settings.max_redeliveries):  # its worker died each time, after the work
        redelivered(app, actions.RECONCILE, "killer", CID)
    assert world.rt.dead_letters.list() == [] and world.fields() == {"callActive": True, "callId": CALL}
    world.stream.fail_next(1, 400)  # were it run once more, this would be its dead letter
    calls = len(world.stream.calls)
    redelivered(app, actions.RECONCILE, "killer", CID)
    [letter] = world.rt.dead_letters.list()
    assert letter.task_id == "killer" and letter.args == [CID] and letter.attempts == 6
    assert letter.error == "redelivered 6 times: its worker died (or was stopped) each time it ran"
    assert len(world.stream.calls) == calls  # not run
    assert 0 < world.rt.redis.ttl("cs:redeliveries:killer") <= 2 * 6 * world.settings.visibility_timeout_seconds


def worker_env(platforms: Platforms, **extra: str) -> dict[str, str]:
    """`callsync worker` on the machine's Redis and the stand-ins: a 10 s visibility timeout, one task at a time."""
    return environment(platforms, real_url(), CALLSYNC_VISIBILITY_TIMEOUT_SECONDS=10, CALLSYNC_WORKER_CONCURRENCY=1, **extra)


def check_to_run(client: redis.Redis, hms: FakeHms, env: dict[str, str]) -> str:
    """A session recorded open and the task `killer` queued to check it (it asks 100ms): its session id."""
    room = hms.create_room(CALL)
    session = hms.open_session(room["id"])
    opened = HmsEvent("d-1", "session.open.success", room["id"], CALL, session["id"], time.time(), time.time(), False)
    record_hms_event(State(client), opened, time.time())
    create_celery(load_settings(env)).send_task(actions.CHECK_SESSION, args=[CALL, session["id"]], queue=QUEUE, task_id="killer")
    return str(session["id"])


@pytest.mark.redis
def test_a_task_that_kills_its_worker_is_dead_lettered_past_the_bound(tmp_path, platforms):
    # Real `callsync worker` processes, SIGKILLed while the task runs (its Stream call is held
    # open), as a task that kills its worker would have them; Redis hands it out again after the
    # visibility timeout, each time to a fresh worker.
    client = real_redis()
    hms = platforms.hms
    env = worker_env(platforms, CALLSYNC_MAX_REDELIVERIES="1")
    session_id = check_to_run(client, hms, env)
    workers: list[launch.Child] = []
    try:
        for run in range(2):  # the first delivery, then the one redelivery allowed
            hms.timeout_next(1, 30)
            workers.append(launch.start(f"worker{run}", launch.role_argv("worker"), env, tmp_path))
            launch.wait_for(lambda run=run: len(hms.calls) > run, 40, f"run {run + 1} of the task")
            os.killpg(workers[-1].process.pid, signal.SIGKILL)
            workers[-1].process.wait(10)
        workers.append(launch.start("worker2", launch.role_argv("worker"), env, tmp_path))
        [letter] = launch.wait_for(DeadLetters(client).list, 40, "the dead letter")
        assert letter.task_id == "killer" and letter.args == [CALL, session_id]
        assert letter.error == "redelivered 2 times: its worker died (or was stopped) each time it ran"
        assert len(hms.calls) == 2  # the third delivery was not run
    finally:
        launch.stop(workers)
        client.flushdb()


@pytest.mark.redis
def test_a_restore_mutex_left_by_a_dead_holder_delays_redelivery_by_seconds_not_minutes(tmp_path, platforms):
    # Workers look for tasks a dead worker held under kombu's `unacked_mutex`. A worker killed
    # (or a Redis restarted) during a look leaves the mutex behind until it expires: with
    # kombu's own 300 s every redelivery would wait five minutes (the chaos run's "did not settle").
    client = real_redis()
    hms = platforms.hms
    env = worker_env(platforms)
    check_to_run(client, hms, env)
    workers: list[launch.Child] = []
    try:
        hms.timeout_next(1, 30)
        workers.append(launch.start("worker0", launch.role_argv("worker"), env, tmp_path))
        launch.wait_for(lambda: len(hms.calls) > 0, 40, "the task's first run")
        os.killpg(workers[-1].process.pid, signal.SIGKILL)  # it holds the task, unacknowledged
        workers[-1].process.wait(10)
        killed = time.monotonic()
        with create_celery(load_settings(env)).connection_for_write() as connection:
            channel = connection.default_channel  # the mutex as a worker's channel takes it
            left = client.lock(channel.unacked_mutex_key, timeout=channel.unacked_mutex_expire)
            assert left.acquire(blocking=False)  # ...and a holder that died with it
        workers.append(launch.start("worker1", launch.role_argv("worker"), env, tmp_path))
        launch.wait_for(lambda: len(hms.calls) > 1, 40, "the redelivered run")
        waited = time.monotonic() - killed
        # The visibility timeout (10 s), then the mutex's expiry (5 s) and a look (1 s), plus a worker's start.
        assert waited < 10 + 5 + 1 + 10, waited
        launch.wait_for(lambda: not client.hlen("unacked"), 20, "the redelivered run to be acknowledged")
    finally:
        launch.stop(workers)
        client.flushdb()
