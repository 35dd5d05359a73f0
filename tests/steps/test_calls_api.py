"""The calls API in one process: the web app's views and steps, Redis (fakeredis, then real),
and the stand-ins of Stream and 100ms served on sockets.

Requests are sent as stream-chat 8.61 sends them (GetStream/stream-chat-js v8.61.0,
src/client.ts `_enrichAxiosOptions`, `getCallToken`; src/channel.ts `createCall`): the user's
token bare in `authorization`, `stream-auth-type: jwt`, and `user_id`, `api_key` in the query.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import quote

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from tests.support.calls_api import CALL, CID, Served, Web, claims_of, queued, user_token, web_for
from worker.core.calls import REFUSAL_TTL
from worker.ops import counters
from worker.settings import Rate
from worker.store.state import State


def test_a_member_creates_the_call_and_another_joins_the_same_room(web: Web) -> None:
    created = web.create("alice")
    assert created.status_code == 200, created.json
    [room] = web.hms.rooms.values()
    assert room["name"] == CALL
    assert created.json["call"] == {"id": CALL, "provider": "hms", "hms": {"room_id": room["id"], "room_name": CALL}}
    assert created.headers["Cache-Control"] == "no-store"
    alice = claims_of(created.json["token"])
    assert (alice["room_id"], alice["user_id"], alice["role"], alice["access_key"]) == (room["id"], "alice", "guest", HMS_KEY)
    assert alice["exp"] - alice["iat"] == 3600 and alice["type"] == "app" and alice["version"] == 2
    joined = web.join("bob")
    assert joined.status_code == 200 and joined.json["call"] == created.json["call"]
    bob = claims_of(joined.json["token"])
    assert bob["user_id"] == "bob" and bob["room_id"] == room["id"] and bob["jti"] != alice["jti"]
    assert State(web.redis).owner_of_call(CALL) == CID


def test_creating_again_reuses_the_room_without_asking_anyone(web: Web) -> None:
    first = web.create("alice").json
    stream_before, hms_before = len(web.stream.calls), len(web.hms.calls)
    again = web.create("bob")
    assert again.status_code == 200 and again.json["call"] == first["call"] and len(web.hms.rooms) == 1
    assert (len(web.stream.calls), len(web.hms.calls)) == (stream_before, hms_before)  # membership and room cached
    assert web.stream_calls("/channels") == 1  # one QueryChannels answered both members


def test_any_call_id_is_bound_to_the_channel_that_created_it(web: Web) -> None:
    assert web.create("alice", call_id="Standup.1").status_code == 200
    assert State(web.redis).owner_of_call("Standup.1") == CID
    assert State(web.redis).owner_of_call("standup.1") is None  # call ids are exact
    asked = len(web.stream.calls) + len(web.hms.calls)
    assert web.join("bob", call_id="Standup.1").status_code == 200
    assert len(web.stream.calls) + len(web.hms.calls) == asked  # membership and room cached for any id
    assert web.join("bob", call_id="standup.1").status_code == 404  # another call, nobody's yet
    assert web.create("mallory", call_id="Standup.1", cid="messaging:random").status_code == 409
    assert web.create("alice", call_id="call-messaging:random").status_code == 409


def test_who_may_not(web: Web) -> None:
    web.create("alice")
    outsider = web.join("mallory")
    assert outsider.status_code == 403 and outsider.json == {"error": "not a member of channel messaging:general"}
    assert web.create("mallory").status_code == 403
    forged = web.join("alice", token=user_token("alice", secret="forged-secret-long-enough-for-hs256-keys"))
    assert forged.status_code == 401 and "signature" in forged.json["error"]
    assert web.join("alice", token=user_token("alice", exp=1)).status_code == 401
    assert web.post(f"/calls/{quote(CALL, safe='')}", user=None).status_code == 401
    assert web.join("alice", api_key="another-app").status_code == 401
    assert web.join("alice", token=user_token("mallory")).status_code == 401  # the query's user is not the token's


def test_unknown_calls_and_channels_are_404(web: Web) -> None:
    assert web.join("alice", call_id="never-created").status_code == 404
    assert web.join("alice", call_id="call-messaging:general").json == {"error": "no such call"}  # no room yet
    assert web.post("/calls/bad%20id", "alice").status_code == 404
    assert web.create("alice", call_id="call-messaging:gone", cid="messaging:gone").json == {"error": "no such channel"}


def test_bad_bodies_are_400(web: Web) -> None:
    for body in ({"id": "bad id"}, {"id": CALL, "type": "screen"}, [1]):
        answer = web.post("/channels/messaging/general/call", "alice", body)
        assert answer.status_code == 400 and set(answer.json) == {"error"}


def test_a_burst_of_joins_asks_stream_once(web: Web) -> None:
    web.create("alice")
    calls = web.stream_calls("/channels")
    for user in ("alice", "bob", "bob", "alice"):
        assert web.join(user).status_code == 200
    assert web.stream_calls("/channels") == calls


def test_a_channel_larger_than_a_page_asks_about_the_user(web: Web) -> None:
    for n in range(101):
        web.stream.add_member(CID, f"extra-{n:03d}")
    web.stream.add_member(CID, "zoe")  # beyond the first 100 members QueryChannels lists
    assert web.create("zoe").status_code == 200
    assert web.stream_calls("/members") == 1
    assert web.join("zoe").status_code == 200 and web.stream_calls("/members") == 1  # cached
    assert web.join("nobody").status_code == 403


def test_a_channel_deleted_between_the_two_queries_is_404_not_a_503(web: Web) -> None:
    # Stream answers a channel that does not exist with 404, code 16 ("Does Not Exist", Stream's
    # API error table, getstream.io/chat/docs/api_errors_response): the member is told so, not
    # to come back later.
    for n in range(101):
        web.stream.add_member(CID, f"extra-{n:03d}")
    web.stream.add_member(CID, "zoe")  # beyond the first page: QueryMembers asks about her

    def deleted_meanwhile(_arrived: float, call: Any) -> None:
        if call[1] == "/members":
            web.stream.channels.pop(CID, None)

    web.stream.watchers.append(deleted_meanwhile)
    answer = web.create("zoe")
    assert answer.status_code == 404 and answer.get_json()["error"] == "no such channel", answer.get_json()
    assert "Retry-After" not in answer.headers


def test_a_template_is_given_to_new_rooms(redis_client: redis.Redis, served: Served) -> None:
    web = web_for(served, redis_client, hms_template_id="tpl123", hms_default_role="host", call_token_ttl_seconds=600)
    token = web.create("alice").json["token"]
    [room] = web.hms.rooms.values()
    assert room["template_id"] == "tpl123"
    claims = claims_of(token)
    assert claims["role"] == "host" and claims["exp"] - claims["iat"] == 600


def test_a_user_over_the_rate_is_told_when_to_come_back(redis_client: redis.Redis, served: Served) -> None:
    web = web_for(served, redis_client, calls_per_user=Rate(2, 60.0))
    if time.time() % 60 > 57:  # the per-user count is a fixed one-minute window: start all three in one
        time.sleep(60 - time.time() % 60)
    assert [web.join("alice").status_code for _ in range(2)] == [404, 404]
    limited = web.join("alice")
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert web.join("bob").status_code == 404  # another user has their own count


@pytest.mark.parametrize(("status", "headers", "wait"), [(503, {}, "5"), (429, {"Retry-After": "7"}, "7")])
def test_stream_down_is_a_503_with_retry_after(web: Web, status: int, headers: dict[str, str], wait: str) -> None:
    web.stream.fail_next(1, status, headers)
    down = web.create("alice")
    assert down.status_code == 503 and down.headers["Retry-After"] == wait and "Stream" in down.json["error"]
    assert web.create("alice").status_code == 200  # nothing half-done: the next try works


def test_100ms_down_is_a_503(web: Web) -> None:
    web.hms.fail_next(1, 502)
    down = web.create("alice")
    assert down.status_code == 503 and "100ms" in down.json["error"] and down.headers["Retry-After"]


def test_redis_down_is_a_503(served: Served) -> None:
    gone = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    web = web_for(served, gone)
    answer = web.create("alice")
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"


def test_end_by_a_member_marks_the_session_ending_and_schedules_the_end(web: Web) -> None:
    room_id = web.create("alice").json["call"]["hms"]["room_id"]
    assert web.end("bob").json == {"status": "no active session"}
    session = web.hms.open_session(room_id)  # 100ms runs it; its webhook never reached callsync
    assert web.end("mallory").status_code == 403
    assert web.end("bob").json == {"status": "ending"}  # adopted from 100ms, then ended
    recorded = State(web.redis).call(CALL).session
    assert recorded is not None and (recorded.session_id, recorded.status) == (session["id"], "ending")
    ends = [args for task, args in queued(web.redis) if task == "callsync.end_session"]
    assert len(ends) == 1 and ends[0][:2] == [CALL, session["id"]] and "bob" in ends[0][2]
    assert web.end("alice").json == {"status": "ending"}  # already under way: not scheduled twice
    assert len([t for t, _ in queued(web.redis) if t == "callsync.end_session"]) == 1


def test_without_its_settings_the_calls_api_answers_503_and_webhooks_still_work(
    redis_client: redis.Redis, served: Served
) -> None:
    for overrides, named in (({"hms_app_secret": ""}, "HMS_APP_SECRET"), ({"dry_run": True}, "dry run")):
        web = web_for(served, redis_client, **overrides)
        answer = web.create("alice")
        assert answer.status_code == 503 and named in answer.json["error"]
        assert web.client.get("/healthz").status_code == 200


def test_cors_answers_the_configured_origins_only(redis_client: redis.Redis, served: Served) -> None:
    web = web_for(served, redis_client, cors_origins=("https://app.example.com",))
    asked = "authorization,content-type,stream-auth-type,x-stream-client,x-client-request-id"
    for path in ("/channels/messaging/general/call", f"/calls/{quote(CALL, safe='')}", f"/calls/{quote(CALL, safe='')}/end"):
        preflight = web.client.options(
            path,
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert set(preflight.headers["Access-Control-Allow-Headers"].split(", ")) == set(asked.split(","))
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"] and "Origin" in preflight.headers["Vary"]
        other = web.client.options(path, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert not any(h.startswith("Access-Control-") for h, _ in other.headers.items())
    answer = web.client.post(
        "/channels/messaging/general/call",
        query_string={"api_key": KEY, "user_id": "alice"},
        json={"id": CALL, "type": "video"},
        headers={"Origin": "https://app.example.com", "authorization": user_token("alice"), "stream-auth-type": "jwt"},
    )
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    refused = web.client.post(f"/calls/{quote(CALL, safe='')}", headers={"Origin": "https://app.example.com"})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert (
        "Access-Control-Allow-Origin"
        not in web.client.post("/webhooks/hms", headers={"Origin": "https://app.example.com"}).headers
    )
    plain = web_for(served, redis_client)  # no origins configured: no CORS at all
    assert (
        "Access-Control-Allow-Origin"
        not in plain.client.options(
            "/channels/messaging/general/call",
            headers={"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST"},
        ).headers
    )


def test_no_token_in_answers_to_refusals_or_in_log_lines(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="callsync.calls")
    forged = user_token("alice", secret="forged-secret-long-enough-for-hs256-keys")
    refused = web.join("alice", token=forged)
    assert forged not in refused.get_data(as_text=True)
    issued = web.create("alice").json["token"]
    text = "\n".join(f"{r.getMessage()} {getattr(r, 'cs', '')}" for r in caplog.records)
    assert "'user_id': 'alice'" in text and CALL in text
    for token in (forged, issued, user_token("alice"), SECRET, HMS_SECRET):
        assert token not in text
    assert "eyJ" not in text


def test_rotated_secrets_verify_user_tokens(web: Web) -> None:
    old = user_token("alice", secret="old-stream-secret-long-enough-for-hs256")
    assert web.create("alice", token=old).status_code == 200


def test_a_cold_burst_of_joins_asks_stream_once(web: Web) -> None:
    web.create("alice")
    web.redis.delete(f"cs:roster:{CID}")  # the cached roster expired
    asked = web.stream_calls("/channels")
    web.stream.timeout_next(1, 0.3)  # Stream takes its time: the others arrive meanwhile
    answers: list[int] = []

    def join(user: str) -> None:
        answers.append(web.join(user).status_code)

    threads = [threading.Thread(target=join, args=(user,)) for user in ("alice", "bob") * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [200] * 6
    assert web.stream_calls("/channels") == asked + 1


def test_a_no_is_kept_a_few_seconds_and_a_member_added_gets_in_once_it_expires(web: Web) -> None:
    web.create("alice")  # the roster is cached without carol
    asked = web.stream_calls("/channels")
    assert web.join("carol").status_code == 403
    assert web.join("carol").status_code == 403 and web.stream_calls("/channels") == asked + 1  # the "no" is kept
    assert 0 < web.redis.ttl(f"cs:no:{CID} carol") <= REFUSAL_TTL
    web.stream.add_member(CID, "carol")  # no member.added webhook: carol waits for the "no" to expire
    web.redis.delete(f"cs:no:{CID} carol")  # REFUSAL_TTL seconds later
    assert web.join("carol").status_code == 200
    assert web.stream_calls("/channels") == asked + 2
    assert web.join("carol").status_code == 200 and web.stream_calls("/channels") == asked + 2  # a "yes" is cached


# --- the calls API's own upstream calls at /metrics -------------------------------------------

Call = tuple[str, str, str, str]  # api, method, endpoint, status


def upstream_calls(web: Web) -> dict[Call, float]:
    """`callsync_upstream_calls_total` as the web's `/metrics` shows it, by its labels."""
    text = web.client.get("/metrics").get_data(as_text=True)
    # One family, the workers' and the web's calls together: two of one name make a scrape invalid.
    assert text.count("# TYPE callsync_upstream_calls_total counter") + text.count("# TYPE callsync_upstream_calls counter") == 1
    found: dict[Call, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "callsync_upstream_calls_total":
                labels = sample.labels
                assert set(labels) == {"api", "method", "endpoint", "status"}
                found[(labels["api"], labels["method"], labels["endpoint"], labels["status"])] = sample.value
    return found


def test_the_calls_apis_upstream_calls_are_counted_with_their_status(web: Web) -> None:
    assert upstream_calls(web) == {}
    web.stream.fail_next(1, 503)
    assert web.create("alice").status_code == 503  # GET /app (the app's revoke time) answered 503
    web.hms.fail_next(1, 429, {"Retry-After": "2"})
    assert web.create("alice").status_code == 503  # GET /app and QueryChannels 200 (cached), room lookup 429
    assert web.create("alice").status_code == 200  # room lookup 200 (none), room created
    assert web.join("bob").status_code == 200  # membership and room cached: nothing asked
    assert upstream_calls(web) == {
        ("stream", "GET", "/app", "503"): 1,
        ("stream", "POST", "/channels", "200"): 1,
        ("stream", "GET", "/app", "200"): 1,  # the app's revoke time, read once and cached
        ("hms", "GET", "/rooms", "429"): 1,
        ("hms", "GET", "/rooms", "200"): 1,
        ("hms", "POST", "/rooms", "200"): 1,
    }
    assert upstream_calls(web)[("hms", "POST", "/rooms", "200")] == 1  # a scrape counts nothing again


def test_query_members_and_the_live_session_lookup_are_counted(web: Web) -> None:
    for n in range(101):
        web.stream.add_member(CID, f"extra-{n:03d}")
    web.stream.add_member(CID, "zoe")  # beyond the first page: QueryMembers asks about her
    room_id = web.create("zoe").json["call"]["hms"]["room_id"]
    web.hms.open_session(room_id)
    web.hms.fail_next(1, 500)
    assert web.end("zoe").status_code == 503  # the live session lookup failed
    calls = upstream_calls(web)
    assert calls[("stream", "GET", "/members", "200")] == 1
    assert calls[("hms", "GET", "/sessions", "500")] == 1
    assert all(not endpoint.count("zoe") and "api_key" not in endpoint for _, _, endpoint, _ in calls)


def test_the_webs_calls_and_the_workers_add_up_in_one_series(web: Web) -> None:
    worker = counters.Tally()  # a worker's counts, flushed to the hash the collector reads
    worker.inc(counters.UPSTREAM_CALLS, {"api": "stream", "method": "POST", "endpoint": "/channels", "status": "200"}, 2)
    worker.flush(web.redis)
    assert web.create("alice").status_code == 200
    assert upstream_calls(web)[("stream", "POST", "/channels", "200")] == 3


def test_counts_are_written_even_when_a_step_fails_unexpectedly(served: Served, redis_client: redis.Redis) -> None:
    # A bug after the platforms answered: a token lifetime of no number fails the token's
    # signing (TypeError), once the room is made.
    web = web_for(served, redis_client, call_token_ttl_seconds=None)
    web.client.application.config["PROPAGATE_EXCEPTIONS"] = False
    assert web.create("alice").status_code == 500
    assert upstream_calls(web)[("hms", "POST", "/rooms", "200")] == 1
