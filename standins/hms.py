"""100ms stand-in: management-token auth, rooms, sessions, end-room, session webhooks, replay."""

from __future__ import annotations

import copy
import json
import re
import time
import uuid
from datetime import datetime

import jwt
from flask import Response, request

from .base import Fake, Json, Webhook, decode_hs256, hex_id, json_response, rfc3339, rfc3339_nano

_ROOM_NAME = re.compile(r"^[A-Za-z0-9.\-:_]+$")


class FakeHms(Fake):
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
        self.account_id, self.app_id, self.template_id = hex_id(), hex_id(), hex_id()
        self.rooms: dict[str, Json] = {}
        self.sessions: dict[str, Json] = {}
        self._started: dict[str, float] = {}
        self.app.add_url_rule("/rooms", view_func=self._list_rooms, methods=["GET"])
        self.app.add_url_rule("/rooms", view_func=self._create_room, methods=["POST"])
        self.app.add_url_rule("/rooms/<room_id>", view_func=self._get_room, methods=["GET"])
        self.app.add_url_rule("/rooms/<room_id>", view_func=self._update_room, methods=["POST"])
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
        return json_response({"workflow_id": hex_id(), "status": "started", "message": f"replaying {len(replays)} event(s)"})

    def create_room(self, name: str, template_id: str | None = None, description: str | None = None) -> Json:
        """Create a room, or return the existing one: names are case-insensitive."""
        with self._lock:
            return copy.deepcopy(self._room_named(name, template_id, description))

    def open_session(self, room_id: str, started_at: float | None = None) -> Json:
        """Start a live session (maybe in the past); queues session.open.success. ValueError if live or locked."""
        with self._lock:
            room = self.rooms[room_id]
            if not room["enabled"] or self._active(room_id) is not None:
                raise ValueError(f"room {room_id} is locked or already live")
            start = self.clock() if started_at is None else started_at
            # 100ms stamps times with nanoseconds (100ms-docs, webhook.md and retrieve-active-room.mdx).
            session: Json = {"id": hex_id(), "room_id": room_id, "active": True, "created_at": rfc3339_nano(start), "peers": {}}
            self.sessions[session["id"]], self._started[session["id"]] = session, start
            hook = self._webhook("session.open.success", self._session_data(session))
            result = copy.deepcopy(session)
        self._deliver(hook)
        return result

    def live_session_id(self, room_id: str) -> str | None:
        """The id of the room's live session, if one runs."""
        with self._lock:
            session = self._active(room_id)
            return str(session["id"]) if session else None

    def join_peer(self, session_id: str, user_id: str, peer_id: str | None = None, webhook: bool = True) -> str:
        """A peer joins: kept in the session's `peers` map as GET /sessions/{id} answers it
        (100ms-docs Sessions/retrieve-a-session.mdx) and, with `webhook`, a peer.join.success."""
        peer_id, hook = self.peer_joins(session_id, user_id, peer_id, webhook)
        self._deliver(hook)
        return peer_id

    def peer_joins(
        self, session_id: str, user_id: str, peer_id: str | None = None, webhook: bool = True
    ) -> tuple[str, Webhook | None]:
        """`join_peer` without the delivery: the peer's id and its webhook, for a caller that
        posts it itself (a bench timing each one)."""
        with self._lock:
            session, peer_id = self.sessions[session_id], peer_id or str(uuid.uuid4())
            joined = rfc3339_nano(self.clock())
            session["peers"][peer_id] = {
                "id": peer_id,
                "session_id": session_id,
                "name": user_id,
                "role": "guest",
                "user_id": user_id,
                "joined_at": joined,
            }
            data = {**self._session_data(session), "peer_id": peer_id, "user_id": user_id, "role": "guest", "joined_at": joined}
            return peer_id, (self._webhook("peer.join.success", data) if webhook else None)

    def leave_peer(self, session_id: str, peer_id: str, webhook: bool = True) -> None:
        """A peer leaves: `left_at` in the session's record and, with `webhook`, a peer.leave.success."""
        with self._lock:
            session = self.sessions[session_id]
            peer = session["peers"][peer_id]
            peer["left_at"] = rfc3339_nano(self.clock())
            data = {**self._session_data(session), "peer_id": peer_id, "user_id": peer["user_id"], "role": "guest"}
            data.update(joined_at=peer["joined_at"], left_at=peer["left_at"])
            hook = self._webhook("peer.leave.success", data) if webhook else None
        self._deliver(hook)

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
            claims = decode_hs256(
                header.removeprefix("Bearer "), self.app_secret, leeway=10, options={"require": ["iat", "nbf", "exp", "jti"]}
            )
        except jwt.PyJWTError as exc:
            return f"invalid management token: {exc}"
        if claims.get("access_key") != self.access_key or claims.get("type") != "management" or claims.get("version") != 2:
            return "token claims are not a management token for this app"
        return None

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        """100ms error JSON: code, message, details."""
        return json_response({"code": status, "message": message, "details": []}, status, headers)

    def _room_named(self, name: str, template_id: str | None = None, description: str | None = None) -> Json:
        """The room of that name, created if none; a template or description given updates an
        existing room (100ms-docs Rooms/create-via-api.mdx: "the same room will be updated")."""
        for room in self.rooms.values():
            if room["name"].lower() == name.lower():
                given = {k: v for k, v in (("template_id", template_id), ("description", description)) if v}
                if given:
                    room.update(given, updated_at=rfc3339(time.time()))
                return room
        stamp = rfc3339(self.clock())
        room = {
            "id": hex_id(),
            "name": name,
            "enabled": True,
            "template_id": template_id or self.template_id,
            "description": description or "",
            "created_at": stamp,
            "updated_at": stamp,
        }
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
        session["active"], stopped = False, self.clock()
        data = {
            **self._session_data(session),
            "session_stopped_at": rfc3339_nano(stopped),
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
            "timestamp": rfc3339(self.clock(), micro=False),
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
        return json_response({"limit": limit, "data": page, "last": page[-1]["id"] if len(items) > limit else None})

    def _list_rooms(self) -> Response:
        """GET /rooms?name=X&enabled=true|false: names match case-insensitively; only enabled
        rooms unless `enabled=false` (100ms-docs Rooms/list-rooms.mdx: `enabled` defaults to true)."""
        name = request.args.get("name")
        enabled = request.args.get("enabled", "true").lower() != "false"
        with self._lock:
            rooms = [
                r for r in self.rooms.values() if (name is None or r["name"].lower() == name.lower()) and r["enabled"] == enabled
            ]
            return self._page(rooms)

    def _get_room(self, room_id: str) -> Response:
        """GET /rooms/{room_id}: the room, or 404 (Rooms/retrieve-room.mdx)."""
        with self._lock:
            if room_id not in self.rooms:
                return self._error(404, "room not found")
            return json_response(copy.deepcopy(self.rooms[room_id]))

    def _create_room(self) -> Response:
        """POST /rooms {"name"}: creates or returns the existing room of that name."""
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        name = body.get("name")
        if not isinstance(name, str) or not _ROOM_NAME.match(name):
            return self._error(400, "room name may only use a-z A-Z 0-9 . - : _")
        template_id, description = body.get("template_id"), body.get("description")
        template_id = template_id if isinstance(template_id, str) else None
        with self._lock:
            room = self._room_named(name, template_id, description if isinstance(description, str) else None)
            return json_response(copy.deepcopy(room))

    def _update_room(self, room_id: str) -> Response:
        """POST /rooms/{room_id}: change the fields given (description, template_id, ...); the
        rest stay as they are (100ms-docs Rooms/update-a-room.mdx)."""
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return self._error(400, "the body must be a JSON object")
        with self._lock:
            room = self.rooms.get(room_id)
            if room is None:
                return self._error(404, "room not found")
            if "name" in body and (not isinstance(body["name"], str) or not _ROOM_NAME.match(body["name"])):
                return self._error(400, "room name may only use a-z A-Z 0-9 . - : _")
            room.update({k: v for k, v in body.items() if k in ("name", "description", "template_id", "enabled")})
            room["updated_at"] = rfc3339(time.time())
            return json_response(copy.deepcopy(room))

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
            return json_response(copy.deepcopy(self.sessions[session_id]))

    def _active_room(self, room_id: str) -> Response:
        """GET /active-rooms/{room_id}: the live session, or 404 when the room is not live."""
        with self._lock:
            session = self._active(room_id)
            if session is None:
                return self._error(404, "room is not active")
            return json_response(
                {
                    "id": room_id,
                    "name": self.rooms[room_id]["name"],
                    "customer_id": self.account_id,
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
        return json_response({"message": "session is ending"})
