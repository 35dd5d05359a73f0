"""Local stand-ins for Stream Chat and 100ms (test support, not part of callsync).

Each fake is a plain Flask WSGI app that checks requests the way the real platform does
(wire facts: /work/shared/reference/stream-chat.md and 100ms.md), records what it received
in ``calls`` and queues the webhooks the platform would send in ``outbox``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.types import WSGIApplication

import httpx
import jwt
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import WSGIRequestHandler, make_server

Json = dict[str, Any]
Call = tuple[str, str, Json | None]
Webhook = tuple[dict[str, str], bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STREAM_CODES = {400: 4, 401: 5, 404: 16, 429: 9}  # Stream error codes by HTTP status
_ROOM_NAME = re.compile(r"^[A-Za-z0-9.\-:_]+$")


def rfc3339(ts: float, micro: bool = True) -> str:
    """UTC time as RFC3339 with a Z suffix (microseconds unless ``micro`` is false)."""
    return _rfc3339_us(round(ts * 1_000_000)) if micro else datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339_us(us: int) -> str:
    return (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


def _decode(token: str, secret: str, **kw: Any) -> Json:
    """HS256 verify; short test secrets must not trip PyJWT's key-length warning (tests run with -W error)."""
    with warnings.catch_warnings(action="ignore"):
        return jwt.decode(token, secret, algorithms=["HS256"], **kw)


def _hex_id() -> str:
    return uuid.uuid4().hex[:24]  # 100ms ids are 24 hex characters


