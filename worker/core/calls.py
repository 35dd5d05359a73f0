"""The calls API's decisions (docs/calls-api.md, docs/behaviour.md rule 11), over plain values with `now` passed in.

Which channel a call belongs to, whether a user may join it (from Stream's answers), how a
user's request rate is counted, what an end request does, and the answers' shapes. The
request shape is that of Stream's retired built-in 100ms integration, which stream-chat-js
8.x still speaks (`channel.createCall()`, `client.getCallToken()`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from worker.core.access import Access, StreamUser, stream_user
from worker.core.binding import owner_of
from worker.core.callmessages import iso
from worker.core.events import CID_RE, cid_of_room, valid_call_id
from worker.core.peers import SessionPeers
from worker.core.sessions import Session
from worker.core.upstream import UpstreamError

CALL_TYPES = frozenset({"video", "audio"})
CHANNEL_TYPE_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
# What the stream-chat JS client sends (GetStream/stream-chat-js v8.61.0 src/client.ts `_enrichAxiosOptions`): from a
# browser these make every call a CORS preflight.
CLIENT_HEADERS = ("authorization", "content-type", "stream-auth-type", "x-stream-client", "x-client-request-id")
ROSTER_MEMBER_LIMIT = 100  # QueryChannels returns at most this many members of a channel
MEMBERSHIP_TTL = 30  # seconds a "may call" answer is trusted: a burst of joins asks Stream once
# Seconds a "no" (not a member, no such channel, a user Stream shut out) is kept per channel and
# user: a refused user asking again costs Stream nothing meanwhile; a member added in that window
# waits at most this long (less when the app sends `member.added` webhooks: one clears it).
REFUSAL_TTL = 5
# QueryMembers (300 a minute per app, shared by every channel) asks about users beyond the first
# ROSTER_MEMBER_LIMIT members; one channel may spend at most this many a minute, then 503.
MEMBER_QUERIES_PER_CHANNEL = 30
MEMBER_QUERY_PERIOD = 60.0
APP_SETTINGS_TTL = 60  # seconds the app's revoke time (GET /app) is trusted
UPSTREAM_RETRY_AFTER = 5  # seconds a client is told to wait when a platform gave no wait
QUEUE_FULL_RETRY_AFTER = 10  # seconds a client is told to wait while the task queue is full (as the receiver)


class Refused(Exception):
    """A calls API request that gets no token: the HTTP status and a message for the JSON body."""

    def __init__(self, status: int, error: str, retry_after: int | None = None):
        super().__init__(error)
        self.status, self.error, self.retry_after = status, error, retry_after


@dataclass(frozen=True)
class Room:
    """A 100ms room: the call's room has the call id as its name (or a name derived from it:
    core.binding.derived_room_name); its description may record the call's owner."""

    id: str
    name: str
    description: str | None = None


# --- which call, which channel ---------------------------------------------------------------


def channel_of_path(channel_type: str, channel_id: str) -> str:
    """The cid named by `/channels/{type}/{id}/call`, or Refused 404."""
    cid = f"{channel_type}:{channel_id}"
    if not CHANNEL_TYPE_RE.fullmatch(channel_type) or not CID_RE.fullmatch(cid):
        raise Refused(404, "no such channel")
    return cid


def call_of_path(call_id: str) -> str:
    """The call id named by `/calls/{id}`, or Refused 404: no room can have another name."""
    valid = valid_call_id(call_id)
    if valid is None:
        raise Refused(404, "no such call")
    return valid


def create_request(body: object) -> tuple[str, str]:
    """The call id and type of a create body `{"id", "type"}`, or Refused 400."""
    if not isinstance(body, dict):
        raise Refused(400, 'the body must be a JSON object {"id": <call id>, "type": "video" | "audio"}')
    call_id = valid_call_id(body.get("id"))
    if call_id is None:
        raise Refused(400, "id must be a call id: 1 to 256 of a-z A-Z 0-9 . - : _")
    kind = body.get("type", "video")
    if kind not in CALL_TYPES:
        raise Refused(400, 'type must be "video" or "audio"')
    return call_id, str(kind)


def check_owner(call_id: str, cid: str, recorded: str | None) -> None:
    """A call belongs to one channel (core.binding.owner_of): Refused 409 when `call_id` is
    another channel's, by its reference form or because another channel bound it first."""
    owner = owner_of(call_id, recorded)
    if owner is not None and owner != cid:
        named = cid_of_room(call_id) is not None
        raise Refused(409, f"call {call_id} {'names' if named else 'belongs to'} another channel")


