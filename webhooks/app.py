"""The Flask app factory and its views (CONTRACT §3)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, request

from worker.celery_app import create_celery
from worker.core.events import InvalidEvent, parse_hms_event, parse_stream_event
from worker.core.signing import AuthenticationError, verify_hms, verify_stream
from worker.queue import Enqueuer
from worker.settings import Settings, load_settings
from worker.state import DEDUPE_TTL, dedupe_key

from .body import BadBody, BodyTooLarge, inflate_limited, read_limited


def _answer(code: int, **body: str) -> Response:
    return Response(json.dumps(body), status=code, mimetype="application/json")


def create_app(settings: Settings | None = None, redis_client: redis.Redis | None = None) -> Flask:
    settings = settings or load_settings(os.environ).require("web")
    client = redis_client or redis.Redis.from_url(settings.redis_url or "", health_check_interval=30)
    enqueuer = Enqueuer(client, create_celery(settings), DEDUPE_TTL)
    app = Flask("callsync")
    app.config["MAX_CONTENT_LENGTH"] = None  # we enforce the limit ourselves, after inflating
    prefix = settings.field_path

    def receive(
        source: str, verify: Callable[[bytes], None], parse: Callable[[bytes], tuple[Any, str | None]], task: str
    ) -> Response:
        limit = settings.max_body_bytes
        bad_body: str | None = None
        try:
            raw = read_limited(request.stream, limit, request.content_length)
            body = inflate_limited(raw, limit)
        except BodyTooLarge:
            return _answer(413, error=f"body exceeds {limit} bytes")
        except BadBody as exc:
            body, bad_body = raw, str(exc)  # authenticate first, so the order of answers holds
        try:
            verify(body)
        except AuthenticationError as exc:
            return _answer(401, error=str(exc))
        if bad_body:
            return _answer(400, error=bad_body)
        try:
            event, delivery_id = parse(body)
        except InvalidEvent as exc:
            return _answer(400, error=str(exc))
        if event is None:
            return _answer(200, status="ignored")
        key = dedupe_key(source, delivery_id) if delivery_id else None
        try:
            taken = enqueuer.enqueue_once(key, task, (event.to_json(),))
        except redis.RedisError:
            return _answer(503, error="state store unavailable; retry later")
        return _answer(202 if taken else 200, status="accepted" if taken else "duplicate")

    def parse_json(body: bytes) -> object:
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise InvalidEvent("body is not JSON") from None

    @app.post("/webhooks/stream")
    def stream_webhook() -> Response:
        def verify(body: bytes) -> None:
            verify_stream(body, request.headers.get("X-Signature"), settings.stream_api_secret)

        def parse(body: bytes) -> tuple[Any, str | None]:
            webhook_id = request.headers.get("X-Webhook-Id", "")[:128] or None
            return parse_stream_event(parse_json(body), prefix), webhook_id

        return receive("stream", verify, parse, "callsync.apply_stream_event")

    @app.post("/webhooks/hms")
    def hms_webhook() -> Response:
        header = settings.hms_webhook_header

        def verify(_: bytes) -> None:
            verify_hms(request.headers.get(header), settings.hms_webhook_secrets, header)

        def parse(body: bytes) -> tuple[Any, str | None]:
            event = parse_hms_event(parse_json(body))
            return event, event.id if event else None

        return receive("hms", verify, parse, "callsync.apply_hms_event")

    @app.get("/healthz")
    def healthz() -> Response:
        return _answer(200, status="ok")

    @app.get("/readyz")
    def readyz() -> Response:
        # Redis is both the broker and the state store: one PING answers for both.
        try:
            client.ping()
        except redis.RedisError as exc:
            return _answer(503, status="not ready", redis=f"unavailable: {type(exc).__name__}", broker="unavailable")
        return _answer(200, status="ready", redis="ok", broker="ok")

    @app.errorhandler(405)
    def method_not_allowed(_: Exception) -> Response:
        return _answer(405, error="method not allowed")

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return _answer(404, error="not found")

    return app
