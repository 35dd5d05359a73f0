"""What a channel's call fields should be, and the smallest step that makes them so.

Level-triggered: `plan_channel` looks only at recorded state, never at the event that
woke it, so duplicates, reordering and echoes of callsync's own writes are harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from worker.core.actions import ChannelStep, ReadChannel, Recheck, VerifyCall, WriteFields
from worker.core.events import CallFields
from worker.core.sessions import Session

INACTIVE = CallFields(active=False, call_id=None)
# Claim times are Stream's clock, session ends 100ms's or ours: allow this much disagreement.
CLOCK_SKEW_SECONDS = 2.0


@dataclass(frozen=True)
class BoundCall:
    """What callsync knows about one call id bound to a channel."""

    call_id: str  # spelled as the binding spells it
    session: Session | None  # its room's current session
    idle_confirmed_at: float | None = None  # 100ms said "no live session" at this time


@dataclass(frozen=True)
class Channel:
    """What callsync last knew of a channel in Stream."""

    cid: str
    fields: CallFields | None  # None: never seen, read it first
    exists: bool = True
    claim_since: float | None = None  # when its current `callActive: true` claim began
    missing_for: str | None = None  # the live session it was last found missing (QueryChannels) for


def live_call(calls: Sequence[BoundCall]) -> BoundCall | None:
    """The bound call whose room has the newest open session, if any."""
    live = [call for call in calls if call.session is not None and call.session.is_open]
    return max(live, key=lambda call: call.session.sort_key if call.session else 0.0) if live else None


def desired_state(calls: Sequence[BoundCall]) -> CallFields:
    """docs/behaviour.md, rule 1: active with the call whose room has the newest open session."""
    live = live_call(calls)
    return CallFields(active=True, call_id=live.call_id) if live else INACTIVE


def _find(calls: Sequence[BoundCall], call_id: str | None) -> BoundCall | None:
    """The bound call of that exact id (call ids are case-sensitive, as channel ids are)."""
    if call_id is None:
        return None
    return next((call for call in calls if call.call_id == call_id), None)


def _claim_is_stale(claim: BoundCall | None, since: float, grace: float) -> bool:
    """A claim is stale once the session it belongs to ended, or 100ms confirmed no live
    session at least `grace` seconds after it began.

    A claim belongs to an ended session when it began no later than that session's start
    (callsync dates its own claims so) or clearly before its end. One that began within the
    clocks' disagreement of the end (a claim is dated by Stream's clock, an end by 100ms's) may
    be a member's new call whose open is not here yet (the reference client writes its claim
    right after joining): it is not cleared on the clocks' word, 100ms is asked after the grace.
    """
    if claim is None:
        return False
    session = claim.session
    if session is not None and not session.is_open:
        if session.started_at is not None and since <= session.started_at:
            return True
        if session.ended_at is not None and session.ended_at - CLOCK_SKEW_SECONDS >= since:
            return True
    return claim.idle_confirmed_at is not None and claim.idle_confirmed_at >= since + grace


TIMER_RESOLUTION_SECONDS = 0.001
BUSY_WAIT_SECONDS = 0.25  # a reconcile holds its channel for milliseconds, as a rule
BUSY_WAIT_MAX_SECONDS = 5.0


def busy_wait(held_for: float | None) -> float:
    """How long a task waits before asking again for a channel another reconcile holds (held
    for `held_for` seconds so far; None: not known): a quarter second while the hold is as
    short as reconciles' are, then a quarter of the hold so far, at most 5 s. A lock that a
    killed worker left behind is then not asked for four times a second until it expires."""
    if held_for is None:
        return BUSY_WAIT_SECONDS
    return min(max(BUSY_WAIT_SECONDS, held_for / 4), BUSY_WAIT_MAX_SECONDS)


def plan_channel(channel: Channel, calls: Sequence[BoundCall], now: float, grace: float) -> ChannelStep:
    """The next step for `channel`, given the calls bound to it (None: it is as it should be)."""
    if channel.fields is None:
        return ReadChannel()
    if not channel.exists:
        # Read again once per session of its call: a channel created since, whose
        # channel.created was lost, still shows the call.
        live = live_call(calls)
        fresh = live is not None and live.session is not None and live.session.session_id != channel.missing_for
        return ReadChannel() if fresh else None
    known, desired = channel.fields, desired_state(calls)
    if desired.active or not known.active:
        return WriteFields(desired) if known != desired else None
    # The channel claims a call that has no open session recorded (docs/behaviour.md, rule 4).
    # Never later than now: no claim, whatever clock dated it, defers its check past one grace.
    since = min(channel.claim_since, now) if channel.claim_since is not None else now
    claim = _find(calls, known.call_id)
    due = since + grace
    if claim is None and known.call_id is not None:
        # Another channel's call (core.binding): wrong whatever its room's state, so 100ms is not
        # asked; cleared one grace after the claim first showed, so a client that writes it
        # again and again costs at most one clearing write per grace.
        return Recheck(known.call_id, due) if due - now >= TIMER_RESOLUTION_SECONDS else WriteFields(INACTIVE)
    if claim is None or _claim_is_stale(claim, since, grace):
        return WriteFields(INACTIVE)
    # Due within a millisecond is due now: countdowns and their markers in Redis count whole
    # milliseconds, so a float remainder (4.8e-7 s after six 10 s hops) would make a 0 ms timer.
    return Recheck(claim.call_id, due) if due - now >= TIMER_RESOLUTION_SECONDS else VerifyCall(claim.call_id)


def claim_since(
    previous: Channel | None, fields: CallFields, version: float, by_member: bool = False, written_for: float | None = None
) -> float | None:
    """When the claim in `fields` began: kept while the same call stays claimed by server-side
    writes (callsync's own and their echoes), restarted by a member's event showing it
    (`by_member`: a member's event showing a call of the channel's own).
    `written_for`: the claim is callsync's own write (or that write's echo, core.channels
    `WriteIntent`) for a session that started then; it dates a new claim, whatever the clocks
    that stamped the write and its echo say.

    A member's event may be the member starting a new call under the same call id (the
    reference client writes the claim again right after joining), so the claim is judged from
    then on: a session that ended before it is not its session, and 100ms's "no live session"
    clears it only one grace after it. A claim no session backs is still cleared one grace
    after the last member event that showed it.
    """
    if not fields.active:
        return None
    if by_member:
        return version
    if previous is not None and previous.fields == fields and previous.claim_since is not None:
        return previous.claim_since
    return written_for if written_for is not None else version


def call_id_turned_off_by_client(previous: CallFields | None, new: CallFields, from_server: bool) -> str | None:
    """The call id whose `callActive` a client turned off, if this change is that; whether
    its session is open is `open_call_to_end_for_client`'s question (it needs the calls read)."""
    if from_server or previous is None or not previous.active or new.active:
        return None
    return previous.call_id


def open_call_to_end_for_client(
    previous: CallFields | None, new: CallFields, from_server: bool, calls: Sequence[BoundCall]
) -> BoundCall | None:
    """docs/behaviour.md, rule 3: a client turned `callActive` off while the session is open.

    Returns the call whose open session to end for everyone, else None. `calls` are the
    channel's own (core.binding): another channel's call is never among them, so its End call
    ends nothing.
    """
    claim = _find(calls, call_id_turned_off_by_client(previous, new, from_server))
    if claim is None or claim.session is None or not claim.session.is_open:
        return None
    return claim
