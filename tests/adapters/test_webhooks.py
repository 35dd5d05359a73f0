import base64
import gzip
import json
from dataclasses import replace

import fakeredis
import pytest
import redis

from standins.credentials import HMS_SECRET
from standins.credentials import STREAM_SECRET as SECRET
from tests.samples import SAMPLES_AT, load, samples_clock, stream_headers
from webhooks.app import create_app
from worker.core.channels import WriteIntent, with_intent
from worker.core.events import CallFields, parse_hms_event, parse_time
from worker.core.signing import sign_stream
from worker.settings import Settings
from worker.store.codec import record_from_hash
from worker.store.enqueue import QUEUE
from worker.store.keys import channel_key
from worker.store.peers import read_peers
from worker.store.state import State

SETTINGS = Settings(
    redis_url="redis://unused", stream_api_secret=SECRET, hms_webhook_secrets=("old-hms", HMS_SECRET), max_body_bytes=4096
)


@pytest.fixture
def client(redis_client):
    return create_app(SETTINGS, redis_client, clock=samples_clock).test_client()


def queued(redis_client):
    """The task names and first arguments of the messages on the Celery queue."""
    out = []
    for raw in redis_client.lrange(QUEUE, 0, -1):
        envelope = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(envelope["body"]))
        assert envelope["properties"]["delivery_info"]["routing_key"] == QUEUE
        out.append((envelope["headers"]["task"], args[0]))
    return out


def post_stream(client, payload, **headers):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post("/webhooks/stream", data=body, headers={**stream_headers(body, SECRET), **headers})


def post_hms(client, payload, secret=HMS_SECRET):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-Callsync-Secret": secret} if secret is not None else {}
    return client.post("/webhooks/hms", data=body, headers=headers)


def test_signed_stream_event_is_accepted_and_queued_once(client, redis_client):
    answer = post_stream(client, load("stream_channel_updated"))
    assert answer.status_code == 202 and answer.json == {"status": "accepted"}
    again = post_stream(client, load("stream_channel_updated"))
    assert again.status_code == 200 and again.json == {"status": "duplicate"}
    [(task, event)] = queued(redis_client)
    assert task == "callsync.apply_stream_event"
    assert event["cid"] == "messaging:general" and event["fields"] == {"active": True, "call_id": "call-messaging:general"}


def test_a_body_taken_once_is_a_duplicate_under_any_webhook_id(client, redis_client):
    """X-Webhook-Id is not signed: a captured body replayed under new ids is the same delivery."""
    post_stream(client, load("stream_channel_updated"))
    for webhook_id in ("wh-2", None):
        headers = {"X-Webhook-Id": webhook_id} if webhook_id else {"X-Webhook-Id": ""}
        assert post_stream(client, load("stream_channel_updated"), **headers).json == {"status": "duplicate"}
    other = {**load("stream_channel_updated"), "created_at": "2026-11-20T10:00:00.2Z"}  # another event, the same id
    assert post_stream(client, other, **{"X-Webhook-Id": "wh-1"}).json == {"status": "duplicate"}
    assert post_stream(client, other, **{"X-Webhook-Id": "wh-3"}).json == {"status": "accepted"}
    assert len(queued(redis_client)) == 2


@pytest.mark.parametrize("offset", [-3601.0, 3600.0])
def test_a_stream_event_outside_the_window_is_ignored_and_leaves_no_trace(redis_client, offset):
    client = create_app(SETTINGS, redis_client, clock=lambda: SAMPLES_AT - offset).test_client()
    answer = post_stream(client, load("stream_channel_updated"))
    assert (answer.status_code, answer.json) == (200, {"status": "ignored"})
    assert redis_client.keys("*") == []  # no task, no dedupe key spent


