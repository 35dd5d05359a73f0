"""Stream Chat server-side REST: read a channel's call fields and partially update them."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import httpx
import jwt

from worker.clients.http import CALL_DEADLINE_SECONDS, OnUpstreamCall, ignore_call, segment, upstream_request
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

    def update_call_fields(self, cid: str, fields: CallFields) -> CallFields:
        """PATCH the call fields; returns what Stream now shows. (The answer's `updated_at` is
        no clock: live partial updates leave it unchanged.)"""
        kind, _, ident = cid.partition(":")
        response = upstream_request(
            self._http,
            API,
            "PATCH",
            f"/channels/{segment(kind)}/{segment(ident)}",
            endpoint="/channels/{type}/{id}",
            on_call=self._on_call,
            deadline=self._deadline,
            json=call_field_update(fields, self._prefix),
        )
        return read_fields(_dict(response.json().get("channel")), self._path)

    def read_call_fields(self, cid: str) -> CallFields | None:
        """The channel's call fields through QueryChannels (no side effects); None if it does not exist."""
        body = {"filter_conditions": {"cid": cid}, "state": True, "watch": False, "presence": False, "limit": 1}
        response = upstream_request(
            self._http, API, "POST", "/channels", endpoint="/channels", on_call=self._on_call, deadline=self._deadline, json=body
        )
        channels = response.json().get("channels") or []
        if not channels:
            return None
        return read_fields(_dict(_dict(channels[0]).get("channel")), self._path)

    def query_call_fields(self, body: dict[str, Any]) -> list[tuple[str, CallFields, str]]:
        """QueryChannels with `body` (core.resync builds it): each channel found as (cid, its call
        fields, its `created_at`), in Stream's order. Read only, like `read_call_fields`."""
        response = upstream_request(
            self._http, API, "POST", "/channels", endpoint="/channels", on_call=self._on_call, deadline=self._deadline, json=body
        )
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
        response = upstream_request(
            self._http, API, "POST", "/channels", endpoint="/channels", on_call=self._on_call, deadline=self._deadline, json=body
        )
        return _dict(response.json())

    def channel_member(self, cid: str, user_id: str) -> dict[str, Any]:
        """QueryMembers for one user of the channel: `GET /members?payload=<JSON>` (as
        GetStream/stream-chat-python stream_chat/channel.py `query_members` sends it)."""
        kind, _, ident = cid.partition(":")
        payload = {"type": kind, "id": ident, "filter_conditions": {"id": {"$in": [user_id]}}, "limit": 1}
        params = {"payload": json.dumps(payload, separators=(",", ":"))}
        response = upstream_request(
            self._http, API, "GET", "/members", endpoint="/members", on_call=self._on_call, deadline=self._deadline, params=params
        )
        return _dict(response.json())

    def app_settings(self) -> dict[str, Any]:
        """The app's settings: `GET /app` (GetStream/protocol openapi/chat-openapi.json, GetApp:
        `{"app": AppResponseFields}`, which holds `revoke_tokens_issued_before`)."""
        response = upstream_request(
            self._http, API, "GET", "/app", endpoint="/app", on_call=self._on_call, deadline=self._deadline
        )
        return _dict(response.json())


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
