"""Hypothesis strategies for hostile webhook input, and a receiver to throw it at."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import socketserver
import threading
import time
import zlib
from typing import Any

import redis
from flask.testing import FlaskClient
from hypothesis import strategies as st
from werkzeug.test import TestResponse

from standins.credentials import HMS_SECRET
from standins.credentials import STREAM_SECRET as SECRET
from webhooks.app import create_app
from worker.core.events import HMS_TYPES, STREAM_TYPES
from worker.core.signing import sign_stream
from worker.settings import Settings
from worker.store.enqueue import QUEUE

OLD_HMS_SECRET = "old-hms-secret-long-enough-0123456789"
SECRETS = (SECRET, HMS_SECRET, OLD_HMS_SECRET)
LIMIT = 4096
SETTINGS = Settings(
    redis_url="redis://unused", stream_api_secret=SECRET, hms_webhook_secrets=(OLD_HMS_SECRET, HMS_SECRET), max_body_bytes=LIMIT
)

# Strings chosen to hit the parsers' edges: ids with colons and key prefixes, paths, times.
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "\ud800",
    "\udfff\ud800",
    "\U0001f600",
    "\u202e",
    "a:b",
    "messaging:general",
    "messaging:../../x",
    "messaging:a?x=1#f",
    "messaging:.",
    "messaging:..",
    "call-messaging:general",
    "CALL-Messaging:General",
    "call-a:b:c",
    "cs:s:x",
    "cs:dd:hms:x",
    ":",
    "::",
    "a" * 300,
    "2026-11-20T10:00:00Z",
    "2026-11-20T10:00:00.123456789123Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+14:00",
    "2026-13-45T99:99:99Z",
    "server",
    *sorted(STREAM_TYPES | HMS_TYPES),
]

any_char = st.characters(exclude_categories=())  # surrogates and control characters included
hostile_text = st.text(any_char, max_size=24) | st.sampled_from(ODD_STRINGS)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | hostile_text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4),
    max_leaves=12,
)
field = hostile_text | json_values  # what a known field might carry instead of its type


def known(*plausible: str) -> st.SearchStrategy[Any]:
    """A known field: mostly a plausible value, often hostile text, sometimes the wrong type."""
    return st.one_of(st.sampled_from(plausible), hostile_text, st.sampled_from(plausible), field)


def _maybe(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


ids = known("65f0c1d2e3a4b5c6d7e8f9aa", "r1", "s-\ud800", "\x00")
cids = known("messaging:general", "a:b", "messaging:\ud800", "messaging:a\x00b", "messaging:!members-x")
call_ids = known("call-messaging:general", "call-a:b", "Call-A:B", "room.1")
times = known("2026-11-20T10:00:00Z", "2026-11-20T10:00:00.123456789Z", "2026-11-20T10:00:00+05:30")

call_fields = _maybe(callActive=st.booleans() | field, callId=call_ids)
channel = _maybe(cid=cids, type=known("messaging"), id=known("general", "b"), updated_at=times, data=call_fields | field)
stream_events = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(STREAM_TYPES)) | field, "cid": cids},
    optional={
        "channel_type": known("messaging"),
        "channel_id": known("general"),
        "channel": channel | field,
        "created_at": times,
        "user": _maybe(id=ids) | field,
        "request_info": _maybe(type=known("server", "client")) | field,
    },
)
hms_data = st.fixed_dictionaries(
    {"room_id": ids, "session_id": ids},
    optional={
        "room_name": call_ids,
        "session_started_at": times,
        "session_stopped_at": times,
        "left_at": times,
        "joined_at": times,
    },
)
hms_events = st.fixed_dictionaries(
    {"id": ids, "type": st.sampled_from(sorted(HMS_TYPES)) | field, "data": hms_data | field},
    optional={"timestamp": times, "is_replay": st.booleans() | field},
)


def encode(value: object, ascii_only: bool) -> bytes:
    """JSON as a sender might write it; lone surrogates either escaped or as raw (invalid) UTF-8."""
    if ascii_only:
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


json_bodies = st.builds(encode, json_values | stream_events | hms_events, st.booleans())
bodies = st.binary(max_size=256) | json_bodies


class Receiver:
    """The Flask app on a given Redis, with helpers to post and to read what it queued."""

    def __init__(self, client: redis.Redis, settings: Settings = SETTINGS):
        self.redis = client
        self.http: FlaskClient = create_app(settings, client).test_client()

    def post_stream(
        self, body: bytes, signed: bool = True, compress: bool = False, headers: dict[str, str] | None = None
    ) -> TestResponse:
        sent = {"X-Signature": sign_stream(body, SECRET)} if signed else {}
        data = gzip.compress(body) if compress else body
        return self.http.post("/webhooks/stream", data=data, headers={**sent, **(headers or {})})

    def post_hms(self, body: bytes, secret: str | None = HMS_SECRET, headers: dict[str, str] | None = None) -> TestResponse:
        sent = {"X-Callsync-Secret": secret} if secret is not None else {}
        return self.http.post("/webhooks/hms", data=body, headers={**sent, **(headers or {})})

    def keyspace(self) -> dict[bytes, tuple[bytes | None, bool]]:
        """Every key with its serialized value and whether it has a TTL."""
        return {key: (self.redis.dump(key), self.redis.pttl(key) >= 0) for key in self.redis.scan_iter(count=1000)}

    def queued(self) -> list[tuple[str, dict[str, Any]]]:
        """(task name, event) of every message on the Celery queue, oldest first."""
        out = []
        for raw in reversed(self.redis.lrange(QUEUE, 0, -1)):
            envelope = json.loads(raw)
            args, _, _ = json.loads(base64.b64decode(envelope["body"]))
            out.append((envelope["headers"]["task"], args[0]))
        return out


def assert_well_formed(answer: TestResponse) -> dict[str, Any]:
    """docs/http.md: a JSON object, `error` on 4xx/5xx and `status` on 2xx, no secret echoed."""
    body = answer.get_json(silent=True)
    assert isinstance(body, dict), answer.data[:200]
    if answer.status_code >= 400:
        assert set(body) == {"error"} and isinstance(body["error"], str), body
    else:
        assert set(body) == {"status"} and body["status"] in ("accepted", "duplicate", "ignored"), body
    for secret in SECRETS:
        assert secret not in answer.text
    return body


class HostileUpstream:
    """A platform gone bad, on loopback: answers that never end, inflate without bound, drip a
    byte at a time, or carry terminal control sequences. The path picks the behaviour; `sent`
    counts body bytes written.

    Every behaviour stops by itself (`give_up_bytes`, `give_up_seconds`), so a client
    without bounds fails its test instead of hanging it.
    """

    CHUNK = b"x" * 65536

    def __init__(self, give_up_bytes: int = 48 * 1024 * 1024, drip_every: float = 0.25, give_up_seconds: float = 6.0):
        self.give_up_bytes, self.drip_every, self.give_up_seconds = give_up_bytes, drip_every, give_up_seconds
        self.message = "\x1b]0;owned\x07\x1b[2J\x1b[31mredder than red\u202e"  # terminal control sequences
        self.sent = 0
        self.closed_by_client = threading.Event()
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                request = b""
                while b"\r\n\r\n" not in request:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    request += data
                path = request.split(b" ", 2)[1].split(b"?")[0].decode()
                try:
                    upstream.behave(self.request, path)
                except OSError:  # the client hung up: what a bounded client does
                    upstream.closed_by_client.set()

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def behave(self, sock: socket.socket, path: str) -> None:
        if path.startswith("/endless"):
            status = b"500 Internal Server Error" if "error" in path else b"200 OK"
            sock.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            while self.sent < self.give_up_bytes:
                sock.sendall(b"10000\r\n" + self.CHUNK + b"\r\n")
                self.sent += len(self.CHUNK)
            sock.sendall(b"0\r\n\r\n")
        elif path.startswith("/gzip-bomb"):
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n")
            squeeze, zeros = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16), bytes(1024 * 1024)
            for _ in range(self.give_up_bytes // len(zeros)):  # inflates to give_up_bytes
                part = squeeze.compress(zeros)
                if part:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                    self.sent += len(part)
            tail = squeeze.flush()
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))
        elif path.startswith("/hostile-message"):  # a 400 whose `message` is what `self.message` says
            body = json.dumps({"message": self.message}).encode()
            head = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
            sock.sendall(head + body)
        elif path.startswith("/drip"):
            head, body = b"HTTP/1.1 200 OK\r\nContent-Length: 116\r\n\r\n", b'{"channels": []}' + b" " * 100
            if path.startswith("/drip-body"):  # headers at once, then the body a byte at a time
                sock.sendall(head)
                head = b""
            started = time.monotonic()
            for byte in head + body:
                if time.monotonic() - started > self.give_up_seconds:
                    return
                sock.sendall(bytes([byte]))
                self.sent += 1
                time.sleep(self.drip_every)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
