"""The platform calls the calls API makes (worker/clients), against the stand-ins over an
in-process transport: what is sent, and what comes back."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from standins import FakeHms, FakeStream
from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from worker.clients.hms import HmsClient, ManagementAuth
from worker.clients.stream import StreamAuth, StreamClient
from worker.core.calls import Room
from worker.core.upstream import UpstreamError

CID = "messaging:general"


@pytest.fixture
def stream() -> Iterator[tuple[FakeStream, StreamClient]]:
    fake = FakeStream(KEY, SECRET)
    fake.create_channel(CID)
    fake.add_member(CID, "alice")
    transport = httpx.WSGITransport(app=fake.app)
    with httpx.Client(base_url="http://stream.test", auth=StreamAuth(KEY, SECRET), transport=transport) as http:
        yield fake, StreamClient(http, ("data",))


@pytest.fixture
def hms() -> Iterator[tuple[FakeHms, HmsClient]]:
    fake = FakeHms(HMS_KEY, HMS_SECRET)
    transport = httpx.WSGITransport(app=fake.app)
    with httpx.Client(base_url="http://hms.test", auth=ManagementAuth(HMS_KEY, HMS_SECRET), transport=transport) as http:
        yield fake, HmsClient(http)


def test_the_roster_is_one_query_channels_with_members(stream: tuple[FakeStream, StreamClient]) -> None:
    fake, client = stream
    answer = client.channel_roster(CID)
    [(method, path, body)] = fake.calls
    assert (method, path) == ("POST", "/channels")
    assert body is not None and body["filter_conditions"] == {"cid": CID} and body["member_limit"] == 100
    assert body["watch"] is False and body["presence"] is False  # a read without side effects
    [state] = answer["channels"]
    assert [m["user_id"] for m in state["members"]] == ["alice"] and state["channel"]["member_count"] == 1


def test_one_member_is_one_query_members(stream: tuple[FakeStream, StreamClient]) -> None:
    fake, client = stream
    assert [m["user_id"] for m in client.channel_member(CID, "alice")["members"]] == ["alice"]
    assert client.channel_member(CID, "zoe")["members"] == []
    assert fake.calls[0][:2] == ("GET", "/members")
    with pytest.raises(UpstreamError) as missing:
        client.channel_member("messaging:nowhere", "alice")
    assert missing.value.status == 404


def test_rooms_by_name_by_id_and_created(hms: tuple[FakeHms, HmsClient]) -> None:
    fake, client = hms
    assert client.room_by_name("Standup") is None
    created = client.create_room("Standup", "tpl-1")
    assert fake.calls[-1] == ("POST", "/rooms", {"name": "Standup", "template_id": "tpl-1"})
    assert client.create_room("standup") == created  # the same room: 100ms names are case-insensitive
    assert fake.calls[-1] == ("POST", "/rooms", {"name": "standup"})  # no template: the room keeps its own
    assert client.room_by_name("STANDUP") == created == Room(created.id, "Standup", "")
    assert client.room(created.id) == created and client.room("0" * 24) is None
    assert client.room_id_by_name("standup") == created.id


def test_a_rooms_description_is_set_at_create_and_changed_alone(hms: tuple[FakeHms, HmsClient]) -> None:
    fake, client = hms
    created = client.create_room("weekly", description="callsync owner=messaging:a")
    assert created.description == "callsync owner=messaging:a"
    client.describe_room(created.id, "callsync owner=messaging:b")
    assert fake.calls[-1] == ("POST", f"/rooms/{created.id}", {"description": "callsync owner=messaging:b"})
    room = client.room(created.id)
    assert room is not None and room.description == "callsync owner=messaging:b"
    assert fake.rooms[created.id]["template_id"] == fake.template_id  # nothing else changed


def test_a_room_answer_without_an_id_is_an_upstream_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": json.loads(request.content)["name"]})

    with httpx.Client(base_url="http://hms.test", transport=httpx.MockTransport(answer)) as http, pytest.raises(UpstreamError):
        HmsClient(http).create_room("standup")
