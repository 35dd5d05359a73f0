"""`GET /calls/{call id}` (docs/calls-api.md): the call and who is in it now, for members, from
what callsync recorded; the same authentication and membership checks as the other call routes."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from standins.credentials import STREAM_KEY as KEY
from tests.support.calls_api import CALL, Web, user_token
from tests.support.state import record_hms_event
from worker.core.events import parse_hms_event
from worker.core.peers import Peer
from worker.store.peers import record_peer
from worker.store.state import State


def describe(web: Web, user: str | None = "alice", call_id: str = CALL) -> Any:
    headers = {"stream-auth-type": "jwt"}
    if user:
        headers["authorization"] = user_token(user)
    return web.client.get(f"/calls/{quote(call_id, safe='')}", query_string={"api_key": KEY}, headers=headers)


def record_open(web: Web, room_id: str, session_id: str, at: float) -> None:
    body = {
        "id": f"open-{session_id}",
        "type": "session.open.success",
        "timestamp": "2026-12-05T10:00:00Z",
        "data": {"room_id": room_id, "room_name": CALL, "session_id": session_id, "session_started_at": "2026-12-05T10:00:00Z"},
    }
    event = parse_hms_event(body)
    assert event is not None
    record_hms_event(State(web.redis), event, at)


def test_a_call_with_no_session(web: Web) -> None:
    room = web.create("alice").json["call"]["hms"]
    answer = describe(web, "bob")
    assert answer.status_code == 200
    assert answer.json == {"call": {"id": CALL, "provider": "hms", "hms": room, "session": None, "participants": []}}
    writes = [path for method, path, _ in web.stream.calls if method == "PATCH" or "message" in path]
    assert writes == []  # no Stream write (QueryChannels, a read, is a POST)


def test_joins_and_leaves_are_reflected(web: Web) -> None:
    room = web.create("alice").json["call"]["hms"]
    record_open(web, room["room_id"], "s1", 1_796_464_800.0)
    record_peer(web.redis, "s1", Peer("p1", "alice", 1_796_464_801.0))
    record_peer(web.redis, "s1", Peer("p2", "bob", 1_796_464_802.0))
    hms_calls = len(web.hms.calls)
    call = describe(web, "bob").json["call"]
    assert call["session"] == {"id": "s1", "started_at": "2026-12-05T10:00:00.000Z"}
    assert call["participants"] == [
        {"user_id": "alice", "joined_at": "2026-12-05T10:00:01.000Z"},
        {"user_id": "bob", "joined_at": "2026-12-05T10:00:02.000Z"},
    ]
    record_peer(web.redis, "s1", Peer("p1", "alice", 1_796_464_801.0, left_at=1_796_464_900.0))
    assert [p["user_id"] for p in describe(web, "bob").json["call"]["participants"]] == ["bob"]
    assert len(web.hms.calls) == hms_calls  # recorded state sufficed: 100ms not asked


def test_a_non_member_is_403_and_no_token_is_401(web: Web) -> None:
    web.create("alice")
    assert describe(web, "mallory").status_code == 403
    assert describe(web, None).status_code == 401


def test_an_unknown_call_is_404(web: Web) -> None:
    assert describe(web, "alice").status_code == 404
