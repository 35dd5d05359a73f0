"""The receiver served on a socket, a real Celery worker and real Redis, against the stand-ins."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import redis
from celery.contrib.testing.worker import start_worker

from standins import FakeHms, FakeStream, running, serve
from standins.credentials import HMS_SECRET, HOOK_SECRET
from standins.credentials import STREAM_SECRET as SECRET
from tests.support.servers import real_redis, real_url
from webhooks.app import create_app
from worker.jobs.app import create_celery
from worker.settings import Settings, load_settings
from worker.store.enqueue import QUEUES

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
    with running() as platforms:
        settings = replace(load_settings({**platforms.settings(), "REDIS_URL": real_url()}), **overrides)
        web_url, stop_web = serve(create_app(settings, client))
        platforms.send_webhooks_to(web_url)
        app = create_celery(settings)
        try:
            worker = {"pool": "threads", "concurrency": 2, "queues": list(QUEUES)}  # both, as `callsync worker` consumes
            with start_worker(app, **worker, perform_ping_check=False, shutdown_timeout=10):
                yield Stack(platforms.stream, platforms.hms, client, web_url, settings)
        finally:
            stop_web()
            client.flushdb()