class _Fake:
    """Shared plumbing: lock, call log, injected failures and delays, webhook outbox."""

    def __init__(self, name: str, webhook_url: str | None) -> None:
        self.app = Flask(name)
        self.webhook_url = webhook_url
        self.calls: list[Call] = []
        self.outbox: list[Webhook] = []
        self._lock = threading.Lock()
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._delays: list[float] = []
        self.app.before_request(self._gate)
        self.app.register_error_handler(HTTPException, self._http_error)

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        """The next ``n`` authenticated API calls answer ``status`` (still recorded in ``calls``)."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}))] * n)

    def timeout_next(self, n: int, seconds: float) -> None:
        """The next ``n`` authenticated API calls sleep ``seconds`` first, then proceed normally."""
        with self._lock:
            self._delays.extend([seconds] * n)

    def _authenticate(self) -> str | None:
        """Return why the current request is not authenticated, or None."""
        raise NotImplementedError

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        raise NotImplementedError

    def _gate(self) -> Response | None:
        """Before every request: authenticate, record, then apply an injected delay or failure."""
        problem = self._authenticate()
        if problem is not None:
            return self._error(401, problem)
        body = request.get_json(silent=True)
        with self._lock:
            self.calls.append((request.method, request.path, body if isinstance(body, dict) else None))
            delay = self._delays.pop(0) if self._delays else 0.0
            failure = self._failures.pop(0) if self._failures else None
        if delay:
            time.sleep(delay)
        if failure is not None:
            return self._error(failure[0], f"injected failure (HTTP {failure[0]})", failure[1])
        return None

    def _http_error(self, exc: HTTPException) -> Response:
        return self._error(exc.code or 500, exc.description or exc.name)

    def _deliver(self, hook: Webhook | None) -> None:
        """POST a queued webhook to ``webhook_url`` in a background thread, ignoring errors."""
        if hook is None or self.webhook_url is None:
            return
        url, (headers, body) = self.webhook_url, hook

        def post() -> None:
            with contextlib.suppress(Exception):
                httpx.post(url, content=body, headers=headers, timeout=5)

        threading.Thread(target=post, daemon=True).start()


def _apply(obj: Json, sets: Json, unsets: list[str]) -> None:
    """Stream partial update: dotted paths reach nested fields; ``set`` creates missing parents."""
    for path, value in sets.items():
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = copy.deepcopy(value)
    for path in unsets:
        *parents, leaf = path.split(".")
        node = obj
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.pop(leaf, None)


class FakeStream(_Fake):
    """Stream Chat server-side REST API: partial update, QueryChannels, channel.updated webhooks."""

    def __init__(self, api_key: str, api_secret: str, webhook_url: str | None = None, field_prefix: str = "data.") -> None:
        super().__init__("fake_stream", webhook_url)
        self.api_key, self.api_secret, self.field_prefix = api_key, api_secret, field_prefix
        self.channels: dict[str, Json] = {}
        self.patch_times: list[float] = []
        self._stamps: dict[str, int] = {}  # cid -> last updated_at in microseconds
        self.app.add_url_rule("/channels", view_func=self._query_channels, methods=["POST"])
        self.app.add_url_rule("/channels/<ctype>/<cid_id>", view_func=self._partial_update, methods=["PATCH"])
        self.app.add_url_rule("/channels/<ctype>/<cid_id>", view_func=self._full_update, methods=["POST"])
        self.app.after_request(self._rate_limit_headers)

    def create_channel(self, cid: str, **custom: Any) -> Json:
        """Add a channel; custom fields are flattened into it as Stream returns them."""
        ctype, _, cid_id = cid.partition(":")
        with self._lock:
            stamp = self._stamp(cid)
            self.channels[cid] = {
                "cid": cid,
                "type": ctype,
                "id": cid_id,
                "created_at": stamp,
                "updated_at": stamp,
                "frozen": False,
                **copy.deepcopy(custom),
            }
            return copy.deepcopy(self.channels[cid])

    def call_fields(self, cid: str) -> Json:
        """The dict holding the call fields (``field_prefix``, e.g. channel["data"]); {} if absent."""
        with self._lock:
            node: Any = self.channels[cid]
            for key in filter(None, self.field_prefix.split(".")):
                node = node.get(key) if isinstance(node, dict) else None
            return copy.deepcopy(node) if isinstance(node, dict) else {}

    def client_update(self, cid: str, set: Json, unset: list[str] | None = None, user_id: str = "alice") -> None:
        """Apply an update as a chat client would; queues channel.updated with request_info type client."""
        with self._lock:
            self._update(cid, set, unset or [])
            hook = self._channel_updated(cid, {"type": "client"}, {"id": user_id})
        self._deliver(hook)

    def _authenticate(self) -> str | None:
        """Server auth: query api_key, header stream-auth-type: jwt, Authorization = HS256 JWT {"server": true}."""
        if request.args.get("api_key") != self.api_key:
            return "api_key not valid"
        if request.headers.get("stream-auth-type") != "jwt":
            return "stream-auth-type header must be jwt"
        try:
            claims = _decode(request.headers.get("Authorization", ""), self.api_secret)
        except jwt.PyJWTError as exc:
            return f"JWT not valid: {exc}"
        return None if claims.get("server") is True else "token is not a server token"

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        """Stream error JSON: code, message, StatusCode, duration, more_info, details."""
        body = {
            "code": _STREAM_CODES.get(status, -1),
            "message": message,
            "StatusCode": status,
            "duration": "0.00ms",
            "more_info": "",
            "details": [],
        }
        return _json(body, status, headers)

    def _rate_limit_headers(self, response: Response) -> Response:
        """Stream sends X-RateLimit-* on every answer (update channel: 300 per minute)."""
        response.headers.setdefault("X-RateLimit-Limit", "300")
        response.headers.setdefault("X-RateLimit-Remaining", "0" if response.status_code == 429 else "299")
        response.headers.setdefault("X-RateLimit-Reset", str(int(time.time()) // 60 * 60 + 60))
        return response

    def _stamp(self, cid: str) -> str:
        """Now as RFC3339 with microseconds, strictly increasing per channel (lock held)."""
        us = max(round(time.time() * 1_000_000), self._stamps.get(cid, 0) + 1)
        self._stamps[cid] = us
        return _rfc3339_us(us)

    def _update(self, cid: str, sets: Json, unsets: list[str]) -> Json:
        channel = self.channels[cid]
        _apply(channel, sets, unsets)
        channel["updated_at"] = self._stamp(cid)
        return copy.deepcopy(channel)

    def _channel_updated(self, cid: str, request_info: Json, user: Json | None) -> Webhook:
        """Queue channel.updated signed with X-Signature = hex HMAC-SHA256(api_secret, raw body) (lock held)."""
        channel = self.channels[cid]
        event: Json = {
            "type": "channel.updated",
            "cid": cid,
            "channel_type": channel["type"],
            "channel_id": channel["id"],
            "channel": copy.deepcopy(channel),
        }
        if user is not None:
            event["user"] = user
        event.update(created_at=rfc3339(time.time()), request_info=request_info)
        body = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Api-Key": self.api_key,
            "X-Webhook-Attempt": "1",
            "X-Webhook-Id": str(uuid.uuid4()),
            "X-Signature": hmac.new(self.api_secret.encode(), body, hashlib.sha256).hexdigest(),
        }
        self.outbox.append((headers, body))
        return headers, body

    def _partial_update(self, ctype: str, cid_id: str) -> Response:
        """PATCH /channels/{type}/{id} with {"set": {...}, "unset": [...]}; 404 code 16 if unknown."""
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        sets, unsets = body.get("set") or {}, body.get("unset") or []
        if not isinstance(sets, dict) or not isinstance(unsets, list) or not all(isinstance(p, str) for p in unsets):
            return self._error(400, "set must be an object and unset a list of field names")
        if not sets and not unsets:
            return self._error(400, "at least one of set or unset must be provided")
        cid = f"{ctype}:{cid_id}"
        with self._lock:
            if cid not in self.channels:
                return self._error(404, f"Channel '{cid}' not found")
            channel = self._update(cid, sets, unsets)
            hook = self._channel_updated(cid, {"type": "server"}, None)
            self.patch_times.append(time.time())
        self._deliver(hook)
        return _json({"channel": channel, "members": [], "duration": "1.00ms"})

    def _full_update(self, ctype: str, cid_id: str) -> Response:
        """Refuse the full update: it would delete custom fields callsync does not send."""
        return self._error(400, "fake Stream: full channel update is not allowed, use PATCH (partial update)")

    def _query_channels(self) -> Response:
        """QueryChannels filtered on {"cid": cid} or {"cid": {"$in": [...]}}; honours limit/offset."""
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        filters = body.get("filter_conditions")
        cond = filters.get("cid") if isinstance(filters, dict) else None
        if isinstance(cond, dict) and isinstance(cond.get("$in"), list):
            wanted = list(dict.fromkeys(cond["$in"]))
        elif isinstance(cond, str):
            wanted = [cond]
        else:
            return self._error(400, "fake Stream only supports cid filters")
        limit, offset = int(body.get("limit", 10)), int(body.get("offset", 0))
        with self._lock:
            found = [{"channel": copy.deepcopy(self.channels[c]), "members": []} for c in wanted if c in self.channels]
        return _json({"channels": found[offset : offset + limit], "duration": "0.50ms"})


class FakeHms(_Fake):
    """100ms REST API (rooms, sessions, active rooms, end-room) and session webhooks, at the app root."""

    def __init__(
        self,
        access_key: str,
        app_secret: str,
        webhook_url: str | None = None,
        webhook_header: str = "X-Callsync-Secret",
        webhook_secret: str = "",
    ) -> None:
        super().__init__("fake_hms", webhook_url)
        self.access_key, self.app_secret = access_key, app_secret
        self.webhook_header, self.webhook_secret = webhook_header, webhook_secret
        self.account_id, self.app_id, self.template_id = _hex_id(), _hex_id(), _hex_id()
        self.rooms: dict[str, Json] = {}
        self.sessions: dict[str, Json] = {}
        self._started: dict[str, float] = {}
        self.app.add_url_rule("/rooms", view_func=self._list_rooms, methods=["GET"])
        self.app.add_url_rule("/rooms", view_func=self._create_room, methods=["POST"])
        self.app.add_url_rule("/sessions", view_func=self._list_sessions, methods=["GET"])
        self.app.add_url_rule("/sessions/<session_id>", view_func=self._get_session, methods=["GET"])
        self.app.add_url_rule("/active-rooms/<room_id>", view_func=self._active_room, methods=["GET"])
        self.app.add_url_rule("/active-rooms/<room_id>/end-room", view_func=self._end_room, methods=["POST"])
        self.app.add_url_rule("/analytics/webhooks/replay", view_func=self._replay, methods=["POST"])
        self.failed: list[tuple[float, Webhook]] = []  # deliveries the receiver "never got"
        self._lose = 0

    def lose_next_webhooks(self, n: int) -> None:
        """The next n webhooks are not delivered; 100ms lists them as failed and can replay them."""
        with self._lock:
            self._lose += n

    def _deliver(self, hook: Webhook | None) -> None:
        with self._lock:
            lost = hook is not None and self._lose > 0
            if lost and hook is not None:
                self._lose -= 1
                self.failed.append((time.time(), hook))
                self.outbox.remove(hook)
        if not lost:
            super()._deliver(hook)

    def _replay(self) -> Response:
        """POST /analytics/webhooks/replay {start_time, end_time, status}: re-send failed deliveries
        in the window, flagged `is_replay` (100ms-docs analytics/replay-webhook-events.mdx)."""
        body = request.get_json(silent=True) or {}
        try:
            start = datetime.fromisoformat(str(body["start_time"]).replace("Z", "+00:00")).timestamp()
            end = datetime.fromisoformat(str(body["end_time"]).replace("Z", "+00:00")).timestamp()
        except (KeyError, ValueError):
            return self._error(400, "start_time and end_time must be RFC3339 times")
        if end < start or end - start > 14 * 86400:
            return self._error(400, "the window must be at most 14 days")
        with self._lock:
            chosen = [hook for at, hook in self.failed if start <= at <= end]
            self.failed = [(at, hook) for at, hook in self.failed if not start <= at <= end]
            replays = []
            for headers, raw in chosen:
                envelope = {**json.loads(raw), "is_replay": True}
                replays.append((headers, json.dumps(envelope).encode()))
            self.outbox.extend(replays)
        for hook in replays:
            super()._deliver(hook)
        return _json({"workflow_id": _hex_id(), "status": "started", "message": f"replaying {len(replays)} event(s)"})

    def create_room(self, name: str) -> Json:
        """Create a room, or return the existing one: names are case-insensitive."""
        with self._lock:
            return copy.deepcopy(self._room_named(name))

    def open_session(self, room_id: str, started_at: float | None = None) -> Json:
        """Start a live session (maybe in the past); queues session.open.success. ValueError if live or locked."""
        with self._lock:
            room = self.rooms[room_id]
            if not room["enabled"] or self._active(room_id) is not None:
                raise ValueError(f"room {room_id} is locked or already live")
            start = time.time() if started_at is None else started_at
            session: Json = {"id": _hex_id(), "room_id": room_id, "active": True, "created_at": rfc3339(start), "peers": {}}
            self.sessions[session["id"]], self._started[session["id"]] = session, start
            hook = self._webhook("session.open.success", self._session_data(session))
            result = copy.deepcopy(session)
        self._deliver(hook)
        return result

    def close_session(self, session_id: str) -> None:
        """End a session; queues session.close.success (no-op if already closed)."""
        with self._lock:
            hook = self._close(session_id)
        self._deliver(hook)

    def _authenticate(self) -> str | None:
        """Management token: Bearer HS256 JWT, access_key, type management, version 2, iat/nbf/exp/jti."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return "missing Bearer management token"
        try:
            claims = _decode(
                header.removeprefix("Bearer "), self.app_secret, leeway=10, options={"require": ["iat", "nbf", "exp", "jti"]}
            )
        except jwt.PyJWTError as exc:
            return f"invalid management token: {exc}"
        if claims.get("access_key") != self.access_key or claims.get("type") != "management" or claims.get("version") != 2:
            return "token claims are not a management token for this app"
        return None

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        """100ms error JSON: code, message, details."""
        return _json({"code": status, "message": message, "details": []}, status, headers)

    def _room_named(self, name: str) -> Json:
        for room in self.rooms.values():
            if room["name"].lower() == name.lower():
                return room
        room = {"id": _hex_id(), "name": name, "enabled": True, "created_at": rfc3339(time.time())}
        self.rooms[room["id"]] = room
        return room

    def _active(self, room_id: str) -> Json | None:
        return next((s for s in self.sessions.values() if s["room_id"] == room_id and s["active"]), None)

    def _session_data(self, session: Json) -> Json:
        return {
            "room_id": session["room_id"],
            "room_name": self.rooms[session["room_id"]]["name"],
            "session_id": session["id"],
            "template_id": self.template_id,
            "session_started_at": session["created_at"],
        }

    def _close(self, session_id: str) -> Webhook | None:
        """Mark a session ended and queue session.close.success (lock held)."""
        session = self.sessions[session_id]
        if not session["active"]:
            return None
        session["active"], stopped = False, time.time()
        data = {
            **self._session_data(session),
            "session_stopped_at": rfc3339(stopped),
            "session_duration": round(stopped - self._started[session_id]),
        }
        return self._webhook("session.close.success", data)

    def _webhook(self, kind: str, data: Json) -> Webhook:
        """Queue a v2 envelope; 100ms does not sign, it sends the configured secret header (lock held)."""
        envelope = {
            "version": "2.0",
            "id": str(uuid.uuid4()),
            "account_id": self.account_id,
            "app_id": self.app_id,
            "timestamp": rfc3339(time.time(), micro=False),
            "type": kind,
            "data": data,
        }
        hook = ({self.webhook_header: self.webhook_secret, "Content-Type": "application/json"}, json.dumps(envelope).encode())
        self.outbox.append(hook)
        return hook

    def _page(self, items: list[Json]) -> Response:
        """List answer {"limit", "data", "last"}; ``last`` is the cursor for ``start`` when more remain."""
        limit = max(1, min(request.args.get("limit", 10, type=int) or 10, 100))
        ids = [item["id"] for item in items]
        start = request.args.get("start")
        if start:
            items = items[ids.index(start) + 1 :] if start in ids else []
        page = copy.deepcopy(items[:limit])
        return _json({"limit": limit, "data": page, "last": page[-1]["id"] if len(items) > limit else None})

    def _list_rooms(self) -> Response:
        """GET /rooms?name=X: names match case-insensitively."""
        name = request.args.get("name")
        with self._lock:
            rooms = [r for r in self.rooms.values() if name is None or r["name"].lower() == name.lower()]
            return self._page(rooms)

    def _create_room(self) -> Response:
        """POST /rooms {"name"}: creates or returns the existing room of that name."""
        body = request.get_json(silent=True)
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not _ROOM_NAME.match(name):
            return self._error(400, "room name may only use a-z A-Z 0-9 . - : _")
        with self._lock:
            return _json(copy.deepcopy(self._room_named(name)))

    def _list_sessions(self) -> Response:
        """GET /sessions?room_id=..&active=true|false, newest first."""
        room_id, active = request.args.get("room_id"), request.args.get("active")
        with self._lock:
            found = [
                s
                for s in self.sessions.values()
                if (room_id is None or s["room_id"] == room_id) and (active is None or str(s["active"]).lower() == active)
            ]
            found.sort(key=lambda s: self._started[s["id"]], reverse=True)
            return self._page(found)

    def _get_session(self, session_id: str) -> Response:
        with self._lock:
            if session_id not in self.sessions:
                return self._error(404, "session not found")
            return _json(copy.deepcopy(self.sessions[session_id]))

    def _active_room(self, room_id: str) -> Response:
        """GET /active-rooms/{room_id}: the live session, or 404 when the room is not live."""
        with self._lock:
            session = self._active(room_id)
            if session is None:
                return self._error(404, "room is not active")
            return _json(
                {
                    "id": room_id,
                    "name": self.rooms[room_id]["name"],
                    "session": {"id": session["id"], "created_at": session["created_at"], "peers": []},
                }
            )

    def _end_room(self, room_id: str) -> Response:
        """POST /active-rooms/{room_id}/end-room {"reason", "lock"}: ends the live session; lock disables the room."""
        body = request.get_json(silent=True)
        with self._lock:
            session = self._active(room_id)
            if session is None:
                return self._error(404, "no active session")
            if isinstance(body, dict) and body.get("lock") is True:
                self.rooms[room_id]["enabled"] = False
            hook = self._close(session["id"])
        self._deliver(hook)
        return _json({"message": "session is ending"})


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Keep test output free of access logs."""


def serve(app: WSGIApplication, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Run a WSGI app on a real socket in a background thread; returns (base_url, stop)."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://{host}:{server.port}", stop
