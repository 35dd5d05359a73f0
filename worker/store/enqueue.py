"""Celery's queue, and the receiver's one atomic step: dedupe and enqueue together.

The receiver does not use `apply_async` (a round trip of its own per call): it pushes a message
in the shape Celery itself builds onto the queue, in the same Lua call that spends the
delivery's dedupe key. Either both happen or neither does (docs/http.md: nothing
half-recorded). The same call refuses a delivery while the queue holds its ceiling
(CALLSYNC_MAX_QUEUE_DEPTH; LLEN is O(1)): with no worker draining it, each accepted webhook
would add about 1.8 KB to Redis for good. Concurrent requests of one process share a pipelined round trip (group
commit); each still waits for its own outcome before it answers.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from worker.core import binding
from worker.core.actions import DRAIN_WRITES
from worker.core.channels import WRITE_INTENT_SECONDS, may_settle_stream, stream_news
from worker.core.events import HmsEvent, StreamEvent
from worker.core.sessions import may_settle_at_ingest, start_ms
from worker.store import scripts
from worker.store.keys import (
    BOUND_CHANNELS,
    CALL_TTL,
    MAX_BINDINGS,
    bindings_key,
    call_key,
    channel_key,
    owed_key,
    owner_key,
    peers_key,
)
from worker.store.peers import record_peer_args
from worker.store.scripts import Script

QUEUE = "callsync"  # every task but the drains: the receiver's events, follow-ups, beat's
# The write queues' drains (worker/steps/writes.py) in a broker list of their own, which every
# worker consumes beside QUEUE (kombu's Redis transport takes from its queues in turn): a drain
# re-published at the end of its slice does not wait behind a backlog of events, so the
# endpoint keeps writing at its ceiling while the worker works through them.
DRAIN_QUEUE = "callsync.drain"
QUEUES = (QUEUE, DRAIN_QUEUE)
MAX_BATCH = 128
WAIT_SECONDS = 5.0  # longer than any healthy round trip; then the request answers 503

_DEDUPE_AND_PUSH = Script.named("dedupe_and_push", "peer_merge", "settle_echo")
DEFAULT_MAX_DEPTH = 100_000  # about 180 MB of Redis, minutes of a platform's peak
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def queue_of(task: str) -> str:
    """The broker list a task is published to."""
    return DRAIN_QUEUE if task == DRAIN_WRITES else QUEUE


def route(name: str, *_: Any, **__: Any) -> dict[str, str]:
    """Celery's router (the app's `task_routes`): a task's queue for every publish and retry."""
    return {"queue": queue_of(name)}


def send(app: Celery, task: str, args: Sequence[Any], countdown: float | None = None) -> None:
    """Publish `task` with `args` to its queue (`route`), after `countdown` seconds."""
    app.send_task(task, args=list(args), countdown=countdown)


