"""The Stream message/user calls and 100ms's session peers, against the stand-ins and as documented."""

from __future__ import annotations

import json

import httpx
import pytest

from standins import FakeStream
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from worker.clients.hms import HmsClient
from worker.clients.http import upstream_client
from worker.clients.stream import StreamAuth, StreamClient
from worker.core.callmessages import is_duplicate_id
from worker.core.upstream import UpstreamError


@pytest.fixture
def stream() -> tuple[FakeStream, StreamClient]:
    fake = FakeStream(KEY, SECRET)
    fake.create_channel("messaging:general")
    http = upstream_client("http://stream.test", StreamAuth(KEY, SECRET), httpx.WSGITransport(app=fake.app))
    return fake, StreamClient(http, ("data",))


def test_send_get_update_and_upsert_as_stream_documents_them(stream) -> None:
    fake, client = stream
    client.upsert_users([{"id": "callsync", "name": "Calls"}])
    assert fake.users["callsync"] == {"name": "Calls"}
    body = {"id": "callsync-s1", "text": "Call started", "user_id": "callsync", "attachments": [{"type": "call"}]}
    sent = client.send_message("messaging:general", body)
    assert sent["id"] == "callsync-s1" and sent["user"] == {"id": "callsync"}
    assert client.get_message("callsync-s1")["text"] == "Call started"
    client.update_message({**body, "text": "Missed call"})
    assert client.get_message("callsync-s1")["text"] == "Missed call"
    sends = [(m, p, b) for m, p, b in fake.calls if p.endswith("/message")]
    assert sends[0][:2] == ("POST", "/channels/messaging/general/message") and sends[0][2] == {"message": body}


def test_message_answers_report_their_own_limit(stream) -> None:
    """X-RateLimit-Limit on every answer, per endpoint: Send Message and Update Message are 1,000 a
    minute by default, Update Channel 300 (https://getstream.io/chat/docs/react/rate-limits/); the
    messages' write queue adopts the first when lower than CALLSYNC_STREAM_MESSAGE_RATE."""
    fake, client = stream
    client.upsert_users([{"id": "callsync", "name": "Calls"}])
    body = {"id": "callsync-s1", "text": "Call started", "user_id": "callsync"}
    assert client.send_message_reporting("messaging:general", body)[1] == 1000
    fake.message_limit = 120
    assert client.update_message_reporting({**body, "text": "Missed call"})[1] == 120
    fake.fail_next_messages(1, 429, retry_after=7)
    with pytest.raises(UpstreamError) as throttled:
        client.update_message(body)
    assert (throttled.value.retry_after, throttled.value.reported_limit) == (7.0, 120)


def test_a_duplicate_id_is_400_code_4_and_a_missing_channel_404_code_16(stream) -> None:
    fake, client = stream
    client.upsert_users([{"id": "callsync", "name": "Calls"}])
    body = {"id": "callsync-s1", "text": "x", "user_id": "callsync"}
    client.send_message("messaging:general", body)
    with pytest.raises(UpstreamError) as duplicate:
        client.send_message("messaging:general", body)
    assert is_duplicate_id(duplicate.value.status, duplicate.value.message)
    fake.delete_channel("messaging:general")
    with pytest.raises(UpstreamError) as missing:
        client.send_message("messaging:general", {**body, "id": "callsync-s2"})
    assert missing.value.status == 404
    with fake.app.test_request_context():  # Stream's not-found code (GetStream/stream-chat-swift #2607)
        assert json.loads(fake._error(404, "Can't find channel").get_data())["code"] == 16


@pytest.mark.parametrize("shape", ["map", "list"])
def test_session_peers_read_100ms_record_of_the_session(shape: str) -> None:
    # 100ms-docs Sessions/retrieve-a-session.mdx shows `peers` as a map keyed by peer id;
    # Sessions/object.mdx calls it an array: both are read.
    peer = {
        "id": "2d873b0a",
        "session_id": "s1",
        "name": "Nixon K",
        "role": "backstage",
        "user_id": "Batch1-student",
        "joined_at": "2022-09-06T11:17:01.816Z",
        "left_at": "2022-09-06T11:17:03.643Z",
    }
    peers = {"2d873b0a": peer} if shape == "map" else [peer]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sessions/s1":
            return httpx.Response(200, json={"id": "s1", "active": False, "peers": peers})
        return httpx.Response(404, json={"code": 404, "message": "not found"})

    client = HmsClient(httpx.Client(base_url="http://hms.test", transport=httpx.MockTransport(answer)))
    [read] = client.session_peers("s1") or []
    assert (read.peer_id, read.user_id) == ("2d873b0a", "Batch1-student")
    assert read.joined_at is not None and read.left_at is not None and read.left_at > read.joined_at
    assert client.session_peers("unknown") is None
