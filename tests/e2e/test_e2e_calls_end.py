"""`/end` while the queue is full, end to end (issue 18, item 4): `callsync web` as a real process
with CALLSYNC_MAX_QUEUE_DEPTH=1 and no worker yet, real Redis, the stand-ins over HTTP. The end is
refused with a 503 JSON answer and `Retry-After`, the session stays open; once a worker drains the
queue, the client's retry ends the room and the channel is cleared."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.support.calls_served import channel, serving
from tests.support.servers import real_redis
from worker.cli import launch
from worker.store.enqueue import QUEUE
from worker.store.state import State

pytestmark = pytest.mark.redis


def test_an_end_refused_by_a_full_queue_leaves_the_session_open_and_the_retry_ends_it(tmp_path: Path) -> None:
    settings = {"CALLSYNC_MAX_QUEUE_DEPTH": 1, "CALLSYNC_WORKER_CONCURRENCY": 2}
    with contextlib.closing(real_redis()) as store, serving(tmp_path, ("web",), **settings) as calls:
        stream, hms = calls.stream, calls.hms
        cid = channel(calls, "full", "alice", "bob")
        call_id = f"call-{cid}"
        room_id = calls.create("alice", cid, call_id).json()["call"]["hms"]["room_id"]
        session = hms.open_session(room_id)  # its webhook is taken: the queue now holds its ceiling
        launch.wait_for(lambda: store.llen(QUEUE) == 1, 10, "the session's webhook to be queued")

        refused = calls.end("bob", call_id)
        assert refused.status_code == 503 and refused.headers["content-type"].startswith("application/json")
        assert refused.headers["Retry-After"] == "10" and "error" in refused.json()
        recorded = State(store).call(call_id).session  # adopted from 100ms, and still open
        assert recorded is not None and (recorded.session_id, recorded.status) == (session["id"], "open")
        assert store.llen(QUEUE) == 1 and calls.end("bob", call_id).status_code == 503  # asked again: the same

        calls.start("worker")
        shown = {"callActive": True, "callId": call_id}
        launch.wait_for(lambda: stream.call_fields(cid) == shown, 30, "the worker to record the open and show the call")
        # The client retries as Retry-After says (sooner here): once the queue has room, the end is taken.
        ended = launch.wait_for(
            lambda: (answer := calls.end("bob", call_id)).status_code == 200 and answer, 60, "the end to be taken", every=0.5
        )
        assert ended.json() == {"status": "ending"}
        launch.wait_for(lambda: not hms.sessions[session["id"]]["active"], 30, "100ms to end the session")
        launch.wait_for(lambda: stream.call_fields(cid) == {"callActive": False}, 30, "callsync to clear the channel")
        assert [p for _, p, _ in hms.calls if p == f"/active-rooms/{room_id}/end-room"] == [f"/active-rooms/{room_id}/end-room"]