def channel_of_call(call_id: str, recorded: str | None) -> str:
    """The channel whose members may join or end `call_id`, or Refused 404 (a call nobody created)."""
    cid = owner_of(call_id, recorded)
    if cid is None:
        raise Refused(404, "no such call")
    return cid


# --- who may ----------------------------------------------------------------------------------


class Membership(Enum):
    MEMBER = "member"
    NOT_MEMBER = "not a member"
    NO_CHANNEL = "no such channel"
    ASK = "ask"  # the roster is partial and does not list the user: ask Stream about them


@dataclass(frozen=True)
class Roster:
    """What Stream said of a channel's members: who may call, who may not, and whether that is all."""

    exists: bool
    allowed: frozenset[str] = frozenset()
    refused: frozenset[str] = frozenset()
    complete: bool = True
    # What Stream says of allowed members' users (core.access); absent: nothing against them.
    users: Mapping[str, StreamUser] = field(default_factory=dict)

    def user(self, user_id: str) -> StreamUser:
        return self.users.get(user_id, StreamUser())


def may_call(member: dict[str, Any]) -> bool:
    """A member record (Stream's ChannelMemberResponse) of someone who may join the call:
    not banned or shadow-banned, not removed, not an invitation still pending or declined."""
    if member.get("banned") is True or member.get("shadow_banned") is True or member.get("deleted_at"):
        return False
    if member.get("invite_rejected_at"):
        return False
    return not (member.get("invited") is True and not member.get("invite_accepted_at"))


def _member_ids(members: Iterable[object]) -> tuple[set[str], set[str], dict[str, StreamUser]]:
    """Who may call, who may not, and the users of those who may (each member's `user`,
    a UserResponse: GetStream/protocol openapi/chat-openapi.json ChannelMemberResponse)."""
    allowed: set[str] = set()
    refused: set[str] = set()
    users: dict[str, StreamUser] = {}
    for member in members:
        if isinstance(member, dict) and isinstance(member.get("user_id"), str):
            (allowed if may_call(member) else refused).add(member["user_id"])
            user = stream_user(member.get("user"))
            if may_call(member) and user != StreamUser():
                users[member["user_id"]] = user
    return allowed, refused, users


def roster_of(answer: object, cid: str) -> Roster:
    """The roster in a QueryChannels answer for `{"cid": cid}` (`channels[].members`, at most
    ROSTER_MEMBER_LIMIT of them, and `channel.member_count`; GetStream/protocol
    openapi/chat-openapi.json ChannelStateResponseFields, ChannelResponse)."""
    channels = answer.get("channels") if isinstance(answer, dict) else None
    for state in channels if isinstance(channels, list) else []:
        channel = state.get("channel") if isinstance(state, dict) else None
        if not isinstance(channel, dict) or channel.get("cid") != cid:
            continue
        members = state.get("members")
        members = members if isinstance(members, list) else []
        allowed, refused, users = _member_ids(members)
        count = channel.get("member_count")
        complete = isinstance(count, int) and not isinstance(count, bool) and count <= len(members)
        return Roster(True, frozenset(allowed), frozenset(refused), complete, users)
    return Roster(exists=False)


def membership(roster: Roster, user_id: str) -> Membership:
    if not roster.exists:
        return Membership.NO_CHANNEL
    if user_id in roster.allowed:
        return Membership.MEMBER
    if user_id in roster.refused or roster.complete:
        return Membership.NOT_MEMBER
    return Membership.ASK


def member_of(answer: object, user_id: str) -> bool:
    """Whether a QueryMembers answer (`{"members": [...]}`, filtered on the user) lets `user_id` call."""
    return user_id in members_roster(answer).allowed


def members_roster(answer: object) -> Roster:
    """A QueryMembers answer filtered on a user, as a roster complete for that user."""
    members = answer.get("members") if isinstance(answer, dict) else None
    allowed, refused, users = _member_ids(members if isinstance(members, list) else [])
    return Roster(True, frozenset(allowed), frozenset(refused), True, users)


def require_member(found: Membership, cid: str) -> None:
    if found is Membership.NO_CHANNEL:
        raise Refused(404, "no such channel")
    if found is not Membership.MEMBER:
        raise Refused(403, f"not a member of channel {cid}")


