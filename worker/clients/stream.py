"""Stream Chat server-side REST: read a channel's call fields and partially update them."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import httpx
import jwt

from worker.clients.http import CALL_DEADLINE_SECONDS, Answer, OnUpstreamCall, ignore_call, segment, upstream_request
from worker.core.calls import ROSTER_MEMBER_LIMIT
from worker.core.events import CallFields, read_fields

API = "stream"


class StreamAuth(httpx.Auth):
    """Server-side auth: `api_key` query, server JWT in `Authorization` (no "Bearer")."""

    def __init__(self, api_key: str, api_secret: str):
        self._api_key = api_key
        # A server token is HS256 over {"server": true} with no expiry: sign it once.
        self._token = jwt.encode({"server": True}, api_secret, algorithm="HS256")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.url = request.url.copy_merge_params({"api_key": self._api_key})
        request.headers["Authorization"] = self._token
        request.headers["stream-auth-type"] = "jwt"
        yield request


def call_field_update(fields: CallFields, prefix: str) -> dict[str, Any]:
    """The partial-update body that makes the call fields `fields` and touches nothing else."""
    if fields.active and fields.call_id:
        return {"set": {f"{prefix}callActive": True, f"{prefix}callId": fields.call_id}}
    return {"set": {f"{prefix}callActive": False}, "unset": [f"{prefix}callId"]}


class StreamClient:
    def __init__(
        self,
        client: httpx.Client,
        field_path: tuple[str, ...],
        on_call: OnUpstreamCall = ignore_call,
        deadline: float = CALL_DEADLINE_SECONDS,
    ):
        self._http, self._on_call, self._deadline = client, on_call, deadline
        self._path = field_path
        self._prefix = "".join(f"{part}." for part in field_path)

    def _request(self, method: str, endpoint: str, path: str | None = None, **kwargs: Any) -> Answer:
        """Every call to Stream: `endpoint` names it in metrics (the path with its ids as `{type}`,
        `{id}`), `path` is the path sent when it differs."""
        return upstream_request(
            self._http, API, method, path or endpoint, endpoint=endpoint, on_call=self._on_call, deadline=self._deadline, **kwargs
        )

    def update_call_fields(self, cid: str, fields: CallFields) -> CallFields:
        """PATCH the call fields; returns what Stream now shows. (The answer's `updated_at` is
        no clock: live partial updates leave it unchanged.)"""
        return self.update_call_fields_reporting(cid, fields)[0]

    def update_call_fields_reporting(self, cid: str, fields: CallFields) -> tuple[CallFields, int | None]:
        """`update_call_fields`, and the endpoint's limit the answer reported (X-RateLimit-Limit)."""
        kind, _, ident = cid.partition(":")
        path = f"/channels/{segment(kind)}/{segment(ident)}"
        response = self._request("PATCH", "/channels/{type}/{id}", path, json=call_field_update(fields, self._prefix))
        return read_fields(_dict(response.json().get("channel")), self._path), response.reported_limit

    def read_call_fields(self, cid: str) -> CallFields | None:
        """The channel's call fields through QueryChannels (no side effects); None if it does not exist."""
        body = {"filter_conditions": {"cid": cid}, "state": True, "watch": False, "presence": False, "limit": 1}
        response = self._request("POST", "/channels", json=body)
        channels = response.json().get("channels") or []
        if not channels:
            return None
        return read_fields(_dict(_dict(channels[0]).get("channel")), self._path)

    def query_call_fields(self, body: dict[str, Any]) -> list[tuple[str, CallFields, str]]:
        """QueryChannels with `body` (core.resync builds it): each channel found as (cid, its call
        fields, its `created_at`), in Stream's order. Read only, like `read_call_fields`."""
        response = self._request("POST", "/channels", json=body)
        found = []
        for item in response.json().get("channels") or []:
            channel = _dict(_dict(item).get("channel"))
            cid = channel.get("cid")
            if isinstance(cid, str) and cid:
                found.append((cid, read_fields(channel, self._path), str(channel.get("created_at") or "")))
        return found

    def channel_roster(self, cid: str) -> dict[str, Any]:
        """QueryChannels for the channel with its first members and `member_count` (read only:
        Query Channels allows 10,000 a minute per app, Query Members 300)."""
        body = {
            "filter_conditions": {"cid": cid},
            "state": True,
            "watch": False,
            "presence": False,
            "limit": 1,
            "member_limit": ROSTER_MEMBER_LIMIT,
            "message_limit": 0,
        }
        response = self._request("POST", "/channels", json=body)
        return _dict(response.json())

    def channel_member(self, cid: str, user_id: str) -> dict[str, Any]:
        """QueryMembers for one user of the channel: `GET /members?payload=<JSON>` (as
        GetStream/stream-chat-python stream_chat/channel.py `query_members` sends it)."""
        kind, _, ident = cid.partition(":")
        payload = {"type": kind, "id": ident, "filter_conditions": {"id": {"$in": [user_id]}}, "limit": 1}
        params = {"payload": json.dumps(payload, separators=(",", ":"))}
        response = self._request("GET", "/members", params=params)
        return _dict(response.json())

    def app_settings(self) -> dict[str, Any]:
        """The app's settings: `GET /app` (GetStream/protocol openapi/chat-openapi.json, GetApp:
        `{"app": AppResponseFields}`, which holds `revoke_tokens_issued_before`)."""
        response = self._request("GET", "/app")
        return _dict(response.json())

    # --- call messages (rule 13): paths and bodies as GetStream/stream-chat-python sends them
    # (stream_chat/channel.py `send_message`, stream_chat/client.py `update_message`,
    # `get_message`, `upsert_users`).
    def send_message(self, cid: str, message: dict[str, Any]) -> dict[str, Any]:
        """`POST /channels/{type}/{id}/message` `{"message"}` → 201 `{"message"}`; a new message pushes."""
        return self.send_message_reporting(cid, message)[0]

    def send_message_reporting(self, cid: str, message: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """`send_message`, and the endpoint's limit the answer reported (X-RateLimit-Limit)."""
        kind, _, ident = cid.partition(":")
        path = f"/channels/{segment(kind)}/{segment(ident)}/message"
        response = self._request("POST", "/channels/{type}/{id}/message", path, json={"message": message})
        return _dict(response.json().get("message")), response.reported_limit

    def update_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """`POST /messages/{id}` `{"message"}`: the whole message replaced (an update does not push)."""
        return self.update_message_reporting(message)[0]

    def update_message_reporting(self, message: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        """`update_message`, and the endpoint's limit the answer reported (X-RateLimit-Limit)."""
        path = f"/messages/{segment(str(message['id']))}"
        response = self._request("POST", "/messages/{id}", path, json={"message": message})
        return _dict(response.json().get("message")), response.reported_limit

    def get_message(self, message_id: str) -> dict[str, Any]:
        """`GET /messages/{id}` → `{"message"}`."""
        response = self._request("GET", "/messages/{id}", f"/messages/{segment(message_id)}")
        return _dict(response.json().get("message"))

    def upsert_users(self, users: list[dict[str, Any]]) -> None:
        """`POST /users` `{"users": {id: user}}` (created, or updated with the fields given)."""
        body = {"users": {str(user["id"]): user for user in users}}
        self._request("POST", "/users", json=body)


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
