"""The webhook examples the platforms publish (tests/samples/documented/, sources in
tests/samples/SOURCES.md), through the real receiver and parsed as their documentation means."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from standins.credentials import HOOK_SECRET as HOOK
from standins.credentials import STREAM_SECRET as SECRET
from tests.samples import stream_headers
from webhooks.app import create_app
from worker.core.events import CallFields, HmsEvent, StreamEvent, parse_hms_event, parse_stream_event, parse_time
from worker.settings import Settings
from worker.store.enqueue import QUEUE

DOCUMENTED = Path(__file__).parents[1] / "samples" / "documented"
SETTINGS = Settings(redis_url="redis://unused", stream_api_secret=SECRET, hms_webhook_secrets=(HOOK,))


def documented(name: str) -> bytes:
    """The sample as published; a `//` remark of the documentation's own is not part of the payload."""
    return re.sub(rb"\s//[^\n\"]*$", b"", (DOCUMENTED / name).read_bytes(), flags=re.M)


def receive(name: str, at: float | None = None) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """Post the sample to a receiver of its own, whose clock reads `at` (by default a second after
    the sample happened); its answer and the events it queued."""
    store = fakeredis.FakeRedis()
    body = documented(name)
    sample = json.loads(body)
    happened = parse_time(sample.get("created_at") or sample.get("timestamp")) or 0.0
    client = create_app(SETTINGS, store, clock=lambda: happened + 1.0 if at is None else at).test_client()
    if name.startswith("stream_"):
        answer = client.post("/webhooks/stream", data=body, headers=stream_headers(body, SECRET))
    else:
        answer = client.post("/webhooks/hms", data=body, headers={"X-Callsync-Secret": HOOK})
    queued = [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in store.lrange(QUEUE, 0, -1)]
    return answer.status_code, answer.json, queued


def when(text: str) -> float:
    at = parse_time(text)
    assert at is not None
    return at


# 100ms: what opens or closes a session, and which of the payload's times dates it.
HMS_ACTED_ON = {
    "hms_session_open_success.json": ("2021-11-30T12:58:49.97291247Z", "2021-11-30T12:58:49.97291247Z"),  # timestamp is earlier
    "hms_session_close_success.json": ("2021-11-30T12:48:49.97291247Z", "2021-11-30T12:58:49.97291247Z"),
    "hms_session_close_success_2022.json": ("2021-11-30T12:58:49.97291247Z", "2021-11-30T12:58:49.97291247Z"),
    "hms_peer_join_success.json": ("2021-11-30T12:58:49.97291247Z", "2021-11-30T12:58:49.97291247Z"),
    "hms_peer_leave_success.json": ("2021-11-30T12:58:49.97291247Z", "2021-11-30T12:58:58.500451704Z"),
    "hms_room_end_success.json": ("2021-11-30T12:58:49.97291247Z", "2021-11-30T12:58:49.97291247Z"),
}
HMS_CLOSES = {"hms_session_close_success.json", "hms_session_close_success_2022.json", "hms_room_end_success.json"}
HMS_IGNORED = sorted(
    {path.name for path in DOCUMENTED.glob("hms_*.json")} - set(HMS_ACTED_ON)
)  # the .failure forms, role change, beam, recording


@pytest.mark.parametrize("name", sorted(HMS_ACTED_ON))
def test_documented_100ms_session_events_are_taken_and_dated_as_documented(name: str) -> None:
    status, answer, [queued] = receive(name)
    assert (status, answer) == (202, {"status": "accepted"})
    event = parse_hms_event(json.loads(documented(name)))
    assert event is not None and HmsEvent.from_json(queued) == event
    started, at = HMS_ACTED_ON[name]
    assert event.started_at == pytest.approx(when(started)) and event.at == pytest.approx(when(at))
    assert event.closes == (name in HMS_CLOSES)
    # The documentation masks its ids and names: "**********" is no call id, so the room binds no channel.
    assert event.room_name is None and event.room_id.startswith("*")


