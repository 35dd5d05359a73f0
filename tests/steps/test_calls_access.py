"""Who the calls API lets in (issue 18, items 5 and 6): users Stream shut out, revoked tokens, and
refusals that cost Stream little. The web app's views and steps, Redis (fakeredis, then real), the
stand-ins on sockets; Stream's user fields and GET /app as GetStream/protocol's OpenAPI names them."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import pytest
import redis

from standins.base import rfc3339
from standins.credentials import STREAM_KEY as KEY
from tests.support.calls_api import CALL, CID, Served, Web, user_token, web_for
from worker.core.calls import MEMBER_QUERIES_PER_CHANNEL, REFUSAL_TTL
from worker.settings import Rate

HOUR = 3600.0


def web_now() -> float:
    return time.time()  # the web app's clock: tokens are checked against it


def app_reads(web: Web) -> int:
    return web.stream_calls("/app")


@pytest.mark.parametrize(
    "fields",
    [{"banned": True}, {"deactivated_at": "2026-01-01T00:00:00Z"}, {"deleted_at": "2026-01-01T00:00:00.123456Z"}],
    ids=["banned", "deactivated", "deleted"],
)
def test_a_member_whose_user_stream_shut_out_gets_403(web: Web, fields: dict[str, Any]) -> None:
    assert web.create("alice").status_code == 200
    web.stream.set_user("bob", **fields)
    web.redis.delete(f"cs:roster:{CID}")  # the roster cached before, read again
    refused = web.join("bob")
    assert refused.status_code == 403 and refused.json == {
        "error": "the user is banned app-wide, deactivated or deleted in Stream"
    }
    assert web.end("bob").status_code == 403 and web.create("bob").status_code == 403
    assert web.join("alice").status_code == 200  # the others are not touched


def test_a_timed_ban_that_has_ended_no_longer_counts(web: Web) -> None:
    web.create("alice")
    web.stream.set_user("bob", banned=True, ban_expires="2020-01-01T00:00:00Z")
    web.redis.delete(f"cs:roster:{CID}")
    assert web.join("bob").status_code == 200


def test_a_user_beyond_the_first_page_is_checked_too(web: Web) -> None:
    for n in range(101):
        web.stream.add_member(CID, f"extra-{n:03d}")
    web.stream.add_member(CID, "zoe")  # QueryMembers asks about her, and answers her user
    web.stream.set_user("zoe", deactivated_at="2026-01-01T00:00:00Z")
    assert web.create("zoe").status_code == 403 and web.stream_calls("/members") == 1


def test_a_token_issued_before_the_users_revoke_time_gets_401(web: Web) -> None:
    web.create("alice")
    web.stream.set_user("bob", revoke_tokens_issued_before=rfc3339(web_now() - HOUR))
    web.redis.delete(f"cs:roster:{CID}")
    old = web.join("bob", token=user_token("bob", iat=int(web_now() - 2 * HOUR)))
    assert old.status_code == 401 and "revoked" in old.json["error"]
    assert web.join("bob", token=user_token("bob")).status_code == 401  # no iat: cannot show it is newer
    assert web.join("bob", token=user_token("bob", iat=int(web_now() - 60))).status_code == 200
    assert web.join("alice").status_code == 200  # her tokens have no iat and nothing of hers is revoked


def test_an_app_wide_revoke_refuses_older_tokens_and_those_without_iat(web: Web) -> None:
    assert web.create("alice").status_code == 200 and app_reads(web) == 1
    web.stream.revoke_all_tokens(rfc3339(web_now() - HOUR))
    web.redis.delete("cs:app:revoke")  # the cached read expired (APP_SETTINGS_TTL)
    assert web.join("bob").status_code == 401  # no iat: "regardless of whether the token has an iat claim"
    assert web.join("bob", token=user_token("bob", iat=int(web_now() - 2 * HOUR))).status_code == 401
    asked = web.stream_calls("/channels")
    fresh = user_token("bob", iat=int(web_now()))
    assert web.join("bob", token=fresh).status_code == 200
    assert web.join("alice", token=user_token("alice", iat=int(web_now()))).status_code == 200
    assert app_reads(web) == 2 and web.stream_calls("/channels") == asked  # GET /app cached; revoked tokens asked nothing


def test_several_members_join_with_one_read_of_each(web: Web) -> None:
    for user in ("carol", "dave", "erin"):
        web.stream.add_member(CID, user)
    assert web.create("alice").status_code == 200
    for user in ("bob", "carol", "dave", "erin", "alice"):
        assert web.join(user).status_code == 200
    assert (web.stream_calls("/channels"), app_reads(web), web.stream_calls("/members")) == (1, 1, 0)


def signed_member_added(web: Web, user: str) -> tuple[bytes, dict[str, str]]:
    web.stream.member_events = True
    web.stream.add_member(CID, user)  # no webhook_url: the signed delivery waits in the outbox
    headers, body = web.stream.outbox.pop()
    return body, headers


def test_a_no_is_kept_and_a_member_added_webhook_clears_it(web: Web) -> None:
    web.create("alice")
    asked = web.stream_calls("/channels")
    assert [web.join("carol").status_code for _ in range(3)] == [403] * 3
    assert web.stream_calls("/channels") == asked + 1  # one QueryChannels for three refusals
    assert 0 < web.redis.ttl(f"cs:no:{CID} carol") <= REFUSAL_TTL
    body, headers = signed_member_added(web, "carol")
    assert json.loads(body)["type"] == "member.added"
    delivered = web.client.post("/webhooks/stream", data=body, headers=headers)
    assert delivered.status_code == 200 and delivered.json == {"status": "accepted"}
    assert not web.redis.exists(f"cs:no:{CID} carol") and web.redis.llen("callsync") == 0  # nothing queued
    assert web.join("carol").status_code == 200


def test_a_member_added_webhook_must_be_signed(web: Web) -> None:
    web.create("alice")
    assert web.join("carol").status_code == 403
    body, headers = signed_member_added(web, "carol")
    forged = web.client.post("/webhooks/stream", data=body, headers={**headers, "X-Signature": "0" * 64})
    assert forged.status_code == 401 and web.redis.exists(f"cs:no:{CID} carol")


def test_query_members_is_bounded_per_channel(web: Web) -> None:
    for n in range(101):
        web.stream.add_member(CID, f"extra-{n:03d}")  # a channel larger than QueryChannels' page
    web.create("extra-000")
    answers = [web.join(f"outsider-{n}").status_code for n in range(MEMBER_QUERIES_PER_CHANNEL + 3)]
    assert answers == [403] * MEMBER_QUERIES_PER_CHANNEL + [503] * 3
    assert web.stream_calls("/members") == MEMBER_QUERIES_PER_CHANNEL
    limited = web.join("outsider-x")
    assert limited.status_code == 503 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert web.join("extra-050").status_code == 200  # a member on the first page costs no QueryMembers
    assert [web.join(f"outsider-{n}").status_code for n in range(3)] == [403] * 3  # their "no" is kept


def post_from(web: Web, address: str, token: str, **headers: str) -> Any:
    return web.client.post(
        f"/calls/{quote(CALL, safe='')}",
        query_string={"api_key": KEY, "user_id": "alice"},
        json={},
        headers={"authorization": token, "stream-auth-type": "jwt", **headers},
        environ_base={"REMOTE_ADDR": address},
    )


def test_unauthenticated_requests_are_limited_per_client_address(redis_client: redis.Redis, served: Served) -> None:
    web = web_for(served, redis_client, unauthenticated_per_address=Rate(3, 60.0))
    web.create("alice")
    forged = user_token("alice", secret="guessed-secret-long-enough-for-hs256-keys")
    assert [post_from(web, "203.0.113.7", forged).status_code for _ in range(4)] == [401, 401, 401, 429]
    limited = post_from(web, "203.0.113.7", user_token("alice"))  # even a good token, until the window ends
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert post_from(web, "198.51.100.1", user_token("alice")).status_code == 200  # another address
    assert post_from(web, "198.51.100.1", forged).status_code == 401


def test_behind_trusted_proxies_the_forwarded_address_counts(redis_client: redis.Redis, served: Served) -> None:
    forged = user_token("alice", secret="guessed-secret-long-enough-for-hs256-keys")
    direct = web_for(served, redis_client, unauthenticated_per_address=Rate(1, 60.0))
    spoofed = {"X-Forwarded-For": "192.0.2.99"}
    assert [post_from(direct, "10.0.0.5", forged, **spoofed).status_code for _ in range(2)] == [401, 429]  # the header is ignored
    proxied = web_for(served, redis_client, unauthenticated_per_address=Rate(1, 60.0), trusted_proxies=1)
    hop = {"X-Forwarded-For": "192.0.2.99, 203.0.113.50"}  # a client's own entry, then what the one proxy saw
    assert [post_from(proxied, "10.0.0.6", forged, **hop).status_code for _ in range(2)] == [401, 429]
    other_client = {"X-Forwarded-For": "203.0.113.51"}
    assert post_from(proxied, "10.0.0.6", user_token("alice"), **other_client).status_code != 429  # same proxy, another client
    assert any(key.endswith(b":203.0.113.50") for key in redis_client.keys("cs:authfail:*"))
