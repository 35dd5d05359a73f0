"""The Stream stand-in's messages and users, for call messages (rule 13): a mixin of FakeStream,
apart from the channel endpoints."""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Response, request

from .base import Json, json_response, rfc3339_us


class StreamMessages:
    """Messages and users (call messages, rule 13), kept apart from the channel endpoints:
    SendMessage `POST /channels/{type}/{id}/message` → 201 `{"message"}`; GetMessage and
    UpdateMessage `GET`/`POST /messages/{id}`; UpsertUsers `POST /users` (paths and bodies as
    GetStream/stream-chat-python sends them). A message id that exists is refused with 400 code 4
    `SendMessage failed with error: "a message with ID … already exists"` (GetStream/stream-chat-js
    issue #759, PR #236); a channel that does not exist (or was deleted) with 404 code 16
    "Can't find channel with id …" (GetStream/stream-chat-swift issue #2607)."""

    channels: dict[str, Json]
    users: dict[str, Json]
    _lock: Any
    app: Any
    _error: Callable[..., Response]

    def _add_message_routes(self) -> None:
        self.messages: dict[str, Json] = {}  # message id -> message, with its `cid`
        self.message_failures: list[int] = []  # statuses the next message calls answer (429: throttled)
        self.message_retry_after = 1  # the Retry-After of those 429s
        self.app.add_url_rule("/channels/<ctype>/<cid_id>/message", view_func=self._send_message, methods=["POST"])
        self.app.add_url_rule("/messages/<message_id>", view_func=self._get_message, methods=["GET"])
        self.app.add_url_rule("/messages/<message_id>", view_func=self._update_message, methods=["POST"])
        self.app.add_url_rule("/users", view_func=self._upsert_users, methods=["POST"])

    def fail_next_messages(self, count: int, status: int = 429, retry_after: int = 1) -> None:
        """The next `count` send/update message calls answer `status` (a 429 with `Retry-After`)."""
        with self._lock:
            self.message_failures += [status] * count
            self.message_retry_after = retry_after

    def delete_channel(self, cid: str) -> None:
        """Delete the channel and its messages, as a hard DeleteChannel does."""
        with self._lock:
            self.channels.pop(cid, None)
            self.messages = {k: m for k, m in self.messages.items() if m.get("cid") != cid}

    def messages_in(self, cid: str) -> list[Json]:
        with self._lock:
            return [copy.deepcopy(m) for m in self.messages.values() if m.get("cid") == cid]

    def _failure(self) -> Response | None:
        with self._lock:
            status = self.message_failures.pop(0) if self.message_failures else None
        if status is None:
            return None
        headers = {"Retry-After": str(self.message_retry_after)} if status == 429 else None
        return self._error(status, "Too many requests" if status == 429 else "injected failure", headers)

    def _message_body(self) -> Json | None:
        body = request.get_json(silent=True)
        message = body.get("message") if isinstance(body, dict) else None
        return message if isinstance(message, dict) else None

    def _send_message(self, ctype: str, cid_id: str) -> Response:
        failed = self._failure()
        if failed is not None:
            return failed
        message, cid = self._message_body(), f"{ctype}:{cid_id}"
        if message is None:
            return self._error(400, "message is required")
        user = message.get("user_id") or (message.get("user") or {}).get("id")
        with self._lock:
            if cid not in self.channels:
                return self._error(404, f'SendMessage failed with error: "Can\'t find channel with id {cid}"')
            if user not in self.users:
                return self._error(400, f'SendMessage failed with error: "The specified user {user} does not exist"')
            ident = str(message.get("id") or uuid.uuid4())
            if ident in self.messages:
                return self._error(400, f'SendMessage failed with error: "a message with ID {ident} already exists"')
            stored = {
                **copy.deepcopy(message),
                "id": ident,
                "cid": cid,
                "user": {"id": user},
                "created_at": rfc3339_us(round(time.time() * 1e6)),
            }
            stored.pop("user_id", None)
            self.messages[ident] = stored
            return json_response({"message": copy.deepcopy(stored), "duration": "1.00ms"}, 201)

    def _get_message(self, message_id: str) -> Response:
        with self._lock:
            if message_id not in self.messages:
                return self._error(404, f'GetMessage failed with error: "message with id {message_id} not found"')
            return json_response({"message": copy.deepcopy(self.messages[message_id]), "duration": "0.30ms"})

    def _update_message(self, message_id: str) -> Response:
        failed = self._failure()
        if failed is not None:
            return failed
        message = self._message_body()
        if message is None:
            return self._error(400, "message is required")
        with self._lock:
            if message_id not in self.messages:
                return self._error(404, f'UpdateMessage failed with error: "message with id {message_id} not found"')
            old = self.messages[message_id]
            new = {
                **copy.deepcopy(message),
                "id": message_id,
                "cid": old["cid"],
                "user": old["user"],
                "created_at": old["created_at"],
            }
            new.pop("user_id", None)
            self.messages[message_id] = new
            return json_response({"message": copy.deepcopy(new), "duration": "1.00ms"})

    def _upsert_users(self) -> Response:
        body = request.get_json(silent=True)
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, dict):
            return self._error(400, "users must be an object keyed by user id")
        with self._lock:
            for ident, user in users.items():
                fields = {k: v for k, v in (user or {}).items() if k != "id"}
                self.users.setdefault(str(ident), {}).update(copy.deepcopy(fields))
            answer = {u: {"id": u, **copy.deepcopy(self.users[str(u)])} for u in users}
        return json_response({"users": answer, "duration": "1.00ms"}, 201)
