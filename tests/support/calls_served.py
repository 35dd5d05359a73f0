"""`callsync web` (and `callsync worker`) as real processes against the stand-ins and real Redis,
with a client that sends the calls API's requests exactly as stream-chat 8.61 does (path, query
`user_id` and `api_key`, headers: GetStream/stream-chat-js v8.61.0, src/client.ts
`_enrichAxiosOptions`, `getCallToken`; src/channel.ts `createCall`)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import redis

from standins import FakeHms, FakeStream, running
from standins.credentials import STREAM_KEY, STREAM_SECRET
from tests.support.roles import environment, procfile
from tests.support.servers import real_redis, real_url
from worker.cli import launch
from worker.store.enqueue import QUEUES


@dataclass
class Calls:
    stream: FakeStream
    hms: FakeHms
    web: str
    children: list[launch.Child]
    env: dict[str, str] = field(default_factory=dict)  # the roles' environment
    logs: Path | None = None
    tokens: list[str] = field(default_factory=list)  # every token sent or received, for the log check

    def start(self, role: str) -> launch.Child:
        """Start one more process of the Procfile's `role` (its web port is this one's)."""
        child = launch.start(role, procfile(int(self.env["PORT"]))[role], self.env, self.logs)
        self.children.append(child)
        return child

    def send(self, path: str, user: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
        """One request as stream-chat-js 8.61 sends it from a browser tab's client."""
        token = token or jwt.encode({"user_id": user}, STREAM_SECRET, algorithm="HS256")
        self.tokens.append(token)
        answer = httpx.post(
            f"{self.web}{path}",
            params={"user_id": user, "api_key": STREAM_KEY},
            content=json.dumps(body).encode(),
            headers={
                "authorization": token,
                "stream-auth-type": "jwt",
                "content-type": "application/json",
                "x-stream-client": "stream-chat-js-v8.61.0-browser",
                "x-client-request-id": str(uuid.uuid4()),
            },
            timeout=10,
        )
        if answer.status_code == 200 and "token" in answer.json():
            self.tokens.append(answer.json()["token"])
        return answer

    def create(self, user: str, cid: str, call_id: str) -> httpx.Response:  # channel.createCall({id, type})
        return self.send(f"/channels/{cid.replace(':', '/')}/call", user, {"id": call_id, "type": "video"})

    def join(self, user: str, call_id: str, **kw: Any) -> httpx.Response:  # client.getCallToken(callId)
        return self.send(f"/calls/{quote(call_id, safe='')}", user, {}, **kw)

    def end(self, user: str, call_id: str) -> httpx.Response:
        return self.send(f"/calls/{quote(call_id, safe='')}/end", user, {})


@contextlib.contextmanager
def serving(logs: Path, roles: Sequence[str] = ("web", "worker"), **settings: object) -> Iterator[Calls]:
    """The stand-ins, and `roles` of the Procfile started against them with `settings` (the web
    role answering /readyz, a worker ready); everything stopped and Redis flushed after."""
    store = real_redis()
    with running() as platforms:
        port = launch.free_port()
        web = f"http://127.0.0.1:{port}"
        platforms.send_webhooks_to(web)
        env = environment(platforms, real_url(), PORT=port, **settings)
        calls = Calls(platforms.stream, platforms.hms, web, [], env, logs)
        try:
            for role in roles:
                calls.start(role)
            launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 30, "the web role")
            for child in calls.children:
                if child.name == "worker" and child.log is not None:
                    log = child.log
                    launch.wait_for(lambda log=log: " ready." in log.read_text(errors="replace"), 60, "the worker")
            yield calls
        finally:
            launch.stop(calls.children)
            store.flushdb()
            store.close()


def channel(calls: Calls, tag: str, *members: str) -> str:
    cid = f"messaging:{tag}-{uuid.uuid4().hex[:8]}"
    calls.stream.create_channel(cid)
    for user in members:
        calls.stream.add_member(cid, user)
    return cid


def settle(calls: Calls, seconds: float = 20.0) -> None:
    """Wait until no webhook is being delivered and no task is waiting in the queue, ten looks in a
    row (a second: what the worker took meanwhile has run; a reconcile due later may still wait)."""
    store, calm, deadline = redis.Redis.from_url(real_url()), 0, time.monotonic() + seconds
    while calm < 10:
        assert time.monotonic() < deadline, "callsync did not settle"
        busy = calls.stream.deliveries_in_flight + calls.hms.deliveries_in_flight + sum(store.llen(q) for q in QUEUES)
        calm = 0 if busy else calm + 1
        time.sleep(0.1)
