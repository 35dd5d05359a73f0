"""Tests for the local Stream Chat and 100ms stand-ins (the `standins` package)."""

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
import warnings
from collections.abc import Iterator

import httpx
import jwt
import pytest
from flask import Flask, request

from standins import FakeHms, FakeStream, serve
from standins.credentials import HMS_KEY, HMS_SECRET, STREAM_KEY, STREAM_SECRET
from tests.support.roles import wait_for
from worker.core.events import parse_time

WRONG = "wrong-secret-also-long-enough-for-hs256"
CID = "messaging:general"
RFC3339_US = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
RFC3339_NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$")  # Go's RFC3339Nano


def stream_token(secret: str = STREAM_SECRET, **claims: object) -> str:
    return jwt.encode({"server": True, **claims}, secret, algorithm="HS256")


def hms_token(secret: str = HMS_SECRET, **over: object) -> str:
    now = int(time.time())
    claims = {
        "access_key": HMS_KEY,
        "type": "management",
        "version": 2,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
        "jti": str(uuid.uuid4()),
    }
    claims.update(over)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


def stream_client(fake: FakeStream, base_url: str = "http://stream.test", **kw: object) -> httpx.Client:
    return httpx.Client(
        transport=httpx.WSGITransport(app=fake.app),
        base_url=base_url,
        params={"api_key": STREAM_KEY},
        headers={"Authorization": stream_token(), "stream-auth-type": "jwt"},
        **kw,
    )


def hms_client(fake: FakeHms) -> httpx.Client:
    return httpx.Client(
        transport=httpx.WSGITransport(app=fake.app),
        base_url="http://hms.test/",
        headers={"Authorization": f"Bearer {hms_token()}"},
    )


@pytest.fixture
def stream() -> FakeStream:
    fake = FakeStream(STREAM_KEY, STREAM_SECRET)
    fake.create_channel(CID, name="General", data={"callActive": True, "callId": "call-1"})
    return fake


@pytest.fixture
def sc(stream: FakeStream) -> Iterator[httpx.Client]:
    with stream_client(stream) as client:
        yield client


@pytest.fixture
def hms() -> FakeHms:
    return FakeHms(HMS_KEY, HMS_SECRET, webhook_secret="hook-secret")


@pytest.fixture
def hc(hms: FakeHms) -> Iterator[httpx.Client]:
    with hms_client(hms) as client:
        yield client


# --- Stream Chat ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({}, {"Authorization": stream_token(), "stream-auth-type": "jwt"}),
        ({"api_key": "other"}, {"Authorization": stream_token(), "stream-auth-type": "jwt"}),
        ({"api_key": STREAM_KEY}, {"Authorization": stream_token()}),
        ({"api_key": STREAM_KEY}, {"stream-auth-type": "jwt"}),
        ({"api_key": STREAM_KEY}, {"Authorization": f"Bearer {stream_token()}", "stream-auth-type": "jwt"}),
        ({"api_key": STREAM_KEY}, {"Authorization": stream_token(WRONG), "stream-auth-type": "jwt"}),
        ({"api_key": STREAM_KEY}, {"Authorization": stream_token(server=False), "stream-auth-type": "jwt"}),
        ({"api_key": STREAM_KEY}, {"Authorization": stream_token(server="true"), "stream-auth-type": "jwt"}),
    ],
    ids=["no-api-key", "wrong-api-key", "no-auth-type", "no-token", "bearer", "wrong-secret", "not-server", "server-string"],
)
def test_stream_rejects_unauthenticated(stream: FakeStream, params, headers) -> None:
    with httpx.Client(transport=httpx.WSGITransport(app=stream.app), base_url="http://stream.test") as client:
        r = client.patch("/channels/messaging/general", params=params, headers=headers, json={"set": {"data.x": 1}})
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == 5 and body["StatusCode"] == 401 and body["message"]
    assert {"duration", "more_info"} <= body.keys()
    assert stream.calls == [] and stream.outbox == []
    assert stream.channels[CID]["data"] == {"callActive": True, "callId": "call-1"}