def test_the_2022_close_without_session_stopped_at_is_dated_by_its_envelope_never_before_its_start() -> None:
    sample = json.loads(documented("hms_session_close_success_2022.json"))
    assert "session_stopped_at" not in sample["data"] and "session_duration" not in sample["data"]
    assert when(sample["timestamp"]) < when(sample["data"]["session_started_at"])  # whole seconds against nanoseconds
    later = {**sample, "timestamp": "2021-11-30T13:30:00Z"}
    assert parse_hms_event(later).at == when("2021-11-30T13:30:00Z")  # type: ignore[union-attr]
    with_duration = {**sample, "data": {**sample["data"], "session_duration": 600}}
    assert parse_hms_event(with_duration).at == pytest.approx(when("2021-11-30T13:08:49.97291247Z"))  # type: ignore[union-attr]


@pytest.mark.parametrize("name", HMS_IGNORED)
def test_documented_100ms_events_callsync_does_not_act_on_are_ignored(name: str) -> None:
    assert receive(name) == (200, {"status": "ignored"}, [])
    assert parse_hms_event(json.loads(documented(name))) is None


# Stream: every event is dated by its own created_at; channel.updated_at is no clock.
STREAM_ACTED_ON = {
    "stream_channel_created.json": ("messaging:custom-channel-7-channel-chat-1", "2024-10-15T10:12:00.402858186Z", True),
    "stream_channel_updated.json": ("messaging:fun", "2019-04-24T09:49:48.594316Z", False),
    "stream_channel_deleted.json": ("messaging:fun", "2019-04-24T09:49:48.630913Z", False),
    "stream_channel_updated_recorded.json": (
        "messaging:9214bd91-fafb-49b7-ae0c-c6e4cbdef8c9",
        "2026-06-24T11:44:49.76938506Z",
        False,
    ),
}


@pytest.mark.parametrize("name", sorted(STREAM_ACTED_ON))
def test_documented_stream_channel_events_are_taken_and_dated_by_their_created_at(name: str) -> None:
    status, answer, [queued] = receive(name)
    assert (status, answer) == (202, {"status": "accepted"})
    event = parse_stream_event(json.loads(documented(name)), SETTINGS.field_path)
    assert event is not None and StreamEvent.from_json(queued) == event
    cid, created_at, from_server = STREAM_ACTED_ON[name]
    assert (event.cid, event.from_server) == (cid, from_server)
    assert event.created_at == pytest.approx(when(created_at))
    # A deleted channel shows nothing; the others carry no call fields: no call.
    assert event.fields == (None if event.type == "channel.deleted" else CallFields(False, None))


@pytest.mark.parametrize("name", sorted(STREAM_ACTED_ON))
def test_documented_stream_events_an_hour_old_are_ignored(name: str) -> None:
    created_at = when(json.loads(documented(name))["created_at"])
    assert receive(name, at=created_at + 3601.0) == (200, {"status": "ignored"}, [])


@pytest.mark.parametrize("name", ["stream_channel_updated.json", "stream_channel_updated_recorded.json"])
def test_after_an_update_channel_updated_at_still_equals_created_at(name: str) -> None:
    channel = json.loads(documented(name))["channel"]
    assert channel["updated_at"] == channel["created_at"]  # why callsync never reads it as a clock


def test_documented_message_new_is_ignored() -> None:
    assert receive("stream_message_new.json") == (200, {"status": "ignored"}, [])


def test_every_documented_sample_is_listed_with_its_source() -> None:
    listed = set(re.findall(r"^\| `([a-z0-9_]+\.json)` \| [\w./-]+ \| [\w./-]+ \| [0-9a-f]{40} \|", SOURCES, re.M))
    assert listed == {path.name for path in DOCUMENTED.glob("*.json")}


SOURCES = (Path(__file__).parents[1] / "samples" / "SOURCES.md").read_text()
