"""What a worker process works with: settings, state, clients; built once per process."""

from __future__ import annotations

import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx
import jwt
import jwt.warnings
import redis

from worker import connect
from worker.clients.hms import HmsClient, ManagementAuth
from worker.clients.http import upstream_client
from worker.clients.stream import StreamAuth, StreamClient
from worker.core.actions import Scheduled
from worker.logs import fields
from worker.ops.counters import Tally, upstream_counter
from worker.settings import Settings
from worker.store.deadletters import DeadLetters
from worker.store.state import State

log = logging.getLogger("callsync.upstream")
# httpx logs every request URL at INFO, and Stream's carries `api_key`: keep it quiet.
logging.getLogger("httpx").setLevel(logging.WARNING)
# The platforms choose their secrets' length; a warning per token helps nobody.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)


class Deferred(Exception):
    """Not a failure: run the same task again in `seconds` (busy lock, rate ceiling)."""

    def __init__(self, seconds: float, why: str):
        super().__init__(why)
        self.seconds = seconds


class Publish(Protocol):
    """Send a task by name (Celery's send_task; tests record it)."""

    def __call__(self, task: str, args: tuple[Any, ...], countdown: float | None = None) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    state: State
    stream: StreamClient
    hms: HmsClient
    dead_letters: DeadLetters
    publish: Publish
    tally: Tally
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep  # the drain's waits for its slot (tests move their clock)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def schedule(self, action: Scheduled, countdown: float | None = None) -> None:
        """Run `action` as its task, after `countdown` seconds."""
        self.publish(action.task, action.args(), countdown)

    def close(self) -> None:
        for close in self.closers:
            close()


# Whose locks a step takes: the task's id, the same for its retries, its deferred runs and its
# redeliveries, so a later run takes back at once a lock its earlier run could not release (its
# worker was killed, or Redis went away before the unlock) instead of waiting out the lock time.
_acting_for: ContextVar[str | None] = ContextVar("callsync_acting_for", default=None)


@contextmanager
def acting_for(task_id: str | None) -> Iterator[None]:
    """Run the steps inside on behalf of `task_id` (None: each lock gets a fresh token)."""
    reset = _acting_for.set(task_id)
    try:
        yield
    finally:
        _acting_for.reset(reset)


def lock_token() -> str:
    """The token for a lock a step takes now: the task's id inside `acting_for`, else a fresh one."""
    return _acting_for.get() or uuid.uuid4().hex


def dry_run_answer(request: httpx.Request) -> httpx.Response:
    """CALLSYNC_DRY_RUN (served by httpx.MockTransport): log each request exactly, answer as the
    platform would, send nothing."""
    body = json.loads(request.content) if request.content else None
    url = request.url.copy_remove_param("api_key")
    log.info("dry run: %s %s", request.method, url, extra=fields(dry_run=True, method=request.method, url=str(url), json=body))
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as Stream stamps updated_at
    path = request.url.path
    if request.method == "PATCH" and "/channels/" in path:
        channel: dict[str, Any] = {"updated_at": now}
        for dotted, value in (body or {}).get("set", {}).items():
            _set_path(channel, dotted, value)
        return httpx.Response(200, json={"channel": channel})
    if request.method == "POST" and path.endswith("/channels"):
        cid = ((body or {}).get("filter_conditions") or {}).get("cid", "")
        kind, _, ident = str(cid).partition(":")
        return httpx.Response(200, json={"channels": [{"channel": {"cid": cid, "type": kind, "id": ident}}]})
    if path.endswith("/end-room"):
        return httpx.Response(200, json={"message": "session is ending"})
    return httpx.Response(200, json={"data": []})


def _set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[leaf] = value


def build_runtime(
    settings: Settings,
    publish: Publish,
    *,
    redis_client: redis.Redis | None = None,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> Runtime:
    """Wire one process's runtime. Tests hand in fakeredis and an httpx MockTransport."""
    client = redis_client or connect.redis_client(settings.redis_url or "redis://127.0.0.1:6379/0", health_check_interval=30)
    if settings.dry_run:
        transport = httpx.MockTransport(dry_run_answer)
    stream_http = upstream_client(
        settings.stream_base_url, StreamAuth(settings.stream_api_key, settings.stream_api_secret or "unset"), transport
    )
    hms_http = upstream_client(  # management tokens live in wall time
        settings.hms_base_url, ManagementAuth(settings.hms_access_key, settings.hms_app_secret or "unset"), transport
    )
    tally = Tally()
    count_call = upstream_counter(tally)
    return Runtime(
        settings=settings,
        redis=client,
        state=State(client),
        stream=StreamClient(stream_http, settings.field_path, count_call),
        hms=HmsClient(hms_http, count_call),
        dead_letters=DeadLetters(client, settings.secrets),
        publish=publish,
        tally=tally,
        clock=clock,
        sleep=sleep,
        closers=[stream_http.close, hms_http.close],
    )
