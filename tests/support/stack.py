"""The receiver served on a socket, a real Celery worker and real Redis, against the stand-ins."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker

from standins import FakeHms, FakeStream, serve
from standins.credentials import HMS_KEY, HMS_SECRET, HOOK_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from tests.support.servers import real_redis, real_url
from webhooks.app import create_app
from worker.jobs.app import create_celery
from worker.settings import Settings

SECRETS = (SECRET, HMS_SECRET, HOOK_SECRET)
CID, CALL = "messaging:general", "call-messaging:general"


@dataclass
class Stack:
    stream: FakeStream
    hms: FakeHms
    redis: redis.Redis
    web: str
    settings: Settings


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