def test_stream_partial_update_dotted_paths(stream: FakeStream, sc: httpx.Client) -> None:
    before = stream.channels[CID]["updated_at"]
    r = sc.patch(
        "/channels/messaging/general",
        json={"set": {"data.callActive": False, "data.extra.deep": 1}, "unset": ["data.callId", "data.missing.key"]},
    )
    assert r.status_code == 200
    channel = r.json()["channel"]
    assert channel["data"] == {"callActive": False, "extra": {"deep": 1}}
    assert channel["name"] == "General" and channel["cid"] == CID and channel["created_at"] == stream.channels[CID]["created_at"]
    assert channel["updated_at"] == before == channel["created_at"]  # as the live API: no clock
    assert r.json()["members"] == [] and "duration" in r.json()
    assert stream.channels[CID] == channel
    assert stream.call_fields(CID) == {"callActive": False, "extra": {"deep": 1}}
    assert len(stream.patch_times) == 1
    assert stream.calls == [("PATCH", "/channels/messaging/general", r.request.content and json.loads(r.request.content))]


def test_stream_set_of_whole_field_replaces_it(stream: FakeStream, sc: httpx.Client) -> None:
    sc.patch("/channels/messaging/general", json={"set": {"data": {"callActive": False}}}).raise_for_status()
    assert stream.channels[CID]["data"] == {"callActive": False}
    assert stream.channels[CID]["name"] == "General"


def test_stream_events_carry_their_own_strictly_increasing_created_at(stream: FakeStream, sc: httpx.Client) -> None:
    for i in range(20):
        sc.patch("/channels/messaging/general", json={"set": {"n": i}}).raise_for_status()
    events = [json.loads(body) for _, body in stream.outbox]
    stamps = [parse_time(event["created_at"]) for event in events]
    assert stamps == sorted(set(stamps)) and all(RFC3339_NANO.match(event["created_at"]) for event in events)
    assert {event["channel"]["updated_at"] for event in events} == {stream.channels[CID]["created_at"]}


def test_stream_can_still_stamp_updated_at_on_every_update() -> None:
    bumping = FakeStream(STREAM_KEY, STREAM_SECRET, bump_updated_at=True)
    bumping.create_channel(CID)
    with stream_client(bumping) as client:
        answers = [client.patch("/channels/messaging/general", json={"set": {"n": i}}).json() for i in range(20)]
    stamps = [answer["channel"]["updated_at"] for answer in answers]
    assert stamps == sorted(set(stamps)) and all(RFC3339_US.match(stamp) for stamp in stamps)


@pytest.mark.parametrize("body", [{}, {"set": []}, {"unset": "data.callId"}, {"unset": [1]}])
def test_stream_partial_update_bad_body(stream: FakeStream, sc: httpx.Client, body) -> None:
    r = sc.patch("/channels/messaging/general", json=body)
    assert r.status_code == 400 and r.json()["code"] == 4
    assert stream.outbox == [] and stream.patch_times == []


def test_stream_partial_update_unknown_channel(stream: FakeStream, sc: httpx.Client) -> None:
    r = sc.patch("/channels/messaging/nope", json={"set": {"data.callActive": False}})
    assert r.status_code == 404 and r.json()["code"] == 16 and r.json()["StatusCode"] == 404
    assert stream.outbox == [] and len(stream.calls) == 1


