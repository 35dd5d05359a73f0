"""100ms server-side REST: management token, live sessions of a room, end-room."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Generator
from typing import Any

import httpx
import jwt

from worker.clients.http import CALL_DEADLINE_SECONDS, Answer, OnUpstreamCall, ignore_call, segment, upstream_request
from worker.core.calls import Room
from worker.core.checks import LiveSession
from worker.core.events import parse_time
from worker.core.peers import Peer
from worker.core.upstream import Retry, UpstreamError

API = "hms"
TOKEN_LIFETIME = 24 * 3600  # as the official SDK
RENEW_BEFORE = 3600  # renew an hour before expiry
CLOCK_SKEW = 10  # the SDK back-dates iat/nbf by 10 s


def management_token(access_key: str, app_secret: str, now: float) -> str:
    """A 100ms management token (HS256, claims as in 100mslive/server-sdks)."""
    issued = int(now) - CLOCK_SKEW
    claims = {
        "access_key": access_key,
        "type": "management",
        "version": 2,
        "iat": issued,
        "nbf": issued,
        "exp": issued + TOKEN_LIFETIME,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, app_secret, algorithm="HS256")


class ManagementAuth(httpx.Auth):
    """Bearer management token, renewed before expiry and once more on 401/403."""

    def __init__(self, access_key: str, app_secret: str, clock: Callable[[], float] = time.time):
        self._access_key, self._secret, self._clock = access_key, app_secret, clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._lock = threading.Lock()

    def _current(self, force: bool = False) -> str:
        with self._lock:
            now = self._clock()
            if force or self._token is None or now >= self._renew_at:
                self._token = management_token(self._access_key, self._secret, now)
                self._renew_at = now + TOKEN_LIFETIME - RENEW_BEFORE
            return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._current()}"
        response = yield request
        if response.status_code in (401, 403):
            request.headers["Authorization"] = f"Bearer {self._current(force=True)}"
            yield request


class HmsClient:
    def __init__(self, client: httpx.Client, on_call: OnUpstreamCall = ignore_call, deadline: float = CALL_DEADLINE_SECONDS):
        self._http, self._on_call, self._deadline = client, on_call, deadline

    def _request(self, method: str, endpoint: str, path: str | None = None, **kwargs: Any) -> Answer:
        """Every call to 100ms: `endpoint` is the path template (for metrics), `path` the real path."""
        return upstream_request(
            self._http, API, method, path or endpoint, endpoint=endpoint, on_call=self._on_call, deadline=self._deadline, **kwargs
        )

    def _unless_missing(self, method: str, endpoint: str, path: str, **kwargs: Any) -> Answer | None:
        """`_request`, with None for a 404 (no such room, no active session)."""
        try:
            return self._request(method, endpoint, path, **kwargs)
        except UpstreamError as exc:
            if exc.status == 404:
                return None
            raise

    def end_room(self, room_id: str, reason: str) -> bool:
        """End the room's active session for everyone; False if there was none (404)."""
        path = f"/active-rooms/{segment(room_id)}/end-room"
        body = {"reason": reason, "lock": False}
        return self._unless_missing("POST", "/active-rooms/{room_id}/end-room", path, json=body) is not None

    def live_session(self, room_id: str) -> LiveSession | None:
        """The room's active session, or None when 100ms reports none.

        `GET /sessions?room_id=..&active=true` is the documented way (100ms-docs,
        Sessions/list-sessions.mdx); `active` is sent explicitly.
        """
        response = self._request("GET", "/sessions", params={"room_id": room_id, "active": "true", "limit": 10})
        for session in _dict(response.json()).get("data") or []:
            session = _dict(session)
            if session.get("active") is True and session.get("id"):
                return LiveSession(
                    room_id=room_id, session_id=str(session["id"]), started_at=parse_time(session.get("created_at"))
                )
        return None

    def live_sessions(self, params: dict[str, str | int]) -> tuple[list[LiveSession], int, object]:
        """One page of the app's live sessions (`GET /sessions?active=true`, core.resync builds the
        query; 100ms-docs Sessions/list-sessions.mdx): the sessions, the page's size, its `last`."""
        body = _dict(self._request("GET", "/sessions", params=params).json())
        data = body.get("data")
        rows: list[Any] = data if isinstance(data, list) else []
        found = []
        for session in rows:
            session = _dict(session)
            room_id, session_id = session.get("room_id"), session.get("id")
            if (
                session.get("active") is True
                and isinstance(room_id, str)
                and room_id
                and isinstance(session_id, str)
                and session_id
            ):
                found.append(
                    LiveSession(room_id=room_id, session_id=session_id, started_at=parse_time(session.get("created_at")))
                )
        return found, len(rows), body.get("last")

    def active_session(self, room_id: str) -> LiveSession | None:
        """The session live in the room now, or None when the room is not active (404):
        `GET /active-rooms/{room_id}` (100ms-docs, api-reference/active-rooms/retrieve-active-room.mdx)."""
        response = self._unless_missing("GET", "/active-rooms/{room_id}", f"/active-rooms/{segment(room_id)}")
        session = _dict(_dict(response.json()).get("session")) if response is not None else {}
        if not session.get("id"):
            return None
        return LiveSession(room_id=room_id, session_id=str(session["id"]), started_at=parse_time(session.get("created_at")))

    def session_peers(self, session_id: str) -> list[Peer] | None:
        """Every peer 100ms recorded for the session, or None when it knows no such session (404):
        `GET /sessions/{id}` (100ms-docs Sessions/retrieve-a-session.mdx: `peers` is a map keyed by
        peer id of `{id, user_id, name, role, joined_at, left_at}`; Sessions/object.mdx calls it an
        array, so both are read)."""
        response = self._unless_missing("GET", "/sessions/{session_id}", f"/sessions/{segment(session_id)}")
        if response is None:
            return None
        raw = _dict(response.json()).get("peers")
        rows = list(raw.items()) if isinstance(raw, dict) else [(None, row) for row in raw] if isinstance(raw, list) else []
        peers = []
        for key, row in rows:
            row = _dict(row)
            peer_id = row.get("id") or key
            if not isinstance(peer_id, str) or not peer_id:
                continue
            user = row.get("user_id")
            peers.append(
                Peer(
                    peer_id,
                    user if isinstance(user, str) and user else None,
                    parse_time(row.get("joined_at")),
                    parse_time(row.get("left_at")),
                )
            )
        return peers

    def room_id_by_name(self, name: str) -> str | None:
        """The id of the room called `name` (case-insensitive), without creating it."""
        room = self.room_by_name(name)
        return room.id if room else None

    def room_by_name(self, name: str) -> Room | None:
        """The enabled room called `name` (case-insensitive), without creating it
        (`GET /rooms?name=`; 100ms lists enabled rooms unless asked otherwise, 100ms-docs
        Rooms/list-rooms.mdx)."""
        response = self._request("GET", "/rooms", params={"name": name})
        for found in _dict(response.json()).get("data") or []:
            room = _room(found)
            if room is not None and room.name.lower() == name.lower():
                return room
        return None

    def room(self, room_id: str) -> Room | None:
        """The room `room_id`, or None when 100ms knows none (`GET /rooms/{id}`, Rooms/retrieve-room.mdx)."""
        response = self._unless_missing("GET", "/rooms/{room_id}", f"/rooms/{segment(room_id)}")
        return _room(response.json()) if response is not None else None

    def create_room(self, name: str, template_id: str = "", description: str = "") -> Room:
        """The room called `name`, created if there is none (`POST /rooms` returns the existing
        room of that name, names case-insensitive; Rooms/create-via-api.mdx). That call also
        updates an existing room with what it is given, so callers look the room up first."""
        body = {"name": name, **({"template_id": template_id} if template_id else {})}
        body |= {"description": description} if description else {}
        response = self._request("POST", "/rooms", json=body)
        room = _room(response.json())
        if room is None:
            raise UpstreamError(API, response.status, "room creation answered no room id", Retry.BACKOFF)
        return room

    def describe_room(self, room_id: str, description: str) -> None:
        """Set a room's description, and nothing else of it (`POST /rooms/{room_id}`, the room
        update of 100ms-docs Rooms/update-a-room.mdx: fields not given are left as they are)."""
        self._request("POST", "/rooms/{room_id}", f"/rooms/{segment(room_id)}", json={"description": description})

    def replay_failed_webhooks(self, start: str, end: str) -> dict[str, Any]:
        """Ask 100ms to re-send the webhook deliveries that failed between `start` and `end`."""
        body = {"start_time": start, "end_time": end, "status": "failed"}
        return _dict(self._request("POST", "/analytics/webhooks/replay", json=body).json())


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _room(value: object) -> Room | None:
    room = _dict(value)
    room_id, name, description = room.get("id"), room.get("name"), room.get("description")
    if not isinstance(room_id, str) or not room_id or not isinstance(name, str):
        return None
    return Room(room_id, name, description if isinstance(description, str) else None)
