"""The Flask app factory (docs/http.md): the webhook receiver's views and the calls API's blueprint."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis
from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from webhooks.calls_api import calls_blueprint
from webhooks.metrics import WebhookMetrics
from webhooks.receiver import Receiver, answer
from worker.connect import settings_client
from worker.jobs.app import create_celery
from worker.ops.collector import RedisCollector
from worker.settings import Settings, load_settings
from worker.store.enqueue import Enqueuer
from worker.store.keys import DEDUPE_TTL


def create_app(
    settings: Settings | None = None, redis_client: redis.Redis | None = None, clock: Callable[[], float] = time.time
) -> Flask:
    """The web app: the receiver's views, the metrics and health checks, and the calls API."""
    settings = settings or load_settings(os.environ).require("web")
    client = redis_client or settings_client(settings, health_check_interval=30)  # either form of REDIS_URL
    enqueuer = Enqueuer(client, create_celery(settings), DEDUPE_TTL, max_depth=settings.max_queue_depth)
    metrics = WebhookMetrics(RedisCollector(client))
    app = Flask("callsync")
    app.config["MAX_CONTENT_LENGTH"] = None  # we enforce the limit ourselves, after inflating
    if settings.trusted_proxies:
        # The client's address (the calls API limits 401s per address) as that many trusted
        # proxies report it: ProxyFix reads only that many X-Forwarded-For entries from the end.
        proxies = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    Receiver(settings, client, enqueuer, metrics, clock).register(app)
    app.register_blueprint(calls_blueprint(settings, client, enqueuer, metrics))
    app.register_error_handler(405, lambda _: answer(405, error="method not allowed"))
    app.register_error_handler(404, lambda _: answer(404, error="not found"))
    return app
