"""The Flask app factory and its views (docs/http.md)."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from webhooks.body import BadBody, BodyTooLarge, inflate_limited, read_limited
from webhooks.metrics import WebhookMetrics
from worker.connect import settings_client
from worker.core.access import MEMBER_ADDED, MemberAdded, member_added
from worker.core.actions import APPLY_HMS_EVENT, APPLY_STREAM_EVENT
from worker.core.binding import call_of_room
from worker.core.events import (
    HMS_TYPES,
    STREAM_TYPES,
    HmsEvent,
    InvalidEvent,
    StreamEvent,
    cid_of_room,
    parse_hms_event,
    parse_stream_event,
)
from worker.core.signing import AuthenticationError, verify_hms, verify_stream
from worker.core.timebounds import stream_delivery_is_current
from worker.jobs.app import create_celery
from worker.logs import fields
from worker.ops.collector import RedisCollector
from worker.settings import Settings, load_settings
from worker.store.calls import CallsStore
from worker.store.enqueue import QUEUE, Enqueuer, QueueFull, settle_hms, settle_stream
from worker.store.keys import DEDUPE_TTL, dedupe_key

log = logging.getLogger("callsync.webhooks")
KNOWN_TYPES = frozenset(STREAM_TYPES) | frozenset(HMS_TYPES) | {MEMBER_ADDED}
Parse = Callable[[object, str | None], tuple[Any, str | None]]
DedupeKeys = Callable[[str | None, bytes], list[str]]


# Both platforms retry a 5xx within seconds (Stream: 3 attempts; 100ms: after 1, 3 and 10 s);
# Retry-After says the same to any other sender.
RETRY_AFTER_SECONDS = 10
# The calls API's blueprint factory, named rather than imported: it needs the platform clients,
# and the receiver's own modules import none (docs/design.md, "The web role's seam").
CALLS_API = "webhooks.calls:calls_blueprint"


def _answer(code: int, headers: dict[str, str] | None = None, **body: str) -> Response:
    return Response(json.dumps(body), status=code, mimetype="application/json", headers=headers)


def _event_type(obj: object) -> str:
    """The event's type for labels and logs: known to callsync, or "other" (bounded cardinality)."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) and kind in KNOWN_TYPES else "other"


def _ids(event: Any) -> dict[str, Any]:
    """Channel, room and session ids of a parsed event, for its log line."""
    if isinstance(event, StreamEvent):
        return {"cid": event.cid, "call_id": event.fields.call_id if event.fields else None}
    if isinstance(event, MemberAdded):
        return {"cid": event.cid, "user_id": event.user_id}
    if isinstance(event, HmsEvent):
        call_id = call_of_room(event.room_name) if event.room_name else None
        return {"room_id": event.room_id, "session_id": event.session_id, "call_id": call_id, "cid": cid_of_room(call_id)}
    return {}


class Rejected(Exception):
    def __init__(self, code: int, reason: str, error: str, headers: dict[str, str] | None = None):
        super().__init__(error)
        self.code, self.reason, self.error, self.headers = code, reason, error, headers


def _behind_proxies(app: Flask, proxies: int) -> None:
    """Take the client's address (the calls API limits 401s per address) as `proxies` trusted
    proxies report it: werkzeug's ProxyFix reads only that many X-Forwarded-For entries from its end."""
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]


def _forget_refusal(client: redis.Redis, event: MemberAdded) -> Response:
    """A member added: drop the calls API's "no" kept for them in that channel (a tiny store
    step, nothing queued: the calls API asks Stream afresh on their next request)."""
    try:
        CallsStore(client).forget_refusal(event.cid, event.user_id)
    except redis.RedisError:
        raise Rejected(503, "unavailable", "state store unavailable; retry later") from None
    return _answer(200, status="accepted")


