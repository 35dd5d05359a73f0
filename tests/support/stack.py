"""The receiver served on a socket, a real Celery worker and real Redis, against the stand-ins."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker

from standins import FakeHms, FakeStream, serve
from tests.support.servers import real_redis, real_url
from webhooks.app import create_app
from worker.jobs.app import create_celery
from worker.settings import Settings

KEY, SECRET = "stream-key", "stream-secret-long-enough-for-hs256-keys"
HMS_KEY, HMS_SECRET = "hms-access-key", "hms-app-secret-long-enough-for-hs256-keys"
HOOK_SECRET = "hms-webhook-secret-value"
SECRETS = (SECRET, HMS_SECRET, HOOK_SECRET)
CID, CALL = "messaging:general", "call-messaging:general"


@dataclass
class Stack:
    stream: FakeStream
    hms: FakeHms
    redis: redis.Redis
    web: str
    settings: Settings


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@contextlib.contextmanager
def running_stack(**overrides: Any) -> Iterator[Stack]:
    client = real_redis()
    stream, hms = FakeStream(KEY, SECRET), FakeHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK_SECRET)
    stream_url, stop_stream = serve(stream.app)
    hms_url, stop_hms = serve(hms.app)
    settings = Settings(
        redis_url=real_url(),
        stream_api_key=KEY,
        stream_api_secret=SECRET,
        stream_base_url=stream_url,
        hms_access_key=HMS_KEY,
        hms_app_secret=HMS_SECRET,
        hms_base_url=hms_url,
        hms_webhook_secrets=(HOOK_SECRET,),
        **overrides,
    )
    web_url, stop_web = serve(create_app(settings, client))
    stream.webhook_url, hms.webhook_url = f"{web_url}/webhooks/stream", f"{web_url}/webhooks/hms"
    app = create_celery(settings)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10):
            yield Stack(stream, hms, client, web_url, settings)
    finally:
        stop_web()
        stop_stream()
        stop_hms()
        client.flushdb()
