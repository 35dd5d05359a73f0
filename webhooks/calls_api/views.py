"""The calls API's HTTP views (docs/calls-api.md): a blueprint the web app factory registers.

The routes and answers of Stream's retired built-in 100ms integration, so that stream-chat-js
8.x's `channel.createCall()` and `client.getCallToken()` work against callsync unchanged.
The steps are webhooks.calls_api.steps'; this module reads the request and writes the answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from flask import Blueprint, Response, request
from flask_cors import CORS

from webhooks.body import BodyTooLarge, read_limited
from webhooks.calls_api.steps import Caller, CallsApi, Upstreams
from webhooks.metrics import WebhookMetrics
from worker.core.calls import Refused, channel_of_path, cors_options
from worker.logs import fields
from worker.ops.counters import Tally, upstream_counter
from worker.settings import Settings
from worker.store.calls import CallsStore
from worker.store.enqueue import Enqueuer
from worker.store.state import State

log = logging.getLogger("callsync.calls")
MAX_BODY_BYTES = 16 * 1024  # a create body is `{"id", "type"}`
Step = Callable[[CallsApi, dict[str, Any]], dict[str, Any]]


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    # Answers carry tokens: no cache may keep them.
    return Response(
        json.dumps(body), status=status, headers={"Cache-Control": "no-store", **(headers or {})}, mimetype="application/json"
    )


def _caller() -> Caller:
    return Caller(
        authorization=request.headers.get("Authorization"),
        auth_type=request.headers.get("stream-auth-type"),
        user_id=request.args.get("user_id"),
        api_key=request.args.get("api_key"),
        address=request.remote_addr,
    )


def _create_body() -> object:
    try:
        raw = read_limited(request.stream, MAX_BODY_BYTES, request.content_length)
    except BodyTooLarge:
        raise Refused(413, f"body exceeds {MAX_BODY_BYTES} bytes") from None
    try:
        return json.loads(raw) if raw else None
    except (ValueError, RecursionError):
        return None  # the core answers 400 for anything but a JSON object


class CallsViews:
    """The calls API's views over one CallsApi (None: every route answers 503 naming why)."""

    def __init__(self, settings: Settings, client: redis.Redis, enqueuer: Enqueuer, metrics: WebhookMetrics):
        self.client, self.metrics = client, metrics
        self.why_not = settings.calls_api_unavailable
        self.api: CallsApi | None = None
        # The platform calls these views make are counted as the workers' are: into the Redis hash
        # that `/metrics` reads (worker.ops.counters), not into an in-process prometheus Counter.
        # RedisCollector already exports `callsync_upstream_calls_total` from that hash, and one
        # scrape may not hold two families of one name; one cluster-wide series (aggregated with
        # max() over web instances, like the workers') also counts each call exactly once. A request
        # flushes what it counted before it answers: one pipelined round trip, and only after an
        # upstream call (a cached join makes none), so nothing waits in a process for a scrape.
        self.tally = Tally()
        if self.why_not is None:
            upstreams = Upstreams(settings, on_call=upstream_counter(self.tally))
            self.api = CallsApi(settings, CallsStore(client), State(client), upstreams, enqueuer)
        else:
            log.warning("calls API unavailable: %s", self.why_not, extra=fields(reason=self.why_not))

    def answer(self, route: str, step: Step) -> Response:
        line: dict[str, Any] = {"route": route}
        started = time.perf_counter()
        headers: dict[str, str] = {}
        try:
            if self.api is None:
                raise Refused(503, self.why_not or "calls API unavailable")
            status, body = 200, step(self.api, line)
        except Refused as refused:
            status, body = refused.status, {"error": refused.error}
            if refused.retry_after is not None:
                headers["Retry-After"] = str(refused.retry_after)
        except redis.RedisError as exc:
            status, body = 503, {"error": "state store unavailable; retry later"}
            headers["Retry-After"] = "1"
            line["redis"] = type(exc).__name__  # the class only: a message may carry the URL
        finally:
            self.tally.flush(self.client)  # best effort: a Redis error drops these counts, never the answer
        self.metrics.count_call(route, status)
        level = logging.WARNING if status >= 500 else logging.INFO
        outcome = body.get("status", "ok") if status == 200 else "refused"
        extra = fields(
            **line,
            status=status,
            outcome=outcome,
            error=body.get("error"),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        log.log(level, "calls api %s %s", route, status, extra=extra)
        return _json(status, body, headers)

    def create_call(self, channel_type: str, channel_id: str) -> Response:
        return self.answer(
            "create", lambda api, line: api.create(_caller(), channel_of_path(channel_type, channel_id), _create_body(), line)
        )

    def join_call(self, call_id: str) -> Response:
        return self.answer("join", lambda api, line: api.join(_caller(), call_id, line))

    def describe_call(self, call_id: str) -> Response:
        return self.answer("describe", lambda api, line: api.describe(_caller(), call_id, line))

    def end_call(self, call_id: str) -> Response:
        return self.answer("end", lambda api, line: api.end(_caller(), call_id, line))


def _vary_by_origin(response: Response) -> Response:
    # The answer differs by Origin even with one allowed origin (flask-cors adds Vary only for several).
    response.vary.add("Origin")
    return response


def calls_blueprint(settings: Settings, client: redis.Redis, enqueuer: Enqueuer, metrics: WebhookMetrics) -> Blueprint:
    """The calls API. Without its settings (or in dry run) every route answers 503 naming why."""
    blueprint = Blueprint("calls", __name__)
    views = CallsViews(settings, client, enqueuer, metrics)
    blueprint.add_url_rule("/channels/<channel_type>/<channel_id>/call", "create_call", views.create_call, methods=["POST"])
    blueprint.add_url_rule("/calls/<call_id>", "join_call", views.join_call, methods=["POST"])
    blueprint.add_url_rule("/calls/<call_id>", "describe_call", views.describe_call, methods=["GET"])
    blueprint.add_url_rule("/calls/<call_id>/end", "end_call", views.end_call, methods=["POST"])
    options = cors_options(settings.cors_origins)
    if options is not None:
        CORS(blueprint, **options)
        blueprint.after_request(_vary_by_origin)
    return blueprint
