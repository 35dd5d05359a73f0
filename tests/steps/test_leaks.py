"""docs/behaviour.md, rule 10: no secret or token in logs, error bodies or dead letters.

Scenarios run with every secret set and the stand-ins refusing calls (401, 400), so errors
are logged and dead-lettered; then everything produced is scanned.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import jwt
import pytest
import redis

from tests.support import stack as pipe
from tests.support.hostile import SECRETS, Receiver
from tests.support.roles import wait_for
from tests.support.world import CALL, CID, HMS_SECRET, SECRET, Platforms, World
from worker.core import actions
from worker.core.upstream import UpstreamError
from worker.steps import sessions, sync
from worker.steps.runtime import build_runtime
from worker.store.deadletters import DeadLetters

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+")  # any JWT: server tokens, management tokens


class Recording(httpx.BaseTransport):
    """Passes requests on and keeps every Authorization header value callsync sent."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner, self.authorizations = inner, set[str]()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.authorizations.add(request.headers.get("Authorization", ""))
        return self.inner.handle_request(request)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at DEBUG, httpx and httpcore included (callsync quiets httpx to WARNING)."""
    caplog.set_level(logging.DEBUG)
    for name in ("httpx", "httpcore", "celery", "kombu"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog


def scanned(logs: pytest.LogCaptureFixture, extra: Iterable[str]) -> str:
    records = [f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in logs.records]
    return "\n".join([logs.text, *records, *extra])


def assert_clean(text: str, secrets: Iterable[str]) -> None:
    for secret in secrets:
        assert secret and secret not in text, f"a secret ({secret[:4]}...) was found"
    assert not JWT.search(text), JWT.search(text)


def test_no_secret_in_logs_error_bodies_or_dead_letters(redis_client: redis.Redis, logs: pytest.LogCaptureFixture) -> None:
    world = World(redis_client)
    transport = Recording(Platforms(world.stream, world.hms))
    world.rt = build_runtime(world.settings, world.queue, redis_client=redis_client, transport=transport, clock=lambda: world.now)
    receiver = Receiver(redis_client)
    produced: list[str] = []

    # The receiver: forged and refused deliveries.
    answers = [
        receiver.post_stream(b'{"type":"channel.updated"}', signed=False, headers={"X-Signature": "0" * 64}),
        receiver.post_stream(b"{", signed=True),
        receiver.post_hms(b"{}", secret="guess"),
        receiver.post_hms(b"{}", secret=None),
        receiver.post_hms(b"[]"),
        receiver.post_hms(b" " * 5000),
    ]
    produced += [a.text for a in answers]
    assert {a.status_code for a in answers} == {400, 401, 413}

    # The worker: Stream refuses the write (401, then 400), 100ms refuses twice (the renewed token too).
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    world.stream.fail_next(1, 401)
    world.hms.fail_next(2, 401)
    failures: list[tuple[str, tuple[Any, ...], UpstreamError]] = []
    steps: list[tuple[str, Callable[[], None]]] = [
        ("callsync.apply_hms_event", lambda: world.deliver_hms(world.hms_event("session.open.success", session, room))),
        (actions.END_SESSION, lambda: sessions.end_session(world.rt, CALL, session["id"], "test")),
    ]
    for task, step in steps:
        try:
            step()
        except UpstreamError as error:
            failures.append((task, (session["id"],), error))
    world.stream.fail_next(1, 400)
    try:
        sync.reconcile_channel(world.rt, CID)
    except UpstreamError as refused:
        failures.append((actions.RECONCILE, (CID,), refused))
    assert [e.status for _, _, e in failures] == [401, 401, 400]

    # What worker.tasks.run_step keeps for an error that is not retried.
    letters = DeadLetters(redis_client)
    for task, args, failure in failures:
        letters.add(task, list(args), str(failure), 1, world.now)
    produced += [json.dumps(vars(letter)) for letter in letters.list()]

    assert transport.authorizations and all(transport.authorizations)
    server_jwt = jwt.encode({"server": True}, SECRET, algorithm="HS256")
    assert any(r.name == "httpx" for r in logs.records)  # the scan saw the request log lines too
    assert_clean(scanned(logs, produced), [*SECRETS, SECRET, HMS_SECRET, server_jwt, *transport.authorizations])


@pytest.mark.redis
def test_no_secret_leaves_a_real_worker(logs: pytest.LogCaptureFixture) -> None:
    """The same through the receiver, a real Celery worker (run_step's own dead letters) and real Redis."""
    with pipe.running_stack() as world:
        _refused_write_leaves_no_secret(world, logs)


def _refused_write_leaves_no_secret(world: pipe.Stack, logs: pytest.LogCaptureFixture) -> None:
    stream, hms, client = world.stream, world.hms, world.redis
    stream.create_channel(pipe.CID)
    stream.fail_next(1, 401)
    room = hms.create_room(pipe.CALL)
    hms.open_session(room["id"])  # its webhook reaches the receiver; the worker's write is refused
    forged = httpx.post(f"{world.web}/webhooks/hms", content=b"{}", headers={"X-Callsync-Secret": "guess"})
    [letter] = wait_for(DeadLetters(client).list)
    assert "stream 401" in letter.error and forged.status_code == 401
    server_jwt = jwt.encode({"server": True}, pipe.SECRET, algorithm="HS256")
    produced = [forged.text, json.dumps(vars(letter))]
    # The worker logs the dead letter just after storing it: wait for the line, not only the letter.
    wait_for(lambda: any("dead-lettered" in r.getMessage() for r in logs.records))
    assert_clean(scanned(logs, produced), [pipe.SECRET, pipe.HMS_SECRET, pipe.HOOK_SECRET, server_jwt])
