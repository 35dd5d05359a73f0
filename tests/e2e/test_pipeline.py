"""The receiver, a real Celery worker and real Redis together, against stand-ins served over HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from standins import FakeStream
from tests.support.roles import wait_for
from tests.support.stack import CALL, CID, HOOK_SECRET, SECRET, Stack, running_stack
from worker.store.deadletters import DeadLetters

pytestmark = pytest.mark.redis


@pytest.fixture
def pipeline() -> Iterator[Stack]:
    with running_stack() as stack:
        yield stack


def patches(stream: FakeStream) -> list[Any]:
    return [body for method, _, body in stream.calls if method == "PATCH"]


def test_webhooks_move_the_channel_through_a_real_worker(pipeline):
    stream, hms = pipeline.stream, pipeline.hms
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
    stream, hms = pipeline.stream, pipeline.hms
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
    stream, hms, client = pipeline.stream, pipeline.hms, pipeline.redis
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
    url = f"{pipeline.web}/webhooks/hms"
    first = httpx.post(url, content=body, headers={"X-Callsync-Secret": HOOK_SECRET})
    second = httpx.post(url, content=body, headers={"X-Callsync-Secret": HOOK_SECRET})
    assert (first.status_code, first.json()) == (202, {"status": "accepted"})
    assert (second.status_code, second.json()) == (200, {"status": "duplicate"})