def test_stream_patch_queues_signed_channel_updated(stream: FakeStream, sc: httpx.Client) -> None:
    channel = sc.patch("/channels/messaging/general", json={"set": {"data.callActive": False}}).json()["channel"]
    [(headers, body)] = stream.outbox
    assert headers["X-Signature"] == hmac.new(STREAM_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert uuid.UUID(headers["X-Webhook-Id"]).version == 4
    assert headers["X-Webhook-Attempt"] == "1" and headers["X-Api-Key"] == STREAM_KEY
    event = json.loads(body)
    assert event["type"] == "channel.updated" and event["cid"] == CID
    assert (event["channel_type"], event["channel_id"]) == ("messaging", "general")
    assert event["channel"] == channel
    assert event["request_info"] == {"type": "server"} and "user" not in event
    assert RFC3339_NANO.match(event["created_at"])
    assert parse_time(event["created_at"]) >= parse_time(channel["created_at"])


def test_stream_client_update(stream: FakeStream) -> None:
    stream.client_update(CID, {"data": {"callActive": True, "callId": "call-2"}}, unset=["name"], user_id="bob")
    assert stream.channels[CID]["data"] == {"callActive": True, "callId": "call-2"} and "name" not in stream.channels[CID]
    event = json.loads(stream.outbox[-1][1])
    assert event["request_info"] == {"type": "client"} and event["user"] == {"id": "bob"}
    assert event["channel"]["data"]["callId"] == "call-2"
    assert stream.calls == [] and stream.patch_times == []


def test_stream_client_update_whose_webhook_is_lost(stream: FakeStream) -> None:
    """A client's update whose channel.updated Stream gave up delivering (it has no replay):
    applied, never sent, not in the outbox."""
    stream.webhook_url = "http://127.0.0.1:9/never"
    stream.client_update(CID, {"data.callActive": True, "data.callId": "call-9"}, webhook=False)
    assert stream.call_fields(CID) == {"callActive": True, "callId": "call-9"}
    assert stream.outbox == [] and stream.deliveries_in_flight == 0


def test_stream_query_channels(stream: FakeStream, sc: httpx.Client) -> None:
    stream.create_channel("messaging:other")
    query = {"state": True, "watch": False, "limit": 1}
    r = sc.post("/channels", json={"filter_conditions": {"cid": CID}, **query})
    assert r.status_code == 200
    assert r.json()["channels"] == [{"channel": stream.channels[CID], "members": []}]
    assert sc.post("/channels", json={"filter_conditions": {"cid": "messaging:nope"}}).json()["channels"] == []
    r = sc.post("/channels", json={"filter_conditions": {"cid": {"$in": [CID, "messaging:nope", "messaging:other"]}}})
    assert [c["channel"]["cid"] for c in r.json()["channels"]] == [CID, "messaging:other"]
    assert sc.post("/channels", json={"filter_conditions": {"type": "messaging"}}).status_code == 400
    assert stream.outbox == [] and stream.patch_times == []


def test_stream_full_update_rejected(stream: FakeStream, sc: httpx.Client) -> None:
    r = sc.post("/channels/messaging/general", json={"data": {"callActive": False}})
    assert r.status_code == 400 and "PATCH" in r.json()["message"]
    assert stream.channels[CID]["data"] == {"callActive": True, "callId": "call-1"}
    assert stream.outbox == []


def test_stream_fail_next_429_with_headers(stream: FakeStream, sc: httpx.Client) -> None:
    stream.fail_next(2, 429, {"X-RateLimit-Reset": "1800000000"})
    for _ in range(2):
        r = sc.patch("/channels/messaging/general", json={"set": {"data.callActive": False}})
        assert r.status_code == 429 and r.json()["code"] == 9 and r.json()["StatusCode"] == 429
        assert r.headers["X-RateLimit-Reset"] == "1800000000" and r.headers["X-RateLimit-Remaining"] == "0"
    assert stream.channels[CID]["data"]["callActive"] is True and stream.outbox == []
    r = sc.patch("/channels/messaging/general", json={"set": {"data.callActive": False}})
    assert r.status_code == 200 and "X-RateLimit-Limit" in r.headers
    assert len(stream.calls) == 3 and len(stream.patch_times) == 1


def test_stream_fail_next_not_consumed_by_unauthenticated(stream: FakeStream, sc: httpx.Client) -> None:
    stream.fail_next(1, 500)
    assert sc.post("/channels", params={"api_key": "bad"}, json={}).status_code == 401
    assert sc.post("/channels", json={"filter_conditions": {"cid": CID}}).status_code == 500
    assert sc.post("/channels", json={"filter_conditions": {"cid": CID}}).status_code == 200


def test_stream_timeout_and_webhook_delivery_over_http() -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    receiver = Flask("receiver")

    @receiver.post("/hook")
    def hook() -> str:
        received.append((dict(request.headers), request.get_data()))
        return "ok"

    hook_url, stop_receiver = serve(receiver)
    fake = FakeStream(STREAM_KEY, STREAM_SECRET, webhook_url=f"{hook_url}/hook")
    fake.create_channel(CID, data={"callActive": True})
    base_url, stop = serve(fake.app)
    try:
        with httpx.Client(
            base_url=base_url,
            params={"api_key": STREAM_KEY},
            timeout=0.2,
            headers={"Authorization": stream_token(), "stream-auth-type": "jwt"},
        ) as client:
            fake.timeout_next(1, 0.6)
            with pytest.raises(httpx.ReadTimeout):
                client.patch("/channels/messaging/general", json={"set": {"data.callActive": False}})
            r = client.patch("/channels/messaging/general", json={"set": {"data.callActive": True}})
            assert r.status_code == 200
        wait_for(lambda: len(received) == 2)  # the timed-out PATCH still applied, as a real server may
        assert {body for _, body in received} == {body for _, body in fake.outbox}
        headers, body = received[0]
        assert headers["X-Signature"] == hmac.new(STREAM_SECRET.encode(), body, hashlib.sha256).hexdigest()
    finally:
        stop()
        stop_receiver()


# --- 100ms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        hms_token(),  # no "Bearer"
        f"Bearer {hms_token(secret=WRONG)}",
        f"Bearer {hms_token(access_key='other')}",
        f"Bearer {hms_token(type='app')}",
        f"Bearer {hms_token(version=1)}",
        f"Bearer {hms_token(jti=None)}",
        f"Bearer {hms_token(exp=None)}",
        f"Bearer {hms_token(exp=int(time.time()) - 60)}",
        f"Bearer {hms_token(nbf=int(time.time()) + 600)}",
    ],
    ids=["missing", "no-bearer", "wrong-secret", "wrong-key", "app-token", "version-1", "no-jti", "no-exp", "expired", "not-yet"],
)
def test_hms_rejects_unauthenticated(hms: FakeHms, authorization) -> None:
    hms.create_room("room-a")
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(transport=httpx.WSGITransport(app=hms.app), base_url="http://hms.test/") as client:
        r = client.get("/rooms", params={"name": "room-a"}, headers=headers)
    assert r.status_code == 401
    assert r.json()["code"] == 401 and r.json()["message"] and r.json()["details"] == []
    assert hms.calls == []


