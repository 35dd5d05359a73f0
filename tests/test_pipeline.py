"""The receiver, a real Celery worker and real Redis together, against stand-ins served over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from celery.contrib.testing.worker import start_worker

from standins import FakeHms, FakeStream, serve
from tests.conftest import REAL_URL, real_redis_or_skip
from webhooks.app import create_app
from worker.celery_app import create_celery
from worker.deadletters import DeadLetters
from worker.settings import Settings

pytestmark = pytest.mark.redis

KEY, SECRET = "stream-key", "stream-secret-long-enough-for-hs256-keys"
HMS_KEY, HMS_SECRET = "hms-access-key", "hms-app-secret-long-enough-for-hs256-keys"
HOOK_SECRET = "hms-webhook-secret"
CID, CALL = "messaging:general", "call-messaging:general"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def pipeline() -> Iterator[dict[str, Any]]:
    client = real_redis_or_skip()
    stream, hms = FakeStream(KEY, SECRET), FakeHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK_SECRET)
    stream_url, stop_stream = serve(stream.app)
    hms_url, stop_hms = serve(hms.app)
    settings = Settings(
        redis_url=REAL_URL,
        stream_api_key=KEY,
        stream_api_secret=SECRET,
        stream_base_url=stream_url,
        hms_access_key=HMS_KEY,
        hms_app_secret=HMS_SECRET,
        hms_base_url=hms_url,
        hms_webhook_secrets=(HOOK_SECRET,),
    )
    web_url, stop_web = serve(create_app(settings, client))
    stream.webhook_url, hms.webhook_url = f"{web_url}/webhooks/stream", f"{web_url}/webhooks/hms"
    app = create_celery(settings)
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=10):
        yield {"stream": stream, "hms": hms, "redis": client, "web": web_url}
    stop_web()
    stop_stream()
    stop_hms()
    client.flushdb()


def patches(stream: FakeStream) -> list[Any]:
    return [body for method, _, body in stream.calls if method == "PATCH"]


def test_webhooks_move_the_channel_through_a_real_worker(pipeline):
    stream, hms = pipeline["stream"], pipeline["hms"]
    stream.create_channel(CID)
    room = hms.create_room(CALL)
    session = hms.open_session(room["id"])  # the stand-in POSTs session.open.success to the receiver
    wait_for(lambda: stream.call_fields(CID).get("callActive") is True)
    assert stream.call_fields(CID)["callId"] == CALL
    hms.close_session(session["id"])
    wait_for(lambda: stream.call_fields(CID).get("callActive") is False)
    time.sleep(0.5)  # let the echoes of both writes come back and be reconciled
    assert patches(stream) == [
        {"set": {"data.callActive": True, "data.callId": CALL}},
        {"set": {"data.callActive": False}, "unset": ["data.callId"]},
    ]


def test_client_ending_the_call_ends_the_room(pipeline):
    stream, hms = pipeline["stream"], pipeline["hms"]
    stream.create_channel(CID)
    room = hms.create_room(CALL)
    session = hms.open_session(room["id"])
    wait_for(lambda: stream.call_fields(CID).get("callActive") is True)
    time.sleep(0.3)  # the echo of callsync's write is recorded before the client acts
    stream.client_update(CID, {"data": {"callActive": False}})
    wait_for(lambda: not hms.sessions[session["id"]]["active"])
    assert any(path.endswith("/end-room") for _, path, _ in hms.calls)
    time.sleep(0.5)
    assert stream.call_fields(CID) == {"callActive": False}
    assert len(patches(stream)) == 1


def test_a_permanent_upstream_error_becomes_a_dead_letter(pipeline):
    stream, hms, client = pipeline["stream"], pipeline["hms"], pipeline["redis"]
    stream.create_channel(CID)
    stream.fail_next(1, 400)
    room = hms.create_room(CALL)
    hms.open_session(room["id"])
    letters = DeadLetters(client)
    [letter] = wait_for(letters.list)
    assert letter.task == "callsync.apply_hms_event" and letter.args[0]["room_name"] == CALL
    assert "stream 400" in letter.error and SECRET not in letter.error


def test_duplicate_delivery_is_answered_duplicate(pipeline):
    body = b'{"id": "dup-1", "type": "session.open.success", "data": {"room_id": "r", "room_name": "x", "session_id": "s"}}'
    url = f"{pipeline['web']}/webhooks/hms"
    first = httpx.post(url, content=body, headers={"X-Callsync-Secret": HOOK_SECRET})
    second = httpx.post(url, content=body, headers={"X-Callsync-Secret": HOOK_SECRET})
    assert (first.status_code, first.json()) == (202, {"status": "accepted"})
    assert (second.status_code, second.json()) == (200, {"status": "duplicate"})