def test_a_stream_key_rotation_verifies_with_any_secret_and_logs_none(redis_client, caplog):
    new, old = "new-stream-secret", "old-stream-secret"
    rotating = Settings(redis_url="redis://unused", stream_api_secret=new, stream_rotation_secrets=(old,))
    client = create_app(rotating, redis_client, clock=samples_clock).test_client()
    with caplog.at_level("DEBUG"):
        for n, secret in enumerate((new, old, SECRET)):
            body = json.dumps({**load("stream_channel_updated"), "cid": f"messaging:c{n}"}).encode()
            answer = client.post("/webhooks/stream", data=body, headers=stream_headers(body, secret, webhook_id=f"wh-{n}"))
            assert answer.status_code == (202 if secret != SECRET else 401), secret
    assert [event["cid"] for _, event in queued(redis_client)] == ["messaging:c1", "messaging:c0"]  # LPUSH: newest first
    assert new not in caplog.text and old not in caplog.text


def test_gzip_body_is_verified_after_inflating(client, redis_client):
    body = json.dumps(load("stream_channel_updated")).encode()
    answer = client.post(
        "/webhooks/stream", data=gzip.compress(body), headers={**stream_headers(body, SECRET), "Content-Encoding": "gzip"}
    )
    assert answer.status_code == 202
    assert len(queued(redis_client)) == 1


def test_hms_event_is_accepted_with_any_rotated_secret_and_deduped_by_id(client, redis_client):
    assert post_hms(client, load("hms_session_open")).status_code == 202
    assert post_hms(client, load("hms_session_open"), secret="old-hms").json == {"status": "duplicate"}
    [(task, event)] = queued(redis_client)
    assert task == "callsync.apply_hms_event" and event["session_id"] == "65f0c1d2e3a4b5c6d7e8f9aa"


def test_a_peer_event_of_the_session_recorded_open_is_settled_without_a_task(client, redis_client):
    """docs/design.md, "The path of a webhook": its peer recorded, nothing queued, answered 202."""
    opened = load("hms_session_open")
    state = State(redis_client)
    _, _, owed = state.record_hms_event_and_channels(parse_hms_event(opened), SAMPLES_AT)  # as the open's task records it
    assert owed is not None
    join_first = {**opened, "id": "join-0", "type": "peer.join.success", "data": {**opened["data"], "peer_id": "peer-0"}}
    assert post_hms(client, join_first).status_code == 202 and len(queued(redis_client)) == 1  # its reconcile still owed
    redis_client.delete(QUEUE)
    state.settle_owed(opened["data"]["room_name"], owed)  # and reconciles after it
    data = {**opened["data"], "peer_id": "peer-1", "user_id": "ann", "joined_at": "2026-11-20T10:00:00.3Z"}
    join = {**opened, "id": "join-1", "type": "peer.join.success", "data": data}
    assert post_hms(client, join).json == {"status": "accepted"}
    assert queued(redis_client) == [] and [p.user_id for p in read_peers(redis_client, data["session_id"]).present()] == ["ann"]
    assert post_hms(client, join).json == {"status": "duplicate"}
    other = {**join, "id": "join-2", "data": {**data, "session_started_at": "2026-11-20T10:00:00.2Z"}}  # another start
    assert post_hms(client, other).status_code == 202 and [t for t, _ in queued(redis_client)] == ["callsync.apply_hms_event"]


def test_callsyncs_own_echo_once_its_write_is_booked_is_settled_without_a_task(client, redis_client):
    """docs/design.md, "The path of a webhook": recorded as the worker records it (the record's
    version moved), nothing queued, answered 202; while the write is in flight it is queued."""
    cid, shown = "messaging:general", CallFields(True, "call-messaging:general")
    echo = {**load("stream_channel_updated"), "request_info": {"type": "server"}}  # a server-side request's
    state = State(redis_client)
    state.bind(cid, "call-messaging:general", SAMPLES_AT - 1)  # the write, booked (core.channels.settle_write)
    state.record_channel(cid, shown, SAMPLES_AT - 1, claimed_since=SAMPLES_AT - 30, pending="clear")
    assert post_stream(client, echo).json == {"status": "accepted"} and queued(redis_client) == []
    record = record_from_hash(cid, redis_client.hgetall(channel_key(cid)))
    assert record is not None and record.version == parse_time(echo["created_at"]) and not record.pending
    assert post_stream(client, echo).json == {"status": "duplicate"}
    member = {**echo, "created_at": "2026-11-20T10:00:00.2Z", "request_info": {"type": "client"}}
    assert post_stream(client, member, **{"X-Webhook-Id": "wh-2"}).status_code == 202  # a member's claim
    assert len(queued(redis_client)) == 1
    redis_client.delete(QUEUE)
    loaded = state.load(cid)
    assert loaded is not None and loaded.record is not None
    in_flight = with_intent(loaded.record, WriteIntent(shown, SAMPLES_AT - 0.3))
    assert in_flight is not None and state.record_write(cid, loaded.raw, in_flight, "no-lock-held")  # written over what it read
    early = {**echo, "created_at": "2026-11-20T10:00:00.3Z"}  # the echo of a write still in flight: its writer books it
    assert post_stream(client, early, **{"X-Webhook-Id": "wh-3"}).status_code == 202 and len(queued(redis_client)) == 1