def test_hms_rooms_by_name_case_insensitive(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("Messaging:General")
    assert hms.create_room("messaging:general") == room  # same room: names are case-insensitive
    assert room["enabled"] is True and len(room["id"]) == 24
    r = hc.get("rooms", params={"name": "MESSAGING:general"})
    assert r.status_code == 200
    assert r.json()["data"] == [room] and r.json()["limit"] == 10 and r.json()["last"] is None
    assert hc.get("rooms", params={"name": "other"}).json()["data"] == []
    assert hms.calls[0] == ("GET", "/rooms", None)


def test_hms_create_room_over_api(hms: FakeHms, hc: httpx.Client) -> None:
    first = hc.post("rooms", json={"name": "call-messaging:general"}).json()
    assert hc.post("rooms", json={"name": "CALL-messaging:general"}).json() == first == hms.rooms[first["id"]]
    assert hc.post("rooms", json={"name": "bad name!"}).status_code == 400


def test_hms_sessions_and_active_room(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("room-a")
    assert hc.get(f"active-rooms/{room['id']}").status_code == 404
    old = hms.open_session(room["id"], started_at=time.time() - 3600)
    hms.close_session(old["id"])
    live = hms.open_session(room["id"])
    with pytest.raises(ValueError):
        hms.open_session(room["id"])
    r = hc.get(f"active-rooms/{room['id']}")
    assert r.status_code == 200
    session = {"id": live["id"], "created_at": live["created_at"], "peers": []}
    # As in 100ms-docs, api-reference/active-rooms/retrieve-active-room.mdx.
    assert r.json() == {"id": room["id"], "name": "room-a", "customer_id": hms.account_id, "session": session}
    active = hc.get("sessions", params={"room_id": room["id"], "active": "true"}).json()
    assert [s["id"] for s in active["data"]] == [live["id"]] and "last" in active and active["limit"] == 10
    ended = hc.get("sessions", params={"room_id": room["id"], "active": "false"}).json()["data"]
    assert [s["id"] for s in ended] == [old["id"]] and ended[0]["active"] is False
    assert [s["id"] for s in hc.get("sessions", params={"room_id": room["id"]}).json()["data"]] == [live["id"], old["id"]]
    assert hc.get("sessions", params={"room_id": "nope"}).json()["data"] == []
    got = hc.get(f"sessions/{live['id']}").json()
    assert got == {"id": live["id"], "room_id": room["id"], "active": True, "created_at": live["created_at"], "peers": {}}
    assert hc.get("sessions/nope").status_code == 404


def test_hms_pagination(hms: FakeHms, hc: httpx.Client) -> None:
    rooms = [hms.create_room(f"room-{i}") for i in range(5)]
    first = hc.get("rooms", params={"limit": 2}).json()
    assert [r["id"] for r in first["data"]] == [r["id"] for r in rooms[:2]] and first["last"] == rooms[1]["id"]
    second = hc.get("rooms", params={"limit": 2, "start": first["last"]}).json()
    assert [r["id"] for r in second["data"]] == [r["id"] for r in rooms[2:4]]
    third = hc.get("rooms", params={"limit": 2, "start": second["last"]}).json()
    assert [r["id"] for r in third["data"]] == [rooms[4]["id"]] and third["last"] is None


def test_hms_open_session_queues_webhook(hms: FakeHms) -> None:
    room = hms.create_room("room-a")
    session = hms.open_session(room["id"])
    [(headers, body)] = hms.outbox
    assert headers == {"X-Callsync-Secret": "hook-secret", "Content-Type": "application/json"}
    event = json.loads(body)
    assert event["version"] == "2.0" and event["type"] == "session.open.success"
    assert uuid.UUID(event["id"]).version == 4
    assert event["account_id"] == hms.account_id and event["app_id"] == hms.app_id
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", event["timestamp"])
    assert event["data"] == {
        "room_id": room["id"],
        "room_name": "room-a",
        "session_id": session["id"],
        "template_id": hms.template_id,
        "session_started_at": session["created_at"],
    }


def test_hms_end_room_closes_session(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("room-a")
    started = time.time() - 13 * 3600
    session = hms.open_session(room["id"], started_at=started)
    assert RFC3339_NANO.match(session["created_at"])
    assert session["created_at"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(started)))
    r = hc.post(f"active-rooms/{room['id']}/end-room", json={"reason": "stale", "lock": False})
    assert r.status_code == 200 and r.json() == {"message": "session is ending"}
    assert hms.sessions[session["id"]]["active"] is False and hms.rooms[room["id"]]["enabled"] is True
    event = json.loads(hms.outbox[-1][1])
    assert event["type"] == "session.close.success"
    data = event["data"]
    assert data["session_id"] == session["id"] and data["room_id"] == room["id"] and data["room_name"] == "room-a"
    assert data["session_started_at"] == session["created_at"] and RFC3339_NANO.match(data["session_stopped_at"])
    assert abs(data["session_duration"] - 13 * 3600) <= 2
    assert hms.calls == [("POST", f"/active-rooms/{room['id']}/end-room", {"reason": "stale", "lock": False})]
    assert hc.get(f"active-rooms/{room['id']}").status_code == 404
    hms.close_session(session["id"])  # already closed: no second webhook
    assert len(hms.outbox) == 2


def test_hms_end_room_lock_disables_room(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("room-a")
    hms.open_session(room["id"])
    assert hc.post(f"active-rooms/{room['id']}/end-room", json={"reason": "x", "lock": True}).status_code == 200
    assert hms.rooms[room["id"]]["enabled"] is False
    with pytest.raises(ValueError):
        hms.open_session(room["id"])


def test_hms_end_room_without_session(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("room-a")
    for room_id in (room["id"], "unknown-room"):
        r = hc.post(f"active-rooms/{room_id}/end-room", json={"reason": "x", "lock": False})
        assert r.status_code == 404 and r.json()["code"] == 404 and r.json()["message"] == "no active session"
    assert hms.outbox == []


def test_hms_fail_next(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("room-a")
    hms.open_session(room["id"])
    hms.fail_next(1, 503, {"Retry-After": "1"})
    r = hc.post(f"active-rooms/{room['id']}/end-room", json={"reason": "x", "lock": False})
    assert r.status_code == 503 and r.headers["Retry-After"] == "1" and r.json()["code"] == 503
    assert hc.get(f"active-rooms/{room['id']}").status_code == 200  # the failed call changed nothing
    assert len(hms.calls) == 2 and len(hms.outbox) == 1


def test_hms_over_http_with_webhook_delivery() -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    lock = threading.Lock()
    receiver = Flask("receiver")

    @receiver.post("/hms")
    def hook() -> str:
        with lock:
            received.append((dict(request.headers), request.get_data()))
        return "ok"

    hook_url, stop_receiver = serve(receiver)
    fake = FakeHms(HMS_KEY, HMS_SECRET, webhook_url=f"{hook_url}/hms", webhook_secret="s3")
    base_url, stop = serve(fake.app)
    try:
        room = fake.create_room("room-a")
        fake.open_session(room["id"])
        with httpx.Client(base_url=f"{base_url}/", headers={"Authorization": f"Bearer {hms_token()}"}) as client:
            assert client.get("rooms", params={"name": "ROOM-A"}).json()["data"] == [room]
            assert client.post(f"active-rooms/{room['id']}/end-room", json={"reason": "x", "lock": False}).status_code == 200
        wait_for(lambda: len(received) == 2)
        assert sorted(json.loads(body)["type"] for _, body in received) == ["session.close.success", "session.open.success"]
        assert all(headers["X-Callsync-Secret"] == "s3" for headers, _ in received)
    finally:
        stop()
        stop_receiver()


def test_short_secrets_do_not_warn_inside_the_fakes() -> None:
    stream, hms = FakeStream(STREAM_KEY, "short"), FakeHms(HMS_KEY, "short")
    stream.create_channel(CID)
    with warnings.catch_warnings(action="ignore"):  # only the token *making* here may warn
        stoken, htoken = stream_token("short"), hms_token("short")
    with httpx.Client(transport=httpx.WSGITransport(app=stream.app), base_url="http://stream.test") as client:
        r = client.post(
            "/channels",
            params={"api_key": STREAM_KEY},
            headers={"Authorization": stoken, "stream-auth-type": "jwt"},
            json={"filter_conditions": {"cid": CID}},
        )
        assert r.status_code == 200
    with httpx.Client(transport=httpx.WSGITransport(app=hms.app), base_url="http://hms.test/") as client:
        assert client.get("rooms", headers={"Authorization": f"Bearer {htoken}"}).status_code == 200


def test_watchers_see_calls_on_arrival_and_channel_changes(stream: FakeStream, sc: httpx.Client) -> None:
    arrivals: list[tuple[float, str, str]] = []
    changes: list[tuple[str, dict, str]] = []
    stream.watchers.append(lambda at, call: arrivals.append((at, call[0], call[1])))
    stream.change_watchers.append(lambda cid, fields, by: changes.append((cid, fields, by)))
    before = time.time()
    stream.fail_next(1, 500)
    assert sc.patch("/channels/messaging/general", json={"set": {"data.callActive": False}}).status_code == 500
    assert sc.patch("/channels/messaging/general", json={"set": {"data.callActive": False}}).status_code == 200
    stream.client_update(CID, {"data.callActive": True})
    assert [(m, p) for _, m, p in arrivals] == [("PATCH", "/channels/messaging/general")] * 2
    assert all(before <= at <= time.time() for at, _, _ in arrivals)
    assert changes == [
        (CID, {"callActive": False, "callId": "call-1"}, "server"),
        (CID, {"callActive": True, "callId": "call-1"}, "client"),
    ]


def test_standins_run_as_a_process_and_print_their_environment() -> None:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "standins", "--channel", CID], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(8)]
        env = dict(line.removeprefix("export ").strip().split("=", 1) for line in lines[1:])
        token = jwt.encode({"server": True}, env["STREAM_API_SECRET"], algorithm="HS256")
        r = httpx.post(
            f"{env['STREAM_BASE_URL']}/channels",
            params={"api_key": env["STREAM_API_KEY"]},
            headers={"Authorization": token, "stream-auth-type": "jwt"},
            json={"filter_conditions": {"cid": CID}},
        )
        assert r.status_code == 200 and r.json()["channels"][0]["channel"]["cid"] == CID
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