class MessageTemplate:
    """Celery protocol-2 messages in kombu's Redis envelope, as `apply_async` pushes them.

    The static parts come from Celery's own `as_task_v2` once per task name; per message
    only the ids and the arguments change.
    """

    def __init__(self, app: Celery, queue: str = QUEUE):
        self._app, self._queue = app, queue
        self._headers: dict[str, dict[str, Any]] = {}

    def _static_headers(self, task_name: str) -> dict[str, Any]:
        if task_name not in self._headers:
            message = self._app.amqp.as_task_v2("-", task_name, args=(), kwargs={}, argsrepr=f"<{task_name}>")
            self._headers[task_name] = dict(message.headers)
        return self._headers[task_name]

    def render(self, task_name: str, args: tuple[Any, ...]) -> str:
        task_id = str(uuid.uuid4())
        body = json.dumps([list(args), {}, _EMBED], separators=(",", ":")).encode()
        envelope = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {**self._static_headers(task_name), "id": task_id, "root_id": task_id},
            "properties": {
                "correlation_id": task_id,
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self._queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
        return json.dumps(envelope, separators=(",", ":"))


@dataclass(frozen=True)
class Settle:
    """What lua/dedupe_and_push.lua needs to settle an event at ingest: the kind of rule
    ("peer": `settle_hms`, "echo": `settle_stream`), its keys and its arguments."""

    kind: str
    keys: list[str]
    args: list[Any]


def settle_hms(event: HmsEvent, now: float) -> Settle | None:
    """The half of core.sessions.settled_at_ingest that needs the recorded call, for the Lua step
    to decide (None: the event alone says it goes to the worker). Settled, it records the peer
    and keeps the bound index at `now` as the worker would (indexes.py `bound_index`)."""
    if not may_settle_at_ingest(event, now) or event.room_name is None or event.started_at is None:
        return None
    call_id = binding.call_of_room(event.room_name)
    named = binding.cid_of_room(call_id) or ""
    keys = [call_key(call_id), peers_key(event.session_id), BOUND_CHANNELS, owed_key(call_id)]
    args = [event.session_id, start_ms(event.started_at), *record_peer_args(event.peer()), named, repr(now), repr(now - CALL_TTL)]
    return Settle("peer", keys, args)


def settle_stream(event: StreamEvent, now: float) -> Settle | None:
    """The half of core.channels.stream_settled_at_ingest that needs the channel's record and
    binding, for the Lua step (lua/settle_echo.lua) to decide (None: the event alone says it
    goes to the worker). Settled, it binds the call shown again and moves the record's version
    as the worker would (state.py `record_stream_event`), at `now`."""
    news = stream_news(event, now) if may_settle_stream(event) else None
    if news is None or news.fields is None:
        return None
    call_id = news.fields.call_id or ""
    keys = [channel_key(news.cid)]
    if call_id:
        keys += [owner_key(call_id), bindings_key(news.cid), BOUND_CHANNELS]
    named = binding.cid_of_room(call_id) or ""
    active = "1" if news.fields.active else "0"
    args = [news.cid, active, call_id, repr(news.version), repr(now), CALL_TTL, MAX_BINDINGS, named, repr(WRITE_INTENT_SECONDS)]
    return Settle("echo", keys, args)


class QueueFull(Exception):
    """The queue holds CALLSYNC_MAX_QUEUE_DEPTH messages: nothing was recorded (answer 503)."""


@dataclass
class _Pending:
    keys: list[str]
    message: str
    settle: Settle | None = None
    done: threading.Event = field(default_factory=threading.Event)
    taken: bool = False
    error: BaseException | None = None


class Enqueuer:
    """Dedupe-and-enqueue for the webhook receiver, group-committed per process."""

    def __init__(self, client: redis.Redis, app: Celery, dedupe_ttl: int, queue: str = QUEUE, max_depth: int = DEFAULT_MAX_DEPTH):
        self._client = client
        self._template = MessageTemplate(app, queue)
        self._ttl, self._queue, self._max_depth = dedupe_ttl, queue, max_depth
        self._pending: list[_Pending] = []
        self._start_lock = threading.Lock()
        self._wake = threading.Condition()
        self._flusher_pid: int | None = None

    @property
    def queue(self) -> str:
        return self._queue

    @property
    def max_depth(self) -> int:
        return self._max_depth

    def message(self, task_name: str, args: tuple[Any, ...]) -> str:
        """The queue message that runs `task_name(*args)`, for a store step that pushes it itself
        in the same atomic step as a write (worker/store/ending.py)."""
        return self._template.render(task_name, args)

    def enqueue_once(
        self, dedupe_keys: str | Sequence[str] | None, task_name: str, args: tuple[Any, ...], settle: Settle | None = None
    ) -> bool:
        """Enqueue unless one of `dedupe_keys` was already spent (then spend them all); False
        means duplicate. With `settle` (`settle_hms`, `settle_stream`), an event the recorded state
        shows to change nothing is settled in the same step instead (its keys spent, no task: True).

        Raises redis.RedisError when Redis cannot take it and QueueFull when the queue is at
        its ceiling (the caller answers 503 to both).
        """
        keys = [dedupe_keys] if isinstance(dedupe_keys, str) else list(dedupe_keys or ())
        item = _Pending([*keys, self._queue], self._template.render(task_name, args), settle)
        if self._flusher_pid != os.getpid():
            self._start_flusher()
        with self._wake:
            self._pending.append(item)
            self._wake.notify()
        if not item.done.wait(WAIT_SECONDS):
            raise redis.TimeoutError("enqueue did not complete in time")
        if item.error is not None:
            raise item.error
        return item.taken

    def _start_flusher(self) -> None:
        # Started lazily in the process that serves: gunicorn forks (and a gevent worker
        # patches threading) after the app is built, so the primitives are made here.
        with self._start_lock:
            if self._flusher_pid == os.getpid():
                return
            self._pending, self._wake = [], threading.Condition()
            threading.Thread(target=self._flush_forever, name="callsync-enqueue", daemon=True).start()
            self._flusher_pid = os.getpid()

    def _flush_forever(self) -> None:
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._flush(batch)

    def _flush(self, batch: list[_Pending]) -> None:
        try:
            calls = [_call(item, self._ttl, self._max_depth) for item in batch]
            results = scripts.run(self._client, calls)
        except Exception as exc:  # Redis down, or a bug: fail this batch, but keep the flusher alive
            results = [exc] * len(batch)
        for item, result in zip(batch, results, strict=True):
            if isinstance(result, BaseException):
                item.error = result
            elif result == -1:
                item.error = QueueFull(f"the queue holds {self._max_depth} messages")
            else:
                item.taken = bool(result)
            item.done.set()


def _call(item: _Pending, ttl: int, max_depth: int) -> scripts.ScriptCall:
    settle = item.settle or Settle("", [], [])
    args = (item.message, ttl, max_depth, len(settle.keys), settle.kind, *settle.args)
    return (_DEDUPE_AND_PUSH, [*item.keys, *settle.keys], args)
