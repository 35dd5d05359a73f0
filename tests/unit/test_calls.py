"""worker/core/calls.py: which channel a call belongs to, who may join it, rates, ends, answers.

Member records have the shape of Stream's ChannelMemberResponse and QueryChannels answers
that of ChannelStateResponseFields (GetStream/protocol, openapi/chat-openapi.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from worker.core.calls import (
    Membership,
    Refused,
    Room,
    Roster,
    call_answer,
    call_of_path,
    channel_of_call,
    channel_of_path,
    check_owner,
    check_rate,
    cors_options,
    create_request,
    end_step,
    member_of,
    membership,
    rate_window,
    require_member,
    roster_of,
    unavailable,
)
from worker.core.sessions import Session
from worker.core.upstream import Retry, UpstreamError

CID = "messaging:general"


def member(user_id: str, **fields: object) -> dict[str, object]:
    return {"user_id": user_id, "user": {"id": user_id}, "channel_role": "channel_member", "banned": False, **fields}


def query_channels(members: list[dict[str, object]], count: int | None = None, cid: str = CID) -> dict[str, object]:
    channel: dict[str, object] = {"cid": cid, "type": "messaging", "id": cid.partition(":")[2]}
    if count is not None or members:
        channel["member_count"] = len(members) if count is None else count
    return {"channels": [{"channel": channel, "members": members, "messages": []}], "duration": "1ms"}


@contextmanager
def refused(status: int) -> Iterator[None]:
    with pytest.raises(Refused) as info:
        yield
    assert info.value.status == status, info.value.error


def test_paths_name_a_channel_or_a_call_or_nothing() -> None:
    assert channel_of_path("messaging", "general") == CID
    assert call_of_path("call-messaging:general") == "call-messaging:general"
    for kind, ident in (("messa ging", "general"), ("messaging", ""), ("x" * 65, "general"), ("messaging", "gen eral")):
        with refused(404):
            channel_of_path(kind, ident)
    for call_id in ("", "call with space", "a/b", "x" * 257):
        with refused(404):
            call_of_path(call_id)


def test_a_create_body_names_a_call_and_its_type() -> None:
    assert create_request({"id": "call-messaging:general", "type": "video"}) == ("call-messaging:general", "video")
    assert create_request({"id": "standup", "type": "audio"}) == ("standup", "audio")
    assert create_request({"id": "standup"}) == ("standup", "video")
    for body in (None, [], "x", {}, {"id": "bad id"}, {"id": 7}, {"id": "ok", "type": "screen"}):
        with refused(400):
            create_request(body)


def test_a_call_belongs_to_the_channel_that_created_it_or_that_its_name_gives() -> None:
    check_owner("call-messaging:general", CID, None)
    check_owner("standup", CID, None)
    check_owner("standup", CID, CID)
    with refused(409):
        check_owner("call-messaging:random", CID, None)  # the reference form names another channel
    with refused(409):
        check_owner("standup", CID, "messaging:random")  # another channel created it
    assert channel_of_call("standup", CID) == CID
    assert channel_of_call("call-messaging:general", None) == CID
    with refused(404):
        channel_of_call("standup", None)  # nobody created it through the calls API


def test_a_complete_roster_decides_for_everyone() -> None:
    roster = roster_of(query_channels([member("alice"), member("bob")]), CID)
    assert roster == Roster(True, frozenset({"alice", "bob"}), frozenset(), complete=True)
    assert membership(roster, "alice") is Membership.MEMBER
    assert membership(roster, "mallory") is Membership.NOT_MEMBER


def test_banned_removed_and_pending_members_may_not_call() -> None:
    members = [
        member("banned", banned=True),
        member("shadow", shadow_banned=True),
        member("removed", deleted_at="2026-11-20T10:00:00Z"),
        member("pending", invited=True),
        member("declined", invited=True, invite_rejected_at="2026-11-20T10:00:00Z"),
        member("accepted", invited=True, invite_accepted_at="2026-11-20T10:00:00Z"),
    ]
    roster = roster_of(query_channels(members), CID)
    assert roster.allowed == {"accepted"}
    assert roster.refused == {"banned", "shadow", "removed", "pending", "declined"}


def test_a_partial_roster_asks_about_users_it_does_not_list() -> None:
    roster = roster_of(query_channels([member("alice"), member("eve", banned=True)], count=250), CID)
    assert not roster.complete
    assert membership(roster, "alice") is Membership.MEMBER
    assert membership(roster, "eve") is Membership.NOT_MEMBER
    assert membership(roster, "zoe") is Membership.ASK
    no_count = {"channels": [{"channel": {"cid": CID}, "members": [member("alice")]}]}
    assert membership(roster_of(no_count, CID), "zoe") is Membership.ASK  # no member_count: not known to be all


def test_no_channel_is_no_channel() -> None:
    for answer in ({"channels": []}, {}, None, {"channels": "x"}, query_channels([member("alice")], cid="messaging:other")):
        roster = roster_of(answer, CID)
        assert membership(roster, "alice") is Membership.NO_CHANNEL
    with refused(404):
        require_member(Membership.NO_CHANNEL, CID)
    with refused(403):
        require_member(Membership.NOT_MEMBER, CID)
    with refused(403):
        require_member(Membership.ASK, CID)
    require_member(Membership.MEMBER, CID)


def test_a_query_members_answer_decides_for_its_user() -> None:
    assert member_of({"members": [member("zoe")]}, "zoe")
    assert not member_of({"members": [member("zoe", banned=True)]}, "zoe")
    assert not member_of({"members": []}, "zoe")
    assert not member_of({"members": [member("other")]}, "zoe")
    assert not member_of({}, "zoe")


def test_a_users_requests_are_counted_in_fixed_windows() -> None:
    assert rate_window(120.0, 60.0) == (2, 60)
    assert rate_window(179.2, 60.0) == (2, 1)
    check_rate(30, 30, 5)
    with pytest.raises(Refused) as too_many:
        check_rate(31, 30, 5)
    assert (too_many.value.status, too_many.value.retry_after) == (429, 5)


def test_a_platform_down_is_a_503_with_its_wait() -> None:
    answer = unavailable(UpstreamError("stream", 429, "slow down", Retry.AFTER, 2.2))
    assert (answer.status, answer.retry_after) == (503, 3) and "Stream" in answer.error
    answer = unavailable(UpstreamError("hms", None, "timeout", Retry.BACKOFF))
    assert (answer.status, answer.retry_after) == (503, 5) and "100ms" in answer.error


def test_an_end_ends_an_open_session_and_asks_100ms_otherwise() -> None:
    def session(status: str) -> Session:
        return Session("s1", "r1", "call-messaging:general", status, 1.0, None)  # type: ignore[arg-type]

    assert end_step(session("open")) == "end"
    assert end_step(session("ending")) == "ending"
    assert end_step(session("closed")) == "ask"
    assert end_step(None) == "ask"


def test_the_answer_has_the_shape_of_streams_integration() -> None:
    assert call_answer("call-messaging:general", Room("r1", "call-messaging:general"), "tok") == {
        "call": {
            "id": "call-messaging:general",
            "provider": "hms",
            "hms": {"room_id": "r1", "room_name": "call-messaging:general"},
        },
        "token": "tok",
    }


def test_cors_is_for_the_configured_origins_only() -> None:
    assert cors_options(()) is None
    options = cors_options(("https://app.example.com",))
    assert options is not None
    assert options["origins"] == ["https://app.example.com"] and options["always_send"] is False
    assert set(options["allow_headers"]) == {
        "authorization",
        "content-type",
        "stream-auth-type",
        "x-stream-client",
        "x-client-request-id",
    }
