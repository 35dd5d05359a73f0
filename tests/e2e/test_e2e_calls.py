"""The calls API end to end: `callsync web` and `callsync worker` as real processes, real Redis,
the stand-ins over HTTP. Requests are exactly what stream-chat 8.61 sends (path, query `user_id`
and `api_key`, headers: GetStream/stream-chat-js v8.61.0, src/client.ts `_enrichAxiosOptions`,
`getCallToken`; src/channel.ts `createCall`).
Outcomes are judged by the answers and by what the stand-ins end up holding.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from standins.credentials import HMS_SECRET, HOOK_SECRET, STREAM_SECRET
from tests.support.calls_served import Calls, channel, serving, settle
from tests.support.servers import real_url
from worker.cli import launch
from worker.store.keys import channel_key

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Calls]:
    # Two web processes: the caches are Redis's, not a process's.
    with serving(tmp_path_factory.mktemp("e2e-calls-logs"), WEB_CONCURRENCY=2, CALLSYNC_WORKER_CONCURRENCY=2) as calls:
        yield calls


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, HMS_SECRET, algorithms=["HS256"])


def test_members_create_and_join_one_room_each_with_their_own_token(calls: Calls) -> None:
    cid = channel(calls, "team", "alice", "bob")
    call_id = f"call-{cid}"
    created = calls.create("alice", cid, call_id)
    assert created.status_code == 200, created.text
    room_id = created.json()["call"]["hms"]["room_id"]
    assert created.json()["call"] == {"id": call_id, "provider": "hms", "hms": {"room_id": room_id, "room_name": call_id}}
    joined = calls.join("bob", call_id)
    assert joined.status_code == 200 and joined.json()["call"]["hms"]["room_id"] == room_id
    alice, bob = claims(created.json()["token"]), claims(joined.json()["token"])
    assert (alice["user_id"], bob["user_id"]) == ("alice", "bob") and alice["room_id"] == bob["room_id"] == room_id
    again = calls.create("bob", cid, call_id)
    assert again.status_code == 200 and again.json()["call"]["hms"]["room_id"] == room_id
    assert [r["id"] for r in calls.hms.rooms.values() if r["name"] == call_id] == [room_id]  # one room


def test_outsiders_forgeries_and_unknown_calls_are_refused(calls: Calls) -> None:
    cid = channel(calls, "private", "alice")
    call_id = f"call-{cid}"
    assert calls.create("alice", cid, call_id).status_code == 200
    outsider = calls.join("mallory", call_id)
    assert outsider.status_code == 403 and outsider.json() == {"error": f"not a member of channel {cid}"}
    forged = jwt.encode({"user_id": "alice"}, "a-guessed-secret-long-enough-for-hs256", algorithm="HS256")
    assert calls.join("alice", call_id, token=forged).status_code == 401
    unknown = calls.join("alice", f"never-created-{uuid.uuid4().hex[:6]}")
    assert unknown.status_code == 404 and unknown.json() == {"error": "no such call"}


@pytest.mark.parametrize("form", ["reference", "any"])
def test_a_member_ending_the_call_ends_the_room_and_clears_the_channel(calls: Calls, form: str) -> None:
    cid = channel(calls, f"end-{form}", "alice", "bob")
    call_id = f"call-{cid}" if form == "reference" else f"standup-{uuid.uuid4().hex[:8]}"
    room_id = calls.create("alice", cid, call_id).json()["call"]["hms"]["room_id"]
    session = calls.hms.open_session(room_id)  # alice's client joins 100ms: the session opens
    launch.wait_for(
        lambda: calls.stream.call_fields(cid) == {"callActive": True, "callId": call_id}, 15, "callsync to show the call"
    )
    ended = calls.end("bob", call_id)
    assert ended.status_code == 200 and ended.json() == {"status": "ending"}
    launch.wait_for(lambda: not calls.hms.sessions[session["id"]]["active"], 15, "100ms to end the session")
    launch.wait_for(lambda: calls.stream.call_fields(cid) == {"callActive": False}, 15, "callsync to clear the channel")
    end_rooms = [p for _, p, _ in calls.hms.calls if p == f"/active-rooms/{room_id}/end-room"]
    assert len(end_rooms) == 1
    assert calls.end("alice", call_id).json() == {"status": "no active session"}


def test_a_channel_whose_id_differs_only_in_case_cannot_take_end_or_show_anothers_call(calls: Calls) -> None:
    """The review's case 1 with real processes: Mallory, sole member of messaging:TEAM-x, against the
    live call of messaging:team-x that its members made with the reference client."""
    tag = uuid.uuid4().hex[:8]
    victim, hers = f"messaging:team-{tag}", f"messaging:TEAM-{tag}"
    for cid, members in ((victim, ("alice", "bob")), (hers, ("mallory",))):
        calls.stream.create_channel(cid)
        for user in members:
            calls.stream.add_member(cid, user)
    room = calls.hms.create_room(f"call-{victim}")
    session = calls.hms.open_session(room["id"])
    launch.wait_for(lambda: calls.stream.call_fields(victim).get("callActive") is True, 15, "callsync to show the call")
    created = calls.create("mallory", hers, f"call-{hers}")
    assert created.status_code == 200 and claims(created.json()["token"])["room_id"] != room["id"]
    assert calls.create("mallory", hers, f"call-{victim}").status_code == 409
    assert calls.join("mallory", f"call-{victim}").status_code == 403
    assert calls.end("mallory", f"call-{hers}").json() == {"status": "no active session"}
    joined = calls.join("bob", f"call-{victim}")
    assert joined.status_code == 200 and claims(joined.json()["token"])["room_id"] == room["id"]
    assert calls.create("alice", victim, f"call-{victim}").status_code == 200
    settle(calls)
    assert calls.hms.sessions[session["id"]]["active"]
    assert calls.stream.call_fields(hers) == {}  # never shown the victim's call
    assert calls.stream.call_fields(victim) == {"callActive": True, "callId": f"call-{victim}"}


def test_another_channels_end_call_ends_nothing(calls: Calls) -> None:
    """The review's case 2 with real processes: a member of messaging:evil-x writes the victim's call
    into their own channel, then End call."""
    victim, evil = channel(calls, "victim", "alice"), channel(calls, "evil", "mallory")
    room = calls.hms.create_room(f"call-{victim}")
    session = calls.hms.open_session(room["id"])
    launch.wait_for(lambda: calls.stream.call_fields(victim).get("callActive") is True, 15, "callsync to show the call")
    calls.stream.client_update(evil, {"data.callActive": True, "data.callId": f"call-{victim}"}, user_id="mallory")
    settle(calls)
    calls.stream.client_update(evil, {"data.callActive": False}, ["data.callId"], user_id="mallory")
    store = redis.Redis.from_url(real_url())  # not real_redis(): that one flushes
    launch.wait_for(lambda: store.hget(channel_key(evil), "a") == b"0", 15, "callsync to record the End call")
    settle(calls)
    assert calls.hms.sessions[session["id"]]["active"]
    assert not [p for _, p, _ in calls.hms.calls if p == f"/active-rooms/{room['id']}/end-room"]
    assert calls.stream.call_fields(victim) == {"callActive": True, "callId": f"call-{victim}"}


def test_no_token_appears_in_any_process_log(calls: Calls) -> None:
    cid = channel(calls, "logs", "alice")
    assert calls.create("alice", cid, f"call-{cid}").status_code == 200  # at least one issued here
    text = "\n".join(c.log.read_text(errors="replace") for c in calls.children if c.log)
    assert "calls api create 200" in text and '"user_id": "alice"' in text  # the lines name the user and the call
    assert len(calls.tokens) >= 4
    for secret in (*calls.tokens, STREAM_SECRET, HMS_SECRET, HOOK_SECRET):
        assert secret not in text
    assert "eyJ" not in text and "api_key=" not in text


def rooms_created(calls: Calls) -> float:
    """100ms rooms the web role created, as `/metrics` counts them (only the calls API creates rooms);
    the same in every scrape, whichever gunicorn process answers it."""
    seen = set()
    for _ in range(4):  # a fresh connection each: the kernel spreads them over both processes
        text = httpx.get(f"{calls.web}/metrics", timeout=10).text
        assert sum(line.startswith("# TYPE callsync_upstream_calls") for line in text.splitlines()) == 1
        seen.add(
            sum(
                sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "callsync_upstream_calls_total"
                and sample.labels == {"api": "hms", "method": "POST", "endpoint": "/rooms", "status": "200"}
            )
        )
    assert len(seen) == 1, seen
    return seen.pop()


def test_the_web_roles_platform_calls_are_counted_in_every_processs_scrape(calls: Calls) -> None:
    before = rooms_created(calls)
    cid = channel(calls, "metrics", "alice")
    assert calls.create("alice", cid, f"call-{cid}").status_code == 200
    assert rooms_created(calls) == before + 1  # counted once, and written before the answer
