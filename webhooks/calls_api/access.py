"""Who may use the calls API: the user's token, the channel's membership, and whether Stream
still lets the user in (docs/calls-api.md, "Who may"). Decisions are the pure core's
(`core.tokens`, `core.calls`, `core.access`); this module carries them out against Redis
(`CallsStore`) and Stream, and keeps refusals cheap:

- a "no" (not a member, no such channel, a user Stream shut out) is kept REFUSAL_TTL seconds
  per channel and user, and dropped at once by a `member.added` webhook (webhooks/receiver.py);
- QueryMembers, the lookup of a user beyond a channel's first page of members, is bounded per
  channel (MEMBER_QUERIES_PER_CHANNEL a minute; Stream allows 300 a minute per app);
- a client address that was answered 401 `CALLSYNC_UNAUTHENTICATED_PER_ADDRESS` times in a
  window is answered 429 until the window ends, whatever it sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from worker.clients.stream import StreamClient
from worker.core.access import StreamUser, app_revoked_before, issued_at, revoked, user_access
from worker.core.calls import (
    APP_SETTINGS_TTL,
    MEMBER_QUERY_PERIOD,
    Membership,
    Refused,
    Roster,
    check_member_queries,
    check_rate,
    check_unauthenticated,
    members_roster,
    membership,
    rate_window,
    recalled,
    remembered,
    require_access,
    require_member,
    roster_of,
)
from worker.core.tokens import Unauthenticated, UserToken, verified_user
from worker.core.upstream import UpstreamError
from worker.settings import Settings
from worker.store.calls import FILL_SECONDS, CallsStore, Snapshot

FILL_POLL_SECONDS = 0.02


@dataclass(frozen=True)
class Caller:
    """What a request says about who sends it, as the stream-chat client sends it."""

    authorization: str | None
    auth_type: str | None  # the `stream-auth-type` header
    user_id: str | None  # the query's `user_id`
    api_key: str | None  # the query's `api_key`
    address: str | None = None  # the client's address (behind CALLSYNC_TRUSTED_PROXIES proxies: as they say)


class Gatekeeper:
    """Authenticate a request, then admit its user to a channel's call, or raise Refused.
    Stream's failures are raised as UpstreamError (the caller answers 503)."""

    def __init__(
        self, settings: Settings, store: CallsStore, stream: Callable[[], StreamClient], clock: Callable[[], float] = time.time
    ):
        self.settings, self.store, self.stream, self.clock = settings, store, stream, clock

    def authenticate(self, caller: Caller) -> UserToken:
        s = self.settings
        try:
            return verified_user(
                caller.authorization,
                caller.auth_type,
                caller.user_id,
                caller.api_key,
                s.stream_api_key,
                s.stream_secrets,
                self.clock(),
            )
        except Unauthenticated as exc:
            raise self.unauthenticated(caller, str(exc)) from None

    def unauthenticated(self, caller: Caller, error: str) -> Refused:
        """The 401 for `caller`, counted against its address: a 429 once the address has had its fill."""
        if caller.address:
            rate = self.settings.unauthenticated_per_address
            window, retry_after = rate_window(self.clock(), rate.period)
            count = self.store.count_unauthenticated(window, caller.address, rate.period)
            if count > rate.count:
                return Refused(429, "too many requests without a valid token from this address; retry later", retry_after)
        return Refused(401, error)

    def snapshot(self, caller: Caller, token: UserToken, call_id: str, cid: str | None) -> Snapshot:
        """The request's snapshot (worker.store.calls) after the user's and the address's limits,
        with the app's revoke time read from Stream when not cached; Refused 401 for a token the
        app revoked."""
        now, per_user, per_address = self.clock(), self.settings.calls_per_user, self.settings.unauthenticated_per_address
        window, retry_after = rate_window(now, per_user.period)
        address_window, address_retry = rate_window(now, per_address.period)
        address = (address_window, caller.address) if caller.address else None
        snap = self.store.snapshot(token.user_id, window, per_user.period, call_id, cid, address)
        check_unauthenticated(snap.unauthenticated, per_address.count, address_retry)
        check_rate(snap.requests, per_user.count, retry_after)
        if not snap.app_known:
            snap = replace(snap, app_revoked=app_revoked_before(self.stream().app_settings()), app_known=True)
            self.store.save_app_revoked(snap.app_revoked, APP_SETTINGS_TTL)
        if revoked(issued_at(token.claims), snap.app_revoked):  # before any membership lookup
            raise self.unauthenticated(caller, "the token was revoked in Stream (issued before the app's revoke time)")
        return snap

    def admit(
        self, caller: Caller, token: UserToken, cid: str, app_revoked: float | None, cached: tuple[Roster | None, str | None]
    ) -> None:
        """Refused unless the user may call in `cid` (a member, as Stream says, with a token Stream
        has not revoked, not banned app-wide, deactivated or deleted). `cached`: the channel's
        cached roster for the user and a "no" kept for them."""
        user = self.member(cid, token.user_id, *cached)
        try:
            require_access(user_access(user, app_revoked, token.claims, self.clock()))
        except Refused as refused:
            if refused.status == 401:
                raise self.unauthenticated(caller, refused.error) from None
            self.store.remember_refusal(cid, token.user_id, remembered(refused))
            raise

    def member(self, cid: str, user: str, cached: Roster | None, refusal: str | None) -> StreamUser:
        """What Stream says of `user` as a member of `cid`, or Refused 403/404. A "yes" is cached
        MEMBERSHIP_TTL, so a burst of joins costs Stream one call; a "no" REFUSAL_TTL."""
        if _allows(cached, user):
            return cached.user(user) if cached is not None else StreamUser()
        kept = recalled(refusal)
        if kept is not None:
            raise kept
        try:
            return self._ask(cid, user)
        except Refused as refused:
            self.store.remember_refusal(cid, user, remembered(refused))
            raise

    def _ask(self, cid: str, user: str) -> StreamUser:
        roster = self._roster(cid, user)
        found = membership(roster, user)
        if found is Membership.ASK:  # a channel larger than one page of members
            window, retry_after = rate_window(self.clock(), MEMBER_QUERY_PERIOD)
            check_member_queries(self.store.count_member_query(cid, window, MEMBER_QUERY_PERIOD), retry_after)
            try:
                roster = members_roster(self.stream().channel_member(cid, user))
            except UpstreamError as error:
                if error.status == 404:  # deleted since QueryChannels found it (Stream's "does not exist")
                    raise Refused(404, "no such channel") from None
                raise
            found = membership(roster, user)
            if found is Membership.MEMBER:
                self.store.save_member(cid, user, roster.user(user))
        require_member(found, cid)
        return roster.user(user)

    def _roster(self, cid: str, user: str) -> Roster:
        """The channel's roster, asked of Stream once for a burst: while one request asks, the
        others wait for its answer, and ask themselves only if it does not let them in."""
        holding = self.store.take_roster_fill(cid)
        if not holding:
            waited = self.store.await_roster(cid, user, FILL_SECONDS, FILL_POLL_SECONDS)
            if waited is not None and _allows(waited, user):
                return waited
        try:
            roster = roster_of(self.stream().channel_roster(cid), cid)
            self.store.save_roster(cid, roster, self.clock())
        finally:
            if holding:
                self.store.end_roster_fill(cid)
        return roster


def _allows(roster: Roster | None, user: str) -> bool:
    return roster is not None and membership(roster, user) is Membership.MEMBER