def create_app(
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
    clock: Callable[[], float] = time.time,
    *,
    blueprints: Sequence[str] = (CALLS_API,),
) -> Flask:
    """The web app: the receiver's views, then each of `blueprints` ("module:factory", called
    with the settings, the Redis client, the enqueuer and the metrics)."""
    settings = settings or load_settings(os.environ).require("web")
    client = redis_client or settings_client(settings, health_check_interval=30)  # either form of REDIS_URL
    enqueuer = Enqueuer(client, create_celery(settings), DEDUPE_TTL, max_depth=settings.max_queue_depth)
    metrics = WebhookMetrics(RedisCollector(client))
    app = Flask("callsync")
    app.config["MAX_CONTENT_LENGTH"] = None  # we enforce the limit ourselves, after inflating
    _behind_proxies(app, settings.trusted_proxies)
    prefix = settings.field_path

    def receive(
        source: str, verify: Callable[[bytes], None], parse: Parse, delivery_id: str | None, task: str, keys: DedupeKeys
    ) -> Response:
        line: dict[str, Any] = {"source": source, "delivery_id": delivery_id, "event_type": "unknown"}
        try:
            event, line["delivery_id"], body = accept(verify, parse, line, delivery_id)
            if event is None:
                outcome, response = "ignored", _answer(200, status="ignored")
            elif isinstance(event, MemberAdded):
                line.update(_ids(event))
                outcome, response = "accepted", _forget_refusal(client, event)
            else:
                line.update(_ids(event))
                try:
                    # A peer event or an echo that provably changes nothing is settled here (docs/design.md).
                    settle = settle_hms(event, clock()) if isinstance(event, HmsEvent) else settle_stream(event, clock())
                    taken = enqueuer.enqueue_once(keys(line["delivery_id"], body), task, (event.to_json(),), settle)
                except redis.RedisError:
                    raise Rejected(503, "unavailable", "state store unavailable; retry later") from None
                except QueueFull:
                    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
                    raise Rejected(503, "queue_full", "too many deliveries waiting; retry later", retry) from None
                outcome = "accepted" if taken else "duplicate"
                response = _answer(202 if taken else 200, status=outcome)
            reason = ""
        except Rejected as rejected:
            outcome, reason = "rejected", rejected.reason
            response = _answer(rejected.code, rejected.headers, error=rejected.error)
        metrics.count(source, line["event_type"], outcome, reason)
        log.info("webhook %s", outcome, extra=fields(**line, outcome=outcome, reason=reason or None, status=response.status_code))
        return response

    def accept(
        verify: Callable[[bytes], None], parse: Parse, line: dict[str, Any], delivery_id: str | None
    ) -> tuple[Any, str | None, bytes]:
        """Read, verify and parse one delivery (the order of checks of docs/http.md); Rejected if it
        fails one. Returns the event (None: ignored), its delivery id and the (inflated) body."""
        limit = settings.max_body_bytes
        bad_body: str | None = None
        try:
            raw = read_limited(request.stream, limit, request.content_length)
            body = inflate_limited(raw, limit)
        except BodyTooLarge:
            raise Rejected(413, "too_large", f"body exceeds {limit} bytes") from None
        except BadBody as exc:
            body, bad_body = raw, str(exc)  # authenticate first, so the order of answers holds
        try:
            verify(body)
        except AuthenticationError as exc:
            raise Rejected(401, "unauthorized", str(exc)) from None
        if bad_body:
            raise Rejected(400, "bad_request", bad_body)
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            raise Rejected(400, "bad_request", "body is not JSON") from None
        line["event_type"] = _event_type(obj)
        try:
            return (*parse(obj, delivery_id), body)
        except InvalidEvent as exc:
            raise Rejected(400, "bad_request", str(exc)) from None

    @app.post("/webhooks/stream")
    def stream_webhook() -> Response:
        def verify(body: bytes) -> None:
            verify_stream(body, request.headers.get("X-Signature"), settings.stream_secrets)

        def parse(obj: object, webhook_id: str | None) -> tuple[Any, str | None]:
            event = parse_stream_event(obj, prefix)
            if event is None:
                return member_added(obj), webhook_id  # None: a type callsync ignores
            return (event if event is None or stream_delivery_is_current(event.created_at, clock()) else None), webhook_id

        def keys(webhook_id: str | None, body: bytes) -> list[str]:
            # X-Webhook-Id is not signed: a captured body under a new id is the same delivery.
            digest = dedupe_key("stream-body", hashlib.sha256(body).hexdigest())
            return [dedupe_key("stream", webhook_id), digest] if webhook_id else [digest]

        webhook_id = request.headers.get("X-Webhook-Id", "")[:128] or None
        return receive("stream", verify, parse, webhook_id, APPLY_STREAM_EVENT, keys)

    @app.post("/webhooks/hms")
    def hms_webhook() -> Response:
        header = settings.hms_webhook_header

        def verify(_: bytes) -> None:
            verify_hms(request.headers.get(header), settings.hms_webhook_secrets, header)

        def parse(obj: object, _: str | None) -> tuple[Any, str | None]:
            event = parse_hms_event(obj)
            envelope_id = obj.get("id") if isinstance(obj, dict) else None
            return event, event.id if event else (envelope_id if isinstance(envelope_id, str) else None)

        def keys(envelope_id: str | None, _: bytes) -> list[str]:
            return [dedupe_key("hms", envelope_id)] if envelope_id else []

        return receive("hms", verify, parse, None, APPLY_HMS_EVENT, keys)

    @app.get("/metrics")
    def metrics_view() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, status=200, headers={"Content-Type": content_type})

    @app.get("/healthz")
    def healthz() -> Response:
        return _answer(200, status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        # Redis is both the broker and the state store: one answer (the queue's depth) for both.
        try:
            depth = int(client.llen(QUEUE))
        except redis.RedisError as exc:
            why = f"unavailable: {type(exc).__name__}"  # the class only: a message may carry the URL
            return _answer(503, status="not ready", error=f"redis {why}", redis=why, broker=f"{why} (the broker is that Redis)")
        if depth >= settings.max_queue_depth:
            full = f"full: {depth} messages waiting, CALLSYNC_MAX_QUEUE_DEPTH is {settings.max_queue_depth}"
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return _answer(503, retry, status="not ready", error=f"queue {full}", redis="ok", broker="ok", queue=full)
        return _answer(200, status="ready", redis="ok", broker="ok", queue="ok")

    for spec in blueprints:
        module, _, factory = spec.partition(":")
        app.register_blueprint(getattr(importlib.import_module(module), factory)(settings, client, enqueuer, metrics))

    @app.errorhandler(405)
    def method_not_allowed(_: Exception) -> Response:
        return _answer(405, error="method not allowed")

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return _answer(404, error="not found")

    return app
