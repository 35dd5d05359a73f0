"""The webhook receiver's views (docs/http.md): read, verify and parse (webhooks.sources),
dedupe and enqueue, answer. No platform client and no step: the workers do the rest."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import redis
from flask import Flask, Response, request

from webhooks.body import BodyTooLarge, read_limited
from webhooks.metrics import WebhookMetrics
from webhooks.sources import Delivery, Event, HmsWebhooks, Rejected, StreamWebhooks, Webhooks
from worker.core.access import MemberAdded
from worker.core.binding import call_of_room
from worker.core.events import HmsEvent, StreamEvent, cid_of_room
from worker.logs import fields
from worker.settings import Settings
from worker.store.calls import CallsStore
from worker.store.enqueue import QUEUE, Enqueuer, QueueFull, settle_hms, settle_stream

log = logging.getLogger("callsync.webhooks")

# Both platforms retry a 5xx within seconds (Stream: 3 attempts; 100ms: after 1, 3 and 10 s);
# Retry-After says the same to any other sender.
RETRY_AFTER_SECONDS = 10
STORE_UNAVAILABLE = "state store unavailable; retry later"


def answer(code: int, headers: dict[str, str] | None = None, **body: str) -> Response:
    return Response(json.dumps(body), status=code, mimetype="application/json", headers=headers)


def _ids(event: Event) -> dict[str, Any]:
    """Channel, room and session ids of a parsed event, for its log line."""
    if isinstance(event, StreamEvent):
        return {"cid": event.cid, "call_id": event.fields.call_id if event.fields else None}
    if isinstance(event, MemberAdded):
        return {"cid": event.cid, "user_id": event.user_id}
    call_id = call_of_room(event.room_name) if event.room_name else None
    return {"room_id": event.room_id, "session_id": event.session_id, "call_id": call_id, "cid": cid_of_room(call_id)}


class Receiver:
    """The webhook views, the metrics and the health checks of the web role."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        enqueuer: Enqueuer,
        metrics: WebhookMetrics,
        clock: Callable[[], float],
    ):
        self.settings, self.client, self.enqueuer, self.metrics, self.clock = settings, client, enqueuer, metrics, clock
        self.stream, self.hms = StreamWebhooks(settings, clock), HmsWebhooks(settings)

    def register(self, app: Flask) -> None:
        app.add_url_rule("/webhooks/stream", "stream_webhook", self.stream_webhook, methods=["POST"])
        app.add_url_rule("/webhooks/hms", "hms_webhook", self.hms_webhook, methods=["POST"])
        app.add_url_rule("/metrics", "metrics_view", self.metrics_view)
        app.add_url_rule("/healthz", "healthz", self.healthz)
        app.add_url_rule("/readyz", "readyz", self.readyz)

    def stream_webhook(self) -> Response:
        return self.receive(self.stream)

    def hms_webhook(self) -> Response:
        return self.receive(self.hms)

    def receive(self, source: Webhooks) -> Response:
        """One delivery: its answer, one metric count and one log line."""
        delivery_id = source.header_id(request.headers)
        line: dict[str, Any] = {"source": source.source, "delivery_id": delivery_id, "event_type": "unknown"}
        reason = ""
        try:
            delivery = source.from_http(request.headers, self._read())
            line.update(event_type=delivery.event_type, delivery_id=delivery.delivery_id)
            outcome, response = self._take(source, delivery, line)
        except Rejected as rejected:
            line["event_type"] = rejected.event_type
            outcome, reason = "rejected", rejected.reason
            response = answer(rejected.code, rejected.headers, error=rejected.error)
        self.metrics.count(source.source, line["event_type"], outcome, reason)
        log.info("webhook %s", outcome, extra=fields(**line, outcome=outcome, reason=reason or None, status=response.status_code))
        return response

    def _read(self) -> bytes:
        limit = self.settings.max_body_bytes
        try:
            return read_limited(request.stream, limit, request.content_length)
        except BodyTooLarge:
            raise Rejected(413, "too_large", f"body exceeds {limit} bytes") from None

    def _take(self, source: Webhooks, delivery: Delivery, line: dict[str, Any]) -> tuple[str, Response]:
        """Enqueue a verified delivery once (or act on a `member.added`): outcome and answer."""
        event = delivery.event
        if event is None:
            return "ignored", answer(200, status="ignored")
        line.update(_ids(event))
        try:
            if isinstance(event, MemberAdded):
                # Drop the calls API's "no" kept for them in that channel (nothing queued: the
                # calls API asks Stream afresh on their next request).
                CallsStore(self.client).forget_refusal(event.cid, event.user_id)
                return "accepted", answer(200, status="accepted")
            # A peer event or an echo that provably changes nothing is settled here (docs/design.md).
            now = self.clock()
            settle = settle_hms(event, now) if isinstance(event, HmsEvent) else settle_stream(event, now)
            taken = self.enqueuer.enqueue_once(delivery.dedupe_keys, source.task, (event.to_json(),), settle)
        except redis.RedisError:
            raise Rejected(503, "unavailable", STORE_UNAVAILABLE) from None
        except QueueFull:
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            raise Rejected(503, "queue_full", "too many deliveries waiting; retry later", retry) from None
        outcome = "accepted" if taken else "duplicate"
        return outcome, answer(202 if taken else 200, status=outcome)

    def metrics_view(self) -> Response:
        body, content_type = self.metrics.exposition()
        return Response(body, status=200, headers={"Content-Type": content_type})

    def healthz(self) -> Response:
        return answer(200, status="ok")

    def readyz(self) -> Response:
        # Redis is both the broker and the state store: one answer (the queue's depth) for both.
        try:
            depth = int(self.client.llen(QUEUE))
        except redis.RedisError as exc:
            why = f"unavailable: {type(exc).__name__}"  # the class only: a message may carry the URL
            return answer(503, status="not ready", error=f"redis {why}", redis=why, broker=f"{why} (the broker is that Redis)")
        ceiling = self.settings.max_queue_depth
        if depth >= ceiling:
            full = f"full: {depth} messages waiting, CALLSYNC_MAX_QUEUE_DEPTH is {ceiling}"
            retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
            return answer(503, retry, status="not ready", error=f"queue {full}", redis="ok", broker="ok", queue=full)
        return answer(200, status="ready", redis="ok", broker="ok", queue="ok")
