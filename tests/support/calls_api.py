"""The calls API's test setup: the web app's test client as stream-chat-js sends requests, the
stand-ins on sockets kept per module (fresh fakes per test), and the settings that join them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jwt
import redis
from flask.testing import FlaskClient

from standins import FakeHms, FakeStream
from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from webhooks.app import create_app
from worker.settings import Settings
from worker.store.enqueue import QUEUE

Served = tuple[FakeStream, FakeHms, str, str]  # the stand-ins and their URLs

CID, CALL = "messaging:general", "call-messaging:general"


@dataclass
class Web:
    client: FlaskClient
    stream: FakeStream
    hms: FakeHms
    redis: redis.Redis
    settings: Settings

    def post(self, path: str, user: str | None = "alice", body: Any = None, token: str | None = None, **query: str) -> Any:
        """POST as stream-chat-js 8.61 does."""
        headers = {
            "stream-auth-type": "jwt",
            "x-stream-client": "stream-chat-js-v8.61.0-browser",
            "x-client-request-id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        }
        if token or user:
            headers["authorization"] = token or user_token(user or "")
        params = {"api_key": KEY, **({"user_id": user} if user else {}), **query}
        return self.client.post(path, query_string=params, json=body if body is not None else {}, headers=headers)

    def create(self, user: str = "alice", call_id: str = CALL, cid: str = CID, **kw: Any) -> Any:
        return self.post(f"/channels/{cid.replace(':', '/')}/call", user, {"id": call_id, "type": "video"}, **kw)

    def join(self, user: str = "alice", call_id: str = CALL, **kw: Any) -> Any:
        return self.post(f"/calls/{quote(call_id, safe='')}", user, **kw)

    def end(self, user: str = "alice", call_id: str = CALL) -> Any:
        return self.post(f"/calls/{quote(call_id, safe='')}/end", user)

    def stream_calls(self, path: str) -> int:
        return sum(1 for _, p, _ in self.stream.calls if p == path)


def user_token(user_id: str, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"user_id": user_id, **claims}, secret, algorithm="HS256")


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, HMS_SECRET, algorithms=["HS256"])


def queued(client: redis.Redis) -> list[tuple[str, list[Any]]]:
    out = []
    for raw in client.lrange(QUEUE, 0, -1):
        envelope = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        out.append((envelope["headers"]["task"], args))
    return out


def settings_for(stream_url: str, hms_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": "redis://unused",
        "stream_api_key": KEY,
        "stream_api_secret": SECRET,
        "stream_rotation_secrets": ("old-stream-secret-long-enough-for-hs256",),
        "stream_base_url": stream_url,
        "hms_access_key": HMS_KEY,
        "hms_app_secret": HMS_SECRET,
        "hms_base_url": hms_url,
        "hms_webhook_secrets": ("hook",),
    }
    return Settings(**(values | overrides))


class Swap:
    """A WSGI app that forwards to whichever app it holds: one socket per module, fresh fakes per test."""

    def __init__(self) -> None:
        self.app: Any = None

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return self.app(environ, start_response)


def web_for(served: Served, redis_client: redis.Redis, **overrides: Any) -> Web:
    stream, hms, stream_url, hms_url = served
    settings = settings_for(stream_url, hms_url, **overrides)
    return Web(create_app(settings, redis_client).test_client(), stream, hms, redis_client, settings)
