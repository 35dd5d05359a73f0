"""Call messages end to end (rule 13): `callsync web` and `callsync worker` as real processes with
CALLSYNC_CALL_MESSAGES=true, real Redis, the stand-ins over HTTP; webhooks as the stand-ins send them.
Outcomes are judged by the messages the Stream stand-in ends up holding."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from standins.credentials import HOOK_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from tests.support.calls_served import Calls, channel, serving, settle
from worker.cli import launch

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Calls]:
    logs = tmp_path_factory.mktemp("e2e-messages-logs")
    with serving(logs, WEB_CONCURRENCY=1, CALLSYNC_WORKER_CONCURRENCY=2, CALLSYNC_CALL_MESSAGES="true") as calls:
        launch.wait_for(lambda: "callsync" in calls.stream.users, 15, "the message user to be upserted")
        yield calls


def one_message(calls: Calls, cid: str, text: str, timeout: float = 20) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        shown = calls.stream.messages_in(cid)
        assert len(shown) <= 1, shown
        return shown[0] if shown and shown[0]["text"].startswith(text) else None

    message: dict[str, Any] = launch.wait_for(found, timeout, f"the message {text!r} in {cid}")
    return message


def start(calls: Calls, *members: str) -> tuple[str, str, dict[str, Any]]:
    cid = channel(calls, "msg", *members)
    call_id = f"call-{cid}"
    room_id = calls.create(members[0], cid, call_id).json()["call"]["hms"]["room_id"]
    return cid, call_id, calls.hms.open_session(room_id)


def describe(calls: Calls, user: str, call_id: str) -> httpx.Response:
    token = jwt.encode({"user_id": user}, SECRET, algorithm="HS256")
    headers = {"authorization": token, "stream-auth-type": "jwt"}
    return httpx.get(f"{calls.web}/calls/{quote(call_id, safe='')}", params={"api_key": KEY, "user_id": user}, headers=headers)


def test_a_call_of_two_members_is_one_message_updated_on_close(calls: Calls) -> None:
    cid, call_id, session = start(calls, "alice", "bob")
    started = one_message(calls, cid, "Call started")
    assert started["id"] == f"callsync-{session['id']}" and started["attachments"][0]["status"] == "live"
    alice = calls.hms.join_peer(session["id"], "alice")
    calls.hms.join_peer(session["id"], "bob")
    launch.wait_for(lambda: len(describe(calls, "bob", call_id).json()["call"]["participants"]) == 2, 15, "both in the call")
    calls.hms.leave_peer(session["id"], alice)
    launch.wait_for(
        lambda: [p["user_id"] for p in describe(calls, "bob", call_id).json()["call"]["participants"]] == ["bob"],
        15,
        "alice gone",
    )
    assert describe(calls, "mallory", call_id).status_code == 403
    calls.hms.close_session(session["id"])
    ended = one_message(calls, cid, "Call ended")
    attachment = ended["attachments"][0]
    assert attachment["status"] == "ended" and attachment["participants"] == ["alice", "bob"]
    assert attachment["participant_count"] == 2 and isinstance(attachment["duration_seconds"], int)
    assert describe(calls, "bob", call_id).json()["call"]["session"] is None


def test_duplicates_and_redeliveries_leave_one_message(calls: Calls) -> None:
    cid, _, session = start(calls, "alice", "bob")
    calls.hms.join_peer(session["id"], "alice")
    calls.hms.join_peer(session["id"], "bob")
    one_message(calls, cid, "Call started")
    calls.hms.close_session(session["id"])
    one_message(calls, cid, "Call ended")
    mine = [json.loads(body) for _, body in calls.hms.outbox if json.loads(body)["data"].get("session_id") == session["id"]]
    for envelope in mine:
        for fresh_id in (False, True):  # a duplicate delivery, then the same event under a new id (a replay)
            sent = {**envelope, "id": str(uuid.uuid4())} if fresh_id else envelope
            answer = httpx.post(f"{calls.web}/webhooks/hms", json=sent, headers={"X-Callsync-Secret": HOOK_SECRET})
            assert answer.status_code in (200, 202)  # duplicate, accepted
    settle(calls)
    assert len(calls.stream.messages_in(cid)) == 1
    sends = [p for m, p, _ in calls.stream.calls if m == "POST" and p == f"/channels/{cid.replace(':', '/')}/message"]
    assert len(sends) == 1


def test_a_second_session_is_a_second_message(calls: Calls) -> None:
    cid, _, session = start(calls, "alice", "bob")
    one_message(calls, cid, "Call started")
    calls.hms.close_session(session["id"])
    one_message(calls, cid, "Call ended")
    second = calls.hms.open_session(session["room_id"])
    launch.wait_for(lambda: len(calls.stream.messages_in(cid)) == 2, 20, "a second message")
    assert {m["id"] for m in calls.stream.messages_in(cid)} == {f"callsync-{session['id']}", f"callsync-{second['id']}"}


def test_a_session_only_its_caller_joined_is_missed(calls: Calls) -> None:
    cid, _, session = start(calls, "alice", "bob")
    calls.hms.join_peer(session["id"], "alice")
    one_message(calls, cid, "Call started")
    calls.hms.close_session(session["id"])
    missed = one_message(calls, cid, "Missed call")
    assert missed["attachments"][0]["status"] == "missed"


def test_a_deleted_channel_drops_the_message(calls: Calls) -> None:
    cid, _, session = start(calls, "alice", "bob")
    one_message(calls, cid, "Call started")
    calls.stream.delete_channel(cid)
    calls.hms.close_session(session["id"])
    worker_log = calls.children[1].log
    assert worker_log is not None
    launch.wait_for(lambda: f"callsync-{session['id']} dropped" in worker_log.read_text(errors="replace"), 20, "the drop")


def message_sends(calls: Calls, cid: str) -> list[float]:
    """When each SendMessage to `cid` reached the stand-in (answered or not)."""
    path = f"/channels/{cid.replace(':', '/')}/message"
    return [at for (m, p, _), at in zip(calls.stream.calls, calls.stream.call_times, strict=True) if m == "POST" and p == path]


def test_a_429_on_send_pauses_messages_only_and_the_message_comes_late_and_once(calls: Calls) -> None:
    calls.stream.fail_next_messages(1, 429, retry_after=5)
    cid, _, _ = start(calls, "alice", "bob")
    launch.wait_for(lambda: message_sends(calls, cid), 15, "the send that is answered 429")
    throttled_at = message_sends(calls, cid)[0]
    # The messages endpoint waits out its 5 s; channel updates go on: a second call shows at once.
    other, other_call, _ = start(calls, "carol", "dave")
    launch.wait_for(lambda: calls.stream.channels[other].get("data", {}).get("callId") == other_call, 15, "the other channel")
    shown_at = max(
        at
        for (m, p, _), at in zip(calls.stream.calls, calls.stream.call_times, strict=True)
        if m == "PATCH" and p == f"/channels/{other.replace(':', '/')}"
    )
    assert shown_at < throttled_at + 5, "a 429 on messages held a channel update up"
    assert calls.stream.messages_in(cid) == []
    one_message(calls, cid, "Call started", timeout=30)
    one_message(calls, other, "Call started", timeout=30)
    _, second = message_sends(calls, cid)  # the 429, then the send: never a third
    assert second >= throttled_at + 5 - 0.05  # late: after the wait the 429 asked for
    settle(calls)
    assert len(message_sends(calls, cid)) == 2 and len(calls.stream.messages_in(cid)) == 1


def test_a_lost_open_then_the_end_is_one_message(calls: Calls) -> None:
    cid = channel(calls, "msg", "alice", "bob")
    call_id = f"call-{cid}"
    room_id = calls.create("alice", cid, call_id).json()["call"]["hms"]["room_id"]
    calls.hms.lose_next_webhooks(1)
    session = calls.hms.open_session(room_id)  # its session.open.success never reaches callsync
    calls.hms.join_peer(session["id"], "alice", webhook=False)
    calls.hms.join_peer(session["id"], "bob", webhook=False)
    calls.hms.close_session(session["id"])
    ended = one_message(calls, cid, "Call ended")
    assert ended["id"] == f"callsync-{session['id']}" and ended["attachments"][0]["participants"] == ["alice", "bob"]
    settle(calls)
    assert len(message_sends(calls, cid)) == 1 and len(calls.stream.messages_in(cid)) == 1
