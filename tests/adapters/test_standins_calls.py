"""The stand-ins' parts the calls API uses: Stream membership, 100ms rooms by name and by id.

Shapes: QueryChannels members and member_count, QueryMembers `GET /members?payload=` (GetStream/
protocol openapi/chat-openapi.json; GetStream/stream-chat-python stream_chat/channel.py);
100ms rooms (100mslive/100ms-docs, docs/server-side/v2/api-reference/Rooms/).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from standins import FakeHms, FakeStream
from tests.adapters.test_standins import CID, HMS_KEY, HMS_SECRET, STREAM_KEY, STREAM_SECRET, hms_client, stream_client


@pytest.fixture
def stream() -> FakeStream:
    fake = FakeStream(STREAM_KEY, STREAM_SECRET)
    fake.create_channel(CID)
    fake.create_channel("messaging:random")
    return fake


@pytest.fixture
def sc(stream: FakeStream) -> Iterator[httpx.Client]:
    with stream_client(stream) as client:
        yield client


@pytest.fixture
def hms() -> FakeHms:
    return FakeHms(HMS_KEY, HMS_SECRET)


@pytest.fixture
def hc(hms: FakeHms) -> Iterator[httpx.Client]:
    with hms_client(hms) as client:
        yield client


def test_query_channels_lists_members_up_to_member_limit_with_the_count(stream: FakeStream, sc: httpx.Client) -> None:
    for n in range(5):
        stream.add_member(CID, f"user-{n}")
    body = {"filter_conditions": {"cid": CID}, "state": True, "limit": 1, "member_limit": 3}
    [state] = sc.post("/channels", json=body).json()["channels"]
    assert state["channel"]["member_count"] == 5
    assert [m["user_id"] for m in state["members"]] == ["user-0", "user-1", "user-2"]
    member = state["members"][0]
    assert member["user"] == {"id": "user-0", "banned": False}
    assert member["channel_role"] == "channel_member" and member["banned"] is False


def test_query_channels_with_a_members_filter_finds_only_the_users_channels(stream: FakeStream, sc: httpx.Client) -> None:
    stream.add_member(CID, "alice")
    stream.add_member("messaging:random", "bob")
    body = {"filter_conditions": {"cid": {"$in": [CID, "messaging:random"]}, "members": {"$in": ["alice"]}}}
    assert [c["channel"]["cid"] for c in sc.post("/channels", json=body).json()["channels"]] == [CID]
    body = {"filter_conditions": {"cid": CID, "members": {"$in": ["mallory"]}}}
    assert sc.post("/channels", json=body).json()["channels"] == []
    assert sc.post("/channels", json={"filter_conditions": {"cid": CID, "members": 3}}).status_code == 400


def test_query_members_filters_on_the_user(stream: FakeStream, sc: httpx.Client) -> None:
    stream.add_member(CID, "alice")
    stream.add_member(CID, "eve", banned=True)

    def query(**payload: object) -> httpx.Response:
        return sc.get("/members", params={"payload": json.dumps(payload)})

    found = query(type="messaging", id="general", filter_conditions={"id": {"$in": ["eve"]}}).json()
    assert [(m["user_id"], m["banned"]) for m in found["members"]] == [("eve", True)]
    assert len(query(type="messaging", id="general", filter_conditions={}).json()["members"]) == 2
    assert query(type="messaging", id="general", filter_conditions={"id": "zoe"}).json()["members"] == []
    assert query(type="messaging", id="nowhere", filter_conditions={}).status_code == 404
    assert query(type="messaging", id="general").status_code == 400
    assert sc.get("/members", params={"payload": "{"}).status_code == 400
    stream.remove_member(CID, "alice")
    assert [m["user_id"] for m in query(type="messaging", id="general", filter_conditions={}).json()["members"]] == ["eve"]
    assert stream.channels[CID]["member_count"] == 1


def test_query_members_needs_server_auth(stream: FakeStream) -> None:
    with httpx.Client(transport=httpx.WSGITransport(app=stream.app), base_url="http://stream.test") as anonymous:
        assert anonymous.get("/members", params={"payload": "{}", "api_key": STREAM_KEY}).status_code == 401


def test_rooms_are_created_once_by_name_with_a_template_and_found_by_id(hms: FakeHms, hc: httpx.Client) -> None:
    first = hc.post("rooms", json={"name": "standup", "template_id": "tpl-1"}).json()
    assert first["template_id"] == "tpl-1" and first["enabled"] is True
    again = hc.post("rooms", json={"name": "STANDUP"}).json()
    assert again["id"] == first["id"] and len(hms.rooms) == 1
    assert hc.get(f"rooms/{first['id']}").json() == hms.rooms[first["id"]]
    assert hc.get("rooms/000000000000000000000000").status_code == 404
    default = hc.post("rooms", json={"name": "other"}).json()
    assert default["template_id"] == hms.template_id  # the app's default template when none is given


def test_listing_rooms_by_name_shows_enabled_rooms_unless_asked(hms: FakeHms, hc: httpx.Client) -> None:
    room = hms.create_room("standup")
    hms.rooms[room["id"]]["enabled"] = False
    assert hc.get("rooms", params={"name": "standup"}).json()["data"] == []
    assert [r["id"] for r in hc.get("rooms", params={"name": "standup", "enabled": "false"}).json()["data"]] == [room["id"]]