def require_access(access: Access) -> None:
    """Refused 401 for a token Stream revoked, 403 for a user Stream shut out (core.access)."""
    if access is Access.REVOKED:
        raise Refused(401, "the token was revoked in Stream (issued before a revoke time of the user or the app)")
    if access is Access.SHUT_OUT:
        raise Refused(403, "the user is banned app-wide, deactivated or deleted in Stream")


def remembered(refused: Refused) -> str:
    """A refusal as kept in the cache of "no"s (REFUSAL_TTL): its status and message."""
    return f"{refused.status} {refused.error}"


def recalled(kept: str | None) -> Refused | None:
    """A refusal from the cache of "no"s, as it was given (None: none kept, or not one of ours)."""
    status, _, error = (kept or "").partition(" ")
    return Refused(int(status), error) if status in ("403", "404") and error else None


# --- how often --------------------------------------------------------------------------------


def rate_window(now: float, period: float) -> tuple[int, int]:
    """The fixed window `now` falls in (its index) and the whole seconds until it ends."""
    index = int(now // period)
    return index, max(1, math.ceil((index + 1) * period - now))


def check_rate(count: int, limit: int, retry_after: int) -> None:
    """Refused 429 once a user's `count` of requests in the window passes `limit`."""
    if count > limit:
        raise Refused(429, "too many calls API requests from this user; retry later", retry_after)


def check_unauthenticated(count: int, limit: int, retry_after: int) -> None:
    """Refused 429 once a client address's `count` of 401 answers in the window reaches `limit`:
    it is refused whatever it sends until the window ends (so guessing tokens gains nothing)."""
    if count >= limit:
        raise Refused(429, "too many requests without a valid token from this address; retry later", retry_after)


def check_member_queries(count: int, retry_after: int) -> None:
    """Refused 503 once a channel's QueryMembers lookups in the window pass their bound."""
    if count > MEMBER_QUERIES_PER_CHANNEL:
        raise Refused(503, "too many membership lookups for this channel; retry later", retry_after)


def unavailable(error: UpstreamError) -> Refused:
    """A platform that failed a request the answer needs: 503, with the platform's wait if it gave one."""
    name = "Stream" if error.api == "stream" else "100ms"
    wait = error.retry_after if error.retry_after is not None else UPSTREAM_RETRY_AFTER
    return Refused(503, f"{name} is unavailable ({error.status or 'no answer'}); retry later", max(1, math.ceil(wait)))


# --- ending -----------------------------------------------------------------------------------

EndStep = Literal["end", "ending", "ask"]


def end_step(session: Session | None) -> EndStep:
    """What an end request does with the call's recorded session: end it ("end"), report the
    end already under way ("ending"), or ask 100ms whether a session runs that callsync
    never heard of ("ask")."""
    if session is not None and session.is_open:
        return "end"
    if session is not None and session.status == "ending":
        return "ending"
    return "ask"


# --- answers ----------------------------------------------------------------------------------


def call_answer(call_id: str, room: Room, token: str) -> dict[str, Any]:
    """The create and join answer, as Stream's integration gave it (stream-chat-js 8.x
    `CreateCallResponse`: `call: {id, provider, hms: {room_id, room_name}}`, `token`)."""
    return {"call": {"id": call_id, "provider": "hms", "hms": {"room_id": room.id, "room_name": room.name}}, "token": token}


def call_state_answer(call_id: str, room: Room, live: Session | None, peers: SessionPeers | None) -> dict[str, Any]:
    """The `GET /calls/{id}` answer: the call object, its live session (or null) and who is in it
    now (each user once, at their earliest join still present)."""
    present: dict[str, float | None] = {}
    for peer in peers.present() if peers is not None else []:
        if peer.user_id is not None and peer.user_id not in present:
            present[peer.user_id] = peer.joined_at
    call = call_answer(call_id, room, "")["call"]
    call["session"] = {"id": live.session_id, "started_at": iso(live.started_at)} if live is not None else None
    call["participants"] = [{"user_id": user, "joined_at": iso(at)} for user, at in present.items()]
    return {"call": call}


def cors_options(origins: tuple[str, ...]) -> dict[str, Any] | None:
    """flask-cors options for the calls API: these origins only, preflights with the client's
    headers; None (no CORS at all) without origins. No CORS headers without an Origin."""
    if not origins:
        return None
    return {
        "origins": list(origins),
        "methods": ["GET", "POST"],
        "allow_headers": list(CLIENT_HEADERS),
        "expose_headers": ["Retry-After"],
        "max_age": 600,
        "always_send": False,
        "vary_header": True,
        "supports_credentials": False,
    }
