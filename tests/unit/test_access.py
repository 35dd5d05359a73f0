"""worker/core/access.py: whether Stream still lets a user in, over plain values (no mocks).

Field names and shapes: GetStream/protocol openapi/chat-openapi.json (UserResponse, ChannelMemberResponse,
GetApplicationResponse, MemberAddedEvent); the app-wide revoke and tokens without `iat`: GetStream/stream-cli
`stream-cli chat revoke-all-tokens` ("regardless of whether the token has an iat claim").
"""

from __future__ import annotations

import pytest

from worker.core.access import (
    Access,
    MemberAdded,
    StreamUser,
    app_revoked_before,
    member_added,
    revoked,
    shut_out,
    stream_user,
    user_access,
)
from worker.core.calls import Refused, members_roster, recalled, remembered, roster_of

NOW = 1_800_000_000.0
REVOKE = "2027-01-15T08:00:00Z"
REVOKE_AT = 1_800_000_000.0 - 100


def test_a_user_record_is_read_from_stream_fields() -> None:
    record = {
        "id": "alice",
        "banned": True,
        "ban_expires": "2027-01-15T08:00:00.5Z",
        "deactivated_at": "2027-01-15T08:00:00Z",
        "deleted_at": "2027-01-15T08:00:00.123456789Z",
        "revoke_tokens_issued_before": REVOKE,
    }
    user = stream_user(record)
    assert user.banned and user.ban_expires is not None and user.deactivated_at is not None and user.deleted_at is not None
    assert user.revoke_tokens_issued_before == stream_user({"revoke_tokens_issued_before": REVOKE}).revoke_tokens_issued_before
    assert stream_user({"id": "bob", "banned": False, "online": True}) == StreamUser()
    assert stream_user(None) == stream_user("odd") == StreamUser()
    assert stream_user({"banned": "yes", "deactivated_at": "not a time"}) == StreamUser()  # only what Stream sends counts


@pytest.mark.parametrize(
    ("user", "out"),
    [
        (StreamUser(), False),
        (StreamUser(banned=True), True),
        (StreamUser(banned=True, ban_expires=NOW + 60), True),
        (StreamUser(banned=True, ban_expires=NOW - 1), False),  # a timed ban that has ended
        (StreamUser(deactivated_at=NOW - 5), True),
        (StreamUser(deleted_at=NOW - 5), True),
    ],
)
def test_who_is_shut_out(user: StreamUser, out: bool) -> None:
    assert shut_out(user, NOW) is out


def test_a_token_issued_before_a_revoke_time_or_without_iat_is_revoked() -> None:
    assert not revoked(NOW - 10, None) and not revoked(None, None)  # nothing revoked: any token
    assert revoked(REVOKE_AT - 1, REVOKE_AT) and not revoked(REVOKE_AT, REVOKE_AT) and not revoked(REVOKE_AT + 1, REVOKE_AT)
    assert revoked(None, REVOKE_AT)  # no iat: it cannot show it was issued after


@pytest.mark.parametrize(
    ("user", "app", "claims", "access"),
    [
        (StreamUser(), None, {"user_id": "alice"}, Access.ALLOWED),
        (StreamUser(), None, {"user_id": "alice", "iat": NOW - 3600}, Access.ALLOWED),
        (StreamUser(), REVOKE_AT, {"user_id": "alice", "iat": REVOKE_AT - 1}, Access.REVOKED),  # the app's revoke
        (StreamUser(), REVOKE_AT, {"user_id": "alice"}, Access.REVOKED),  # app-wide: whether or not it has an iat
        (StreamUser(), REVOKE_AT, {"user_id": "alice", "iat": REVOKE_AT + 1}, Access.ALLOWED),  # a fresh token
        (StreamUser(revoke_tokens_issued_before=REVOKE_AT), None, {"iat": REVOKE_AT - 1}, Access.REVOKED),  # the user's
        (StreamUser(revoke_tokens_issued_before=REVOKE_AT), None, {}, Access.REVOKED),
        (StreamUser(revoke_tokens_issued_before=REVOKE_AT), None, {"iat": REVOKE_AT + 1}, Access.ALLOWED),
        (StreamUser(banned=True), None, {"iat": NOW - 1}, Access.SHUT_OUT),
        (StreamUser(deactivated_at=NOW - 1), None, {}, Access.SHUT_OUT),
        (StreamUser(deleted_at=NOW - 1), None, {}, Access.SHUT_OUT),
        (StreamUser(banned=True), REVOKE_AT, {"iat": REVOKE_AT - 1}, Access.REVOKED),  # who it is is not proven: 401 first
        (StreamUser(), None, {"iat": True}, Access.ALLOWED),  # not a number: no iat (core.tokens refuses it anyway)
    ],
)
def test_user_access(user: StreamUser, app: float | None, claims: dict[str, object], access: Access) -> None:
    assert user_access(user, app, claims, NOW) is access


def test_the_apps_revoke_time_is_read_from_get_app() -> None:
    assert app_revoked_before({"app": {"name": "x", "revoke_tokens_issued_before": REVOKE}, "duration": "1ms"}) is not None
    assert app_revoked_before({"app": {"name": "x"}}) is None
    assert app_revoked_before({"app": {"revoke_tokens_issued_before": None}}) is None
    assert app_revoked_before({}) is None and app_revoked_before([]) is None


def test_rosters_carry_the_users_of_members_who_may_call() -> None:
    members = [
        {"user_id": "alice", "user": {"id": "alice", "banned": False}, "banned": False},
        {"user_id": "bob", "user": {"id": "bob", "banned": True}, "banned": False},  # banned app-wide
        {"user_id": "carol", "user": {"id": "carol", "revoke_tokens_issued_before": REVOKE}},
        {"user_id": "eve", "user": {"id": "eve", "deactivated_at": REVOKE}, "banned": True},  # banned in the channel
    ]
    cid = "messaging:general"
    roster = roster_of({"channels": [{"channel": {"cid": cid, "member_count": 4}, "members": members}]}, cid)
    assert roster.allowed == {"alice", "bob", "carol"} and roster.refused == {"eve"}
    assert roster.user("alice") == StreamUser() and roster.user("bob").banned
    assert roster.user("carol").revoke_tokens_issued_before is not None and roster.user("eve") == StreamUser()
    queried = members_roster({"members": members[1:2]})
    assert queried.allowed == {"bob"} and queried.complete and queried.user("bob").banned


def test_refusals_are_kept_as_given() -> None:
    for refused in (Refused(403, "not a member of channel messaging:general"), Refused(404, "no such channel")):
        again = recalled(remembered(refused))
        assert again is not None and (again.status, again.error) == (refused.status, refused.error)
    assert recalled(None) is None and recalled("401 no") is None and recalled("garbage") is None


def test_member_added_names_the_channel_and_the_user() -> None:
    event = {"type": "member.added", "cid": "messaging:general", "member": {"user_id": "carol"}, "user": {"id": "carol"}}
    assert member_added(event) == MemberAdded("messaging:general", "carol")
    by_parts = {"type": "member.added", "channel_type": "messaging", "channel_id": "general", "user": {"id": "carol"}}
    assert member_added(by_parts) == MemberAdded("messaging:general", "carol")
    assert member_added({**event, "type": "member.removed"}) is None
    assert member_added({"type": "member.added", "cid": "messaging:general"}) is None
    assert member_added({**event, "member": {"user_id": "has space"}, "user": {}}) is None
    assert member_added("member.added") is None
