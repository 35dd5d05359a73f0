"""Users Stream has shut out, and tokens Stream has revoked: the calls API's rule (no I/O).

Wire facts (GetStream/protocol, openapi/chat-openapi.json): a channel member
(`ChannelMemberResponse`, in QueryChannels' `channels[].members` and QueryMembers' `members`)
carries its `user` (`UserResponse`): `banned` (an app-wide ban; `ban_expires` when it ends),
`deactivated_at`, `deleted_at` and `revoke_tokens_issued_before`. `GET /app` answers
`{"app": {..., "revoke_tokens_issued_before"}}` (`GetApplicationResponse`, `AppResponseFields`).
A token issued (`iat`) before a revoke time is no longer valid; an app-wide revoke "will expire
every user's token, regardless of whether the token has an iat claim" (GetStream/stream-cli,
`stream-cli chat revoke-all-tokens`), and callsync holds a token without `iat` revoked by a
user's revoke time too: it cannot show it was issued after.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from worker.core.events import CID_RE, parse_time
from worker.core.tokens import USER_ID_RE


class Access(Enum):
    ALLOWED = "allowed"
    REVOKED = "revoked"  # HTTP 401: the token no longer proves who the user is
    SHUT_OUT = "shut out"  # HTTP 403: banned app-wide, deactivated or deleted


@dataclass(frozen=True)
class StreamUser:
    """What of a Stream user decides whether Stream still lets them in."""

    banned: bool = False
    ban_expires: float | None = None
    deactivated_at: float | None = None
    deleted_at: float | None = None
    revoke_tokens_issued_before: float | None = None


def stream_user(record: object) -> StreamUser:
    """The StreamUser of a `UserResponse` (a member's `user`); an absent or odd record is a user
    Stream says nothing against."""
    if not isinstance(record, dict):
        return StreamUser()
    return StreamUser(
        banned=record.get("banned") is True,
        ban_expires=parse_time(record.get("ban_expires")),
        deactivated_at=parse_time(record.get("deactivated_at")),
        deleted_at=parse_time(record.get("deleted_at")),
        revoke_tokens_issued_before=parse_time(record.get("revoke_tokens_issued_before")),
    )


def shut_out(user: StreamUser, now: float) -> bool:
    """Banned app-wide (a ban with an end passed no longer counts), deactivated or deleted."""
    banned = user.banned and (user.ban_expires is None or user.ban_expires > now)
    return banned or user.deactivated_at is not None or user.deleted_at is not None


def revoked(issued_at: float | None, revoked_before: float | None) -> bool:
    """Whether a token issued at `issued_at` (None: no `iat`) is revoked by `revoked_before`."""
    if revoked_before is None:
        return False
    return issued_at is None or issued_at < revoked_before


def issued_at(claims: Mapping[str, Any]) -> float | None:
    """The token's `iat`, if it has a numeric one (core.tokens refuses a token whose `iat` is not)."""
    value = claims.get("iat")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def user_access(user: StreamUser, app_revoked_before: float | None, claims: Mapping[str, Any], now: float) -> Access:
    """Whether Stream still lets this user in with the token of `claims`: a revoked token first
    (who the user is is not proven), then a user Stream shut out."""
    iat = issued_at(claims)
    if revoked(iat, app_revoked_before) or revoked(iat, user.revoke_tokens_issued_before):
        return Access.REVOKED
    if shut_out(user, now):
        return Access.SHUT_OUT
    return Access.ALLOWED


def app_revoked_before(answer: object) -> float | None:
    """The app-wide revoke time in a `GET /app` answer, or None when none is set."""
    app = answer.get("app") if isinstance(answer, dict) else None
    return parse_time(app.get("revoke_tokens_issued_before")) if isinstance(app, dict) else None


MEMBER_ADDED = "member.added"


@dataclass(frozen=True)
class MemberAdded:
    """Stream added `user_id` to `cid`: a "no" the calls API keeps for them there is stale."""

    cid: str
    user_id: str


def member_added(body: object) -> MemberAdded | None:
    """The channel and user of a `member.added` webhook (`MemberAddedEvent`: `cid`, or
    `channel_type`/`channel_id`, and `member.user_id`, or `user.id`); None for any other body."""
    if not isinstance(body, dict) or body.get("type") != MEMBER_ADDED:
        return None
    cid = body.get("cid")
    if not isinstance(cid, str) and isinstance(body.get("channel_type"), str) and isinstance(body.get("channel_id"), str):
        cid = f"{body['channel_type']}:{body['channel_id']}"
    member, user = body.get("member"), body.get("user")
    user_id = member.get("user_id") if isinstance(member, dict) else None
    if not isinstance(user_id, str) and isinstance(user, dict):
        user_id = user.get("id")
    if not isinstance(cid, str) or not isinstance(user_id, str):
        return None
    return MemberAdded(cid, user_id) if CID_RE.fullmatch(cid) and USER_ID_RE.fullmatch(user_id) else None
