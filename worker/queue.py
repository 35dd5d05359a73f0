"""Celery's queue, and the receiver's one atomic step: dedupe and enqueue together.

The receiver does not use `apply_async`: it pushes a message Celery itself built onto
the queue in the same Lua call that spends the delivery's dedupe key. Either both
happen or neither does (CONTRACT §3: nothing half-recorded), in one round trip.
"""

from __future__ import annotations

import base64
import uuid
from typing import Any

import redis
from celery import Celery
from kombu.utils.json import dumps

QUEUE = "callsync"

_DEDUPE_AND_PUSH = """
local n = #KEYS
if n == 2 and not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
redis.call('LPUSH', KEYS[n], ARGV[1])
return 1
"""


def task_message(app: Celery, task_name: str, args: tuple[Any, ...], queue: str = QUEUE) -> str:
    """A Celery protocol-2 task in kombu's Redis envelope, as `apply_async` would push it."""
    task_id = str(uuid.uuid4())
    message = app.amqp.as_task_v2(task_id, task_name, args=args, kwargs={}, argsrepr=f"<{task_name}>")
    body = base64.b64encode(dumps(message.body).encode()).decode()  # type: ignore[no-untyped-call]
    properties = {
        **message.properties,
        "delivery_mode": 2,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    envelope = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": message.headers,
        "properties": properties,
    }
    return str(dumps(envelope))  # type: ignore[no-untyped-call]


class Enqueuer:
    """Dedupe-and-enqueue for the webhook receiver."""

    def __init__(self, client: redis.Redis, app: Celery, dedupe_ttl: int, queue: str = QUEUE):
        self._script = client.register_script(_DEDUPE_AND_PUSH)
        self._app, self._ttl, self._queue = app, dedupe_ttl, queue

    def enqueue_once(self, dedupe_key: str | None, task_name: str, args: tuple[Any, ...]) -> bool:
        """Enqueue unless `dedupe_key` was already spent; False means duplicate."""
        message = task_message(self._app, task_name, args, self._queue)
        keys = [dedupe_key, self._queue] if dedupe_key else [self._queue]
        return bool(self._script(keys=keys, args=[message, self._ttl]))