def test_unknown_event_types_are_ignored_and_leave_nothing(client, redis_client):
    assert post_stream(client, {"type": "message.new", "cid": "messaging:general"}).json == {"status": "ignored"}
    assert post_hms(client, {"id": "x", "type": "recording.success", "data": {}}).json == {"status": "ignored"}
    assert redis_client.keys("*") == []


# --- every rejection of docs/http.md, each leaving no trace ---------------------------------

REJECTIONS = {
    "stream: missing signature": lambda c: c.post("/webhooks/stream", data=b'{"type":"channel.updated"}'),
    "stream: forged signature": lambda c: c.post(
        "/webhooks/stream", data=b'{"type":"x"}', headers={"X-Signature": sign_stream(b'{"type":"x"}', "wrong")}
    ),
    "stream: not JSON": lambda c: post_stream(c, b"not json"),
    "stream: JSON not an object": lambda c: post_stream(c, b"[1, 2]"),
    "stream: no type": lambda c: post_stream(c, {"cid": "messaging:general"}),
    "stream: channel event without a channel": lambda c: post_stream(c, {"type": "channel.updated"}),
    "stream: oversize": lambda c: post_stream(c, b" " * 5000),
    "stream: gzip bomb": lambda c: c.post(
        "/webhooks/stream", data=gzip.compress(b"{" + b" " * 10_000_000), headers={"X-Signature": "00"}
    ),
    "stream: broken gzip, forged": lambda c: c.post(
        "/webhooks/stream", data=b"\x1f\x8b\x08garbage", headers={"X-Signature": "00"}
    ),
    "stream: broken gzip, signed": lambda c: post_stream(c, b"\x1f\x8b\x08garbage"),
    "hms: missing secret": lambda c: post_hms(c, load("hms_session_open"), secret=None),
    "hms: wrong secret": lambda c: post_hms(c, load("hms_session_open"), secret="guess"),
    "hms: not JSON": lambda c: post_hms(c, b"{"),
    "hms: no id": lambda c: post_hms(c, {"type": "session.open.success", "data": {}}),
    "hms: no data": lambda c: post_hms(c, {"id": "1", "type": "session.open.success"}),
    "hms: session event without session_id": lambda c: post_hms(
        c, {"id": "1", "type": "session.open.success", "data": {"room_id": "r"}}
    ),
    "hms: oversize": lambda c: post_hms(c, b"{" + b" " * 5000 + b"}"),
}
EXPECTED = {
    "stream: missing signature": 401,
    "stream: forged signature": 401,
    "stream: not JSON": 400,
    "stream: JSON not an object": 400,
    "stream: no type": 400,
    "stream: channel event without a channel": 400,
    "stream: oversize": 413,
    "stream: gzip bomb": 413,
    "stream: broken gzip, forged": 401,
    "stream: broken gzip, signed": 400,
    "hms: missing secret": 401,
    "hms: wrong secret": 401,
    "hms: not JSON": 400,
    "hms: no id": 400,
    "hms: no data": 400,
    "hms: session event without session_id": 400,
    "hms: oversize": 413,
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_rejections_answer_json_and_leave_no_trace(case, client, redis_client):
    answer = REJECTIONS[case](client)
    assert answer.status_code == EXPECTED[case], answer.json
    assert set(answer.json) == {"error"}
    assert SECRET not in answer.text and HMS_SECRET not in answer.text
    assert redis_client.keys("*") == []


def test_order_of_checks_size_before_auth_before_parse(client):
    assert client.post("/webhooks/hms", data=b"x" * 5000).status_code == 413  # oversize and unauthenticated
    assert client.post("/webhooks/hms", data=b"not json").status_code == 401  # bad JSON and unauthenticated


def test_redis_down_answers_503_and_spends_no_dedupe_key():
    server = fakeredis.FakeServer()
    store = fakeredis.FakeRedis(server=server)
    client = create_app(SETTINGS, store, clock=samples_clock).test_client()
    server.connected = False
    answer = post_stream(client, load("stream_channel_updated"))
    assert answer.status_code == 503 and "error" in answer.json
    server.connected = True
    assert post_stream(client, load("stream_channel_updated")).json == {"status": "accepted"}  # the retry is not a "duplicate"


def test_health_and_readiness():
    server = fakeredis.FakeServer()
    client = create_app(SETTINGS, fakeredis.FakeRedis(server=server)).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json["status"] == "ready"
    server.connected = False
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json["redis"].startswith("unavailable")
    assert client.get("/healthz").status_code == 200


def test_unreachable_redis_is_503_not_500():
    client = create_app(SETTINGS, redis.Redis(port=1, socket_connect_timeout=0.2), clock=samples_clock).test_client()
    assert post_stream(client, load("stream_channel_updated")).status_code == 503


def test_not_ready_says_why_without_echoing_the_redis_url():
    url = "redis://:a-redis-password@127.0.0.1:1/0"
    client = create_app(SETTINGS, redis.Redis.from_url(url, socket_connect_timeout=0.2)).test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json["status"] == "not ready"
    assert answer.json["redis"] == "unavailable: ConnectionError" and answer.json["broker"].startswith("unavailable")
    assert "error" in answer.json and "a-redis-password" not in answer.get_data(as_text=True)


# --- the queue's ceiling (CALLSYNC_MAX_QUEUE_DEPTH; issue 12, item 8) -------------------------
def test_a_full_queue_answers_503_with_retry_after_and_leaves_no_trace(redis_client):
    client = create_app(replace(SETTINGS, max_queue_depth=2), redis_client, clock=samples_clock).test_client()
    first = load("stream_channel_updated")
    # Each delivery its own body: Stream deliveries are deduplicated on the body's digest too.
    second, third = ({**first, "cid": f"messaging:other-{n}"} for n in (2, 3))
    assert post_stream(client, first).status_code == 202
    assert post_stream(client, second, **{"X-Webhook-Id": "wh-2"}).status_code == 202
    before = {key: redis_client.dump(key) for key in redis_client.keys("*")}
    full = post_stream(client, third, **{"X-Webhook-Id": "wh-3"})
    hms = post_hms(client, {"id": "d-1", "type": "session.open.success", "data": {"room_id": "r", "session_id": "s"}})
    for answer in (full, hms):
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "10"
        assert answer.json == {"error": "too many deliveries waiting; retry later"}
    assert {key: redis_client.dump(key) for key in redis_client.keys("*")} == before  # no key spent, nothing queued
    assert post_stream(client, first).json == {"status": "duplicate"}  # a duplicate is still one, full or not
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "10"
    assert ready.json["queue"] == "full: 2 messages waiting, CALLSYNC_MAX_QUEUE_DEPTH is 2"
    assert ready.json["status"] == "not ready" and ready.json["redis"] == "ok"
    assert 'reason="queue_full"' in client.get("/metrics").get_data(as_text=True)

    redis_client.rpop(QUEUE)  # a worker takes one
    assert post_stream(client, third, **{"X-Webhook-Id": "wh-3"}).json == {"status": "accepted"}  # the retry is new
    redis_client.rpop(QUEUE)
    assert client.get("/readyz").json == {"status": "ready", "redis": "ok", "broker": "ok", "queue": "ok"}
