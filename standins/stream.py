"""Stream Chat stand-in: server auth, partial updates with dotted paths, QueryChannels, QueryMembers,
users and the app's settings (GET /app), signed channel.updated (and member.added, when asked).

As the live API does, a partial update leaves `channel.updated_at` as it was (an event recorded
from the live API, GetStream/stream-chat-test-mock-server src/jsons/ws_events_channel.json, and
the channel.updated example of GetStream/stream-chat-python docs/webhooks/webhook_events.md both
show it equal to the channel's `created_at` after the update); every event carries its own
`created_at`. `bump_updated_at=True` restores the stand-in's earlier behaviour (each update
stamps `updated_at`), for comparing the two.

Stream sends a partial update's `channel.updated` as soon as it applies the update, so the echo
can reach the caller's webhook endpoint before the update's answer does: `echo_before_answer`
makes a share of partial updates deliver their echo first, then answer.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
from flask import Response, g, request

from .base import Fake, Json, Webhook, _delivery_client, decode_hs256, json_response, rfc3339_ns, rfc3339_us
from .stream_messages import StreamMessages

_STREAM_CODES = {400: 4, 401: 5, 404: 16, 429: 9}  # Stream error codes by HTTP status


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


class FakeStream(Fake, StreamMessages):
    """Stream Chat server-side REST API: partial update, QueryChannels, channel.updated webhooks."""

    # What X-RateLimit-Limit says on every answer: "Update Channel" is 300 a minute by default
    # (https://getstream.io/chat/docs/react/rate-limits/). callsync adopts a lower reported limit
    # (docs/behaviour.md, rule 8): a test or bench that runs callsync faster raises it here.
    update_limit = 300
    # Send Message and Update Message: 1,000 a minute each by default (same page).
    message_limit = 1000

    def __init__(
        self,
        api_key: str,
        api_secret: str,
        webhook_url: str | None = None,
        field_prefix: str = "data.",
        bump_updated_at: bool = False,
    ) -> None:
        super().__init__("fake_stream", webhook_url)
        self.api_key, self.api_secret, self.field_prefix = api_key, api_secret, field_prefix
        self.bump_updated_at = bump_updated_at
        self.channels: dict[str, Json] = {}
        self.members: dict[str, dict[str, Json]] = {}  # cid -> user id -> member record, in joining order
        # user id -> the user's fields beyond `id` (UserResponse: banned, ban_expires, deactivated_at,
        # deleted_at, revoke_tokens_issued_before, ...); a member's `user` is built from it when read.
        self.users: dict[str, Json] = {}
        # The app's settings as GET /app answers them (AppResponseFields; `revoke_tokens_issued_before`).
        self.app_settings: Json = {"name": "callsync-standin", "revoke_tokens_issued_before": None}
        self.member_events = False  # send member.added webhooks, as an app subscribed to them does
        self.patch_times: list[float] = []  # arrival of each applied partial update
        self._stamps: dict[str, int] = {}  # cid -> its last stamp (an event's created_at) in nanoseconds
        # Called with (cid, its call fields, "client" or "server") after every change.
        self.change_watchers: list[Callable[[str, Json, str], None]] = []
        self._echo_first: tuple[random.Random, float, float, Callable[[Webhook], None] | None] | None = None
        self.echoes_before_answer = 0  # partial updates whose echo was sent before their answer
        self.app.add_url_rule("/channels", view_func=self._query_channels, methods=["POST"])
        self.app.add_url_rule("/channels/<ctype>/<cid_id>", view_func=self._partial_update, methods=["PATCH"])
        self.app.add_url_rule("/channels/<ctype>/<cid_id>", view_func=self._full_update, methods=["POST"])
        self.app.add_url_rule("/members", view_func=self._query_members, methods=["GET"])
        self.app.add_url_rule("/app", view_func=self._get_app, methods=["GET"])
        self._add_message_routes()
        self.app.after_request(self._rate_limit_headers)

    def create_channel(self, cid: str, **custom: Any) -> Json:
        """Add a channel; custom fields are flattened into it as Stream returns them."""
        ctype, _, cid_id = cid.partition(":")
        with self._lock:
            stamp = self._stamp(cid, event=False)
            self.channels[cid] = {
                "cid": cid,
                "type": ctype,
                "id": cid_id,
                "created_at": stamp,
                "updated_at": stamp,
                "frozen": False,
                "member_count": len(self.members.get(cid, {})),
                **copy.deepcopy(custom),
            }
            return copy.deepcopy(self.channels[cid])

    def add_member(self, cid: str, user_id: str, **record: Any) -> Json:
        """Make `user_id` a member of the channel; `record` overrides fields of Stream's member
        record (ChannelMemberResponse: banned, invited, invite_accepted_at, ...)."""
        with self._lock:
            stamp = rfc3339_us(round(self.clock() * 1_000_000))
            member: Json = {
                "user_id": user_id,
                "user": {"id": user_id},
                "role": "member",
                "channel_role": "channel_member",
                "created_at": stamp,
                "updated_at": stamp,
                "banned": False,
                "shadow_banned": False,
                "notifications_muted": False,
                **record,
            }
            self.members.setdefault(cid, {})[user_id] = member
            self.channels[cid]["member_count"] = len(self.members[cid])
            hook = self._member_added(cid, member) if self.member_events else None
            added = self._with_user(member)
        if hook is not None:
            self._deliver(hook)
        return added

    def set_user(self, user_id: str, **fields: Any) -> None:
        """Set fields of a user as Stream keeps them (a time as RFC 3339: `deactivated_at`,
        `revoke_tokens_issued_before`, ...; `banned: True` for an app-wide ban); None unsets one."""
        with self._lock:
            user = self.users.setdefault(user_id, {})
            for name, value in fields.items():
                if value is None:
                    user.pop(name, None)
                else:
                    user[name] = value

    def revoke_all_tokens(self, before: str | None) -> None:
        """The app-wide revoke (UpdateApp `revoke_tokens_issued_before`; None lifts it)."""
        with self._lock:
            self.app_settings["revoke_tokens_issued_before"] = before

    def _with_user(self, member: Json) -> Json:
        """A member record as Stream answers it: with its user's current fields (lock held)."""
        user_id = member["user_id"]
        return {**copy.deepcopy(member), "user": {"id": user_id, "banned": False, **copy.deepcopy(self.users.get(user_id, {}))}}

    def _member_added(self, cid: str, member: Json) -> Webhook:
        """Queue a signed member.added (MemberAddedEvent: cid, channel_type, channel_id, member, user)."""
        kind, _, ident = cid.partition(":")
        event = {
            "type": "member.added",
            "cid": cid,
            "channel_type": kind,
            "channel_id": ident,
            "member": self._with_user(member),
            "user": {"id": member["user_id"]},
            "created_at": self._stamp(cid),
        }
        return self._signed(event)

    def remove_member(self, cid: str, user_id: str) -> None:
        with self._lock:
            self.members.get(cid, {}).pop(user_id, None)
            self.channels[cid]["member_count"] = len(self.members.get(cid, {}))

    def call_fields(self, cid: str) -> Json:
        """The dict holding the call fields (``field_prefix``, e.g. channel["data"]); {} if absent."""
        with self._lock:
            node: Any = self.channels[cid]
            for key in filter(None, self.field_prefix.split(".")):
                node = node.get(key) if isinstance(node, dict) else None
            return copy.deepcopy(node) if isinstance(node, dict) else {}

    def client_update(
        self, cid: str, set: Json, unset: list[str] | None = None, user_id: str = "alice", webhook: bool = True
    ) -> Json:
        """Apply an update as a chat client would; queues channel.updated with request_info type
        client, and returns that event. `webhook=False`: the update is applied but its event is
        lost, as when the receiver was down longer than Stream's retries (about 15 s; Stream has
        no replay): neither delivered nor kept in the outbox."""
        with self._lock:
            self._update(cid, set, unset or [])
            hook = self._channel_updated(cid, {"type": "client"}, {"id": user_id})
            if not webhook:
                self.outbox.remove(hook)
        self._changed(cid, "client")
        if webhook:
            self._deliver(hook)
        event: Json = json.loads(hook[1])
        return event

    def echo_before_answer(
        self, share: float = 1.0, lead: float = 0.0, seed: int = 0, send: Callable[[Webhook], None] | None = None
    ) -> None:
        """From now on a `share` of partial updates (a seeded draw) send their channel.updated
        before they answer, as Stream may: `send(webhook)` when given (the test's or the
        courier's delivery), else a POST to `webhook_url` whose answer is awaited; then the
        answer waits `lead` seconds more (real time), so the receiver's task can run first. The
        echo stays in the outbox as every webhook does. `share=0` turns it off."""
        with self._lock:
            self._echo_first = (random.Random(seed), share, lead, send) if share > 0 else None

    def _send_before_answer(self, hook: Webhook) -> bool:
        """Deliver `hook` now if this update's echo goes first (its draw); whether it did."""
        with self._lock:
            if self._echo_first is None:
                return False
            rng, share, lead, send = self._echo_first
            if rng.random() >= share:
                return False
            self.echoes_before_answer += 1
        if send is not None:
            send(hook)
        elif self.webhook_url is not None:
            headers, body = hook
            with contextlib.suppress(Exception):
                _delivery_client().post(self.webhook_url, content=body, headers=headers)
        if lead:
            time.sleep(lead)
        return True

    def _changed(self, cid: str, by: str) -> None:
        if self.change_watchers:
            fields = self.call_fields(cid)
            for watch in self.change_watchers:
                watch(cid, fields, by)

    def _authenticate(self) -> str | None:
        """Server auth: query api_key, header stream-auth-type: jwt, Authorization = HS256 JWT {"server": true}."""
        if request.args.get("api_key") != self.api_key:
            return "api_key not valid"
        if request.headers.get("stream-auth-type") != "jwt":
            return "stream-auth-type header must be jwt"
        try:
            claims = decode_hs256(request.headers.get("Authorization", ""), self.api_secret)
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
        return json_response(body, status, headers)

    def _throttled_headers(self, now: float) -> dict[str, str]:
        """A 429 of the per-second cap (limit/30 a second): the quota is back at the next second."""
        return {"X-RateLimit-Limit": str(self.update_limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(now) + 1)}

    def _rate_limit_headers(self, response: Response) -> Response:
        """Stream sends X-RateLimit-* on every answer, each endpoint its own limit (update channel:
        300 per minute; send and update message: 1,000)."""
        limit = self.message_limit if request.method == "POST" and _is_message_path(request.path) else self.update_limit
        response.headers.setdefault("X-RateLimit-Limit", str(limit))
        response.headers.setdefault("X-RateLimit-Remaining", "0" if response.status_code == 429 else "299")
        response.headers.setdefault("X-RateLimit-Reset", str(int(time.time()) // 60 * 60 + 60))
        return response

    def _stamp(self, cid: str, event: bool = True) -> str:
        """Now, strictly increasing per channel by at least a microsecond (lock held): with
        nanoseconds as Stream stamps an event's `created_at`, with microseconds as it stamps a
        channel's `created_at`/`updated_at` (both in docs/webhooks/webhook_events.md)."""
        ns = max(round(self.clock() * 1_000_000_000), self._stamps.get(cid, 0) + 1000)
        self._stamps[cid] = ns
        return rfc3339_ns(ns) if event else rfc3339_us(ns // 1000)

    def _update(self, cid: str, sets: Json, unsets: list[str]) -> Json:
        channel = self.channels[cid]
        _apply(channel, sets, unsets)
        if self.bump_updated_at:
            channel["updated_at"] = self._stamp(cid, event=False)
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
        event.update(created_at=self._stamp(cid), request_info=request_info)
        return self._signed(event)

    def _signed(self, event: Json) -> Webhook:
        """Queue `event` signed with X-Signature = hex HMAC-SHA256(api_secret, raw body) (lock held)."""
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
            self.patch_times.append(g.arrived)
        self._changed(cid, "server")
        if not self._send_before_answer(hook):
            self._deliver(hook)
        return json_response({"channel": channel, "members": [], "duration": "1.00ms"})

    def _full_update(self, ctype: str, cid_id: str) -> Response:
        """Refuse the full update: it would delete custom fields callsync does not send."""
        return self._error(400, "fake Stream: full channel update is not allowed, use PATCH (partial update)")

    def _query_channels(self) -> Response:
        """QueryChannels filtered on {"cid": cid} or {"cid": {"$in": [...]}}, optionally with
        {"members": {"$in": [user ids]}} (channels any of them is a member of); honours
        limit/offset, and member_limit (default and most 100) for each channel's `members`."""
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        filters = body.get("filter_conditions")
        filters = filters if isinstance(filters, dict) else {}
        if "cid" not in filters and "members" not in filters:
            return self._list_channels(body, filters)
        wanted, users = _in(filters.get("cid")), _in(filters.get("members"))
        if wanted is None or ("members" in filters and users is None):
            return self._error(400, "fake Stream only supports cid filters, with an optional members $in")
        limit, offset = int(body.get("limit", 10)), int(body.get("offset", 0))
        member_limit = max(0, min(int(body.get("member_limit", 100)), 100))
        with self._lock:
            found = [
                {
                    "channel": copy.deepcopy(self.channels[c]),
                    "members": [self._with_user(m) for m in list(self.members.get(c, {}).values())[:member_limit]],
                }
                for c in wanted
                if c in self.channels and (users is None or any(u in self.members.get(c, {}) for u in users))
            ]
        return json_response({"channels": found[offset : offset + limit], "duration": "0.50ms"})

    # --- QueryChannels over the whole app (callsync's full resync) --------------------------------
    def _list_channels(self, body: Json, filters: Json) -> Response:
        """QueryChannels without a cid: no filter (every channel), top-level custom fields compared
        by equality (`{"callActive": true}` or `{"$eq": true}`), `created_at` with `$gt`/`$gte`;
        sorted by `created_at` (then cid: a stable order for ties). As Stream: `limit` at most 30,
        `offset` at most 1000, and no filter inside a custom object (a Stream maintainer in
        GetStream/stream-chat-flutter#1184: "the backend doesn't support nested filtering")."""
        limit, offset = int(body.get("limit", 10)), int(body.get("offset", 0))
        if not 0 < limit <= 30 or not 0 <= offset <= 1000:
            return self._error(400, "limit must be 1 to 30 and offset at most 1000")
        since = filters.get("created_at")
        equal = {k: (v.get("$eq") if isinstance(v, dict) else v) for k, v in filters.items() if k != "created_at"}
        builtin = ("cid", "type", "id", "updated_at", "frozen", "member_count", "members", "data")
        if any("." in key or key in builtin for key in equal) or (since is not None and not isinstance(since, dict)):
            return self._error(400, "fake Stream filters on top-level custom fields and created_at only")
        bound = since or {}
        with self._lock:
            ordered = self._by_creation()
            start = 0
            if "$gte" in bound or "$gt" in bound:
                key = (str(bound.get("$gte", bound.get("$gt"))), "" if "$gte" in bound else "\U0010ffff")
                start = _bisect(ordered, key)
            found: list[Json] = []
            skipped = 0
            for at, cid in ordered[start:]:
                channel = self.channels[cid]
                if "$gt" in bound and at <= str(bound["$gt"]):
                    continue
                if any(channel.get(k) != v for k, v in equal.items()):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append({"channel": copy.deepcopy(channel), "members": []})
                if len(found) == limit:
                    break
        return json_response({"channels": found, "duration": "0.70ms"})

    def _by_creation(self) -> list[tuple[str, str]]:
        """(created_at, cid) of every channel, sorted; rebuilt when channels are added (lock held)."""
        cached = getattr(self, "_creation_order", None)
        if cached is None or len(cached) != len(self.channels):
            cached = sorted((str(c["created_at"]), cid) for cid, c in self.channels.items())
            self._creation_order = cached
        return cached

    def _query_members(self) -> Response:
        """QueryMembers: GET /members?payload=<JSON {"type", "id", "filter_conditions", "limit", "offset"}>;
        filters on the user id: {"id": "x"}, {"id": {"$in": [...]}} or {} for every member."""
        try:
            payload = json.loads(request.args.get("payload", ""))
        except ValueError:
            return self._error(400, "payload must be JSON")
        if not isinstance(payload, dict) or not payload.get("type") or not isinstance(payload.get("filter_conditions"), dict):
            return self._error(400, "payload needs type and filter_conditions")
        cid = f"{payload['type']}:{payload.get('id', '')}"
        condition = payload["filter_conditions"].get("id")
        users = _in(condition) if condition is not None else None
        if condition is not None and users is None:
            return self._error(400, "fake Stream only supports id filters")
        limit, offset = int(payload.get("limit", 100)), int(payload.get("offset", 0))
        with self._lock:
            if cid not in self.channels:
                return self._error(404, f"Channel '{cid}' not found")
            members = [self._with_user(m) for u, m in self.members.get(cid, {}).items() if users is None or u in users]
            return json_response({"members": members[offset : offset + limit], "duration": "0.40ms"})

    def _get_app(self) -> Response:
        """GET /app: `{"app": AppResponseFields, "duration"}` (GetStream/protocol, GetApp)."""
        with self._lock:
            app = {key: value for key, value in self.app_settings.items() if value is not None}
        return json_response({"app": app, "duration": "0.30ms"})


def _bisect(ordered: list[tuple[str, str]], key: tuple[str, str]) -> int:
    import bisect

    return bisect.bisect_left(ordered, key)


def _in(condition: object) -> list[str] | None:
    """The values a filter condition allows: a value itself, or {"$in": [...]}; None if neither."""
    if isinstance(condition, str):
        return [condition]
    if isinstance(condition, dict) and isinstance(condition.get("$in"), list):
        return [str(v) for v in dict.fromkeys(condition["$in"])]
    return None


def _is_message_path(path: str) -> bool:
    """SendMessage `/channels/{type}/{id}/message` or UpdateMessage `/messages/{id}`."""
    return path.startswith("/messages/") or (path.startswith("/channels/") and path.endswith("/message"))
