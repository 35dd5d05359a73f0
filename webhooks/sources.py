"""One way in per platform: `from_http(headers, body)` verifies a delivery and parses it, or
raises `Rejected` with the answer to give (the order of checks of docs/http.md).

The body given is the one read within the limit (webhooks.body.read_limited); it is inflated
here, as a gzip body is signed and measured uncompressed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from webhooks.body import BadBody, BodyTooLarge, inflate_limited
from worker.core.access import MEMBER_ADDED, MemberAdded, member_added
from worker.core.actions import APPLY_HMS_EVENT, APPLY_STREAM_EVENT
from worker.core.events import HMS_TYPES, STREAM_TYPES, HmsEvent, InvalidEvent, StreamEvent, parse_hms_event, parse_stream_event
from worker.core.signing import AuthenticationError, verify_hms, verify_stream
from worker.core.timebounds import stream_delivery_is_current
from worker.settings import Settings
from worker.store.keys import dedupe_key

KNOWN_TYPES = frozenset(STREAM_TYPES) | frozenset(HMS_TYPES) | {MEMBER_ADDED}
Event = StreamEvent | HmsEvent | MemberAdded


class Headers(Protocol):
    """A request's headers (werkzeug's, or a dict in a test)."""

    def get(self, key: str, /) -> str | None: ...


class Rejected(Exception):
    """The delivery is answered `code` with `{"error": error}`; `reason` labels the metric and
    `event_type` is the delivery's, when it was read before the check failed."""

    def __init__(
        self,
        code: int,
        reason: str,
        error: str,
        headers: dict[str, str] | None = None,
        *,
        event_type: str = "unknown",
    ):
        super().__init__(error)
        self.code, self.reason, self.error, self.headers = code, reason, error, headers
        self.event_type = event_type


@dataclass(frozen=True)
class Delivery:
    """A verified, parsed delivery."""

    event: Event | None  # None: a delivery callsync ignores (answered 200, leaves no trace)
    event_type: str  # a type callsync knows, or "other" (bounded label cardinality)
    delivery_id: str | None
    dedupe_keys: list[str]


def event_type_of(obj: object) -> str:
    """The event's type for labels and logs: known to callsync, or "other"."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) and kind in KNOWN_TYPES else "other"


class Webhooks:
    """What both platforms share: inflate, authenticate, then read the JSON."""

    source: str
    task: str

    def __init__(self, max_body_bytes: int):
        self._limit = max_body_bytes

    def from_http(self, headers: Headers, raw: bytes) -> Delivery:
        """The verified, parsed delivery; Rejected (one error type) when a check fails."""
        bad_body: str | None = None
        try:
            body = inflate_limited(raw, self._limit)
        except BodyTooLarge:
            raise Rejected(413, "too_large", f"body exceeds {self._limit} bytes") from None
        except BadBody as exc:
            body, bad_body = raw, str(exc)  # authenticate first, so the order of answers holds
        try:
            self._verify(headers, body)
        except AuthenticationError as exc:
            raise Rejected(401, "unauthorized", str(exc)) from None
        if bad_body:
            raise Rejected(400, "bad_request", bad_body)
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            raise Rejected(400, "bad_request", "body is not JSON") from None
        event_type = event_type_of(obj)
        try:
            return self._parse(obj, body, event_type, self.header_id(headers))
        except InvalidEvent as exc:
            raise Rejected(400, "bad_request", str(exc), event_type=event_type) from None

    def header_id(self, headers: Headers) -> str | None:
        """The delivery id the headers carry, known before any check (None: the body's)."""
        return None

    def _verify(self, headers: Headers, body: bytes) -> None:
        raise NotImplementedError

    def _parse(self, obj: object, body: bytes, event_type: str, delivery_id: str | None) -> Delivery:
        raise NotImplementedError


class StreamWebhooks(Webhooks):
    """Stream Chat: `X-Signature` over the inflated body, deduplicated by `X-Webhook-Id` and by
    the body's digest; a delivery outside the window Stream could be making it in is ignored."""

    source, task = "stream", APPLY_STREAM_EVENT

    def __init__(self, settings: Settings, clock: Callable[[], float]):
        super().__init__(settings.max_body_bytes)
        self._secrets, self._prefix, self._clock = settings.stream_secrets, settings.field_path, clock

    def header_id(self, headers: Headers) -> str | None:
        return (headers.get("X-Webhook-Id") or "")[:128] or None

    def _verify(self, headers: Headers, body: bytes) -> None:
        verify_stream(body, headers.get("X-Signature"), self._secrets)

    def _parse(self, obj: object, body: bytes, event_type: str, delivery_id: str | None) -> Delivery:
        # X-Webhook-Id is not signed: a captured body under a new id is the same delivery.
        digest = dedupe_key("stream-body", hashlib.sha256(body).hexdigest())
        keys = [dedupe_key("stream", delivery_id), digest] if delivery_id else [digest]
        event = parse_stream_event(obj, self._prefix)
        if event is None:
            return Delivery(member_added(obj), event_type, delivery_id, keys)  # None: a type callsync ignores
        current = stream_delivery_is_current(event.created_at, self._clock())
        return Delivery(event if current else None, event_type, delivery_id, keys)


class HmsWebhooks(Webhooks):
    """100ms: a fixed secret in a configured header, deduplicated by the envelope `id`."""

    source, task = "hms", APPLY_HMS_EVENT

    def __init__(self, settings: Settings):
        super().__init__(settings.max_body_bytes)
        self._secrets, self._header = settings.hms_webhook_secrets, settings.hms_webhook_header

    def _verify(self, headers: Headers, body: bytes) -> None:
        verify_hms(headers.get(self._header), self._secrets, self._header)

    def _parse(self, obj: object, body: bytes, event_type: str, delivery_id: str | None) -> Delivery:
        event = parse_hms_event(obj)
        envelope_id = obj.get("id") if isinstance(obj, dict) else None
        delivery_id = event.id if event else (envelope_id if isinstance(envelope_id, str) else None)
        return Delivery(event, event_type, delivery_id, [dedupe_key("hms", delivery_id)] if delivery_id else [])
