"""What callsync records of a channel when Stream shows something, and whether to reconcile.

Level-triggering rests on `ChannelChange.needs_reconcile` (the echo rule): an event that changes
nothing callsync reads (an echo of its own write, a duplicate, an older event) wakes no
reconcile, unless an earlier change still waits for one (the pending mark). A record carries
that mark from the Stream event that changed it until a reconcile that read the change
completes: so a task re-run after its reconcile failed (a 429, a busy lock, a killed worker)
still reconciles, although its event now changes nothing.

A write callsync is about to send is recorded first, as the record's `intent` (`WriteIntent`):
Stream sends the write's `channel.updated` echo as soon as it applies it, so the echo may be
recorded before the write's answer and bookkeeping are. An echo the intent covers is recorded as
callsync's write (the claim dated as the write dates it), is no news and wakes nothing: the
writer's task reconciles after it (its bookkeeping, its retry, or its redelivery once the lock
expires). The write's bookkeeping settles the intent (`settle_write`); an intent whose writer
died lapses `WRITE_INTENT_SECONDS` after it was made.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Literal

from worker.core import binding
from worker.core.events import CallFields, StreamEvent
from worker.core.reconcile import CLOCK_SKEW_SECONDS, Channel, claim_since
from worker.core.timebounds import stream_event_time

UNSET = CallFields(False, None)
# How long a write is in flight at most: the channel's lock is held this long for its writer
# (worker/steps/sync.py LOCK_SECONDS), and its PATCH times out well within it.
WRITE_INTENT_SECONDS = 60.0


@dataclass(frozen=True)
class WriteIntent:
    """A write callsync is about to send to a channel, recorded before its PATCH leaves."""

    fields: CallFields  # what it writes
    at: float  # callsync's clock, read before the PATCH left: the write's date
    claim_since: float | None = None  # a claim's date: the start of the session it is written for

    def in_flight(self, at: float) -> bool:
        """Whether the write may still be in flight at `at` (after that, its writer died)."""
        return at <= self.at + WRITE_INTENT_SECONDS

    def echoed_by(self, fields: CallFields | None, version: float, by_member: bool) -> bool:
        """Whether Stream showing `fields` at `version` is this write's echo: a server-side
        change to exactly these fields, stamped while the write may be in flight (Stream stamps
        it at or after the write's date; the clocks agree to CLOCK_SKEW_SECONDS)."""
        return not by_member and fields == self.fields and self.at - CLOCK_SKEW_SECONDS <= version and self.in_flight(version)

    def claim(self, previous: Channel | None) -> float | None:
        """The date of the claim the write shows over `previous` (core.reconcile.claim_since)."""
        return claim_since(previous, self.fields, self.at, written_for=self.claim_since)


@dataclass(frozen=True)
class ChannelRecord:
    """A channel's record: what it last showed, the time of that news, its pending mark, and
    the write callsync has in flight to it."""

    channel: Channel
    version: float
    pending: bool = False
    before: CallFields | None = None  # with the mark: the fields before its change (None: none)
    intent: WriteIntent | None = None  # recorded before a write leaves, settled by its bookkeeping


@dataclass(frozen=True)
class ChannelChange:
    """The outcome of recording news of a channel."""

    previous: Channel | None
    current: Channel | None
    applied: bool  # False when the news was older than what is recorded
    new_binding: bool = False  # the event bound a call to the channel that was not bound before
    pending: bool = False  # the record holds a change no completed reconcile has seen yet
    before: CallFields | None = None  # the fields before that change (or before this event)
    echo: bool = False  # the news was the echo of the write in flight (the record's intent)

    @property
    def changed(self) -> bool:
        """Whether the event changed anything a reconcile of the channel reads (the echo of the
        write in flight is callsync's own change: its writer reconciles after it)."""
        return self.new_binding or (self.applied and not self.echo and self.current != self.previous)

    @property
    def needs_reconcile(self) -> bool:
        """False only for an event that changed nothing (an echo of callsync's own write, a
        duplicate, an older event) while no earlier change waits for its reconcile, and for the
        echo of the write in flight (its writer reconciles after it, whatever is pending)."""
        return self.changed or (self.pending and not self.echo)


# "mark" for an event (marked if it changed the record), "keep" the mark as it is, "clear" it
# (a reconcile that read the record writes it), "force" it (what a reconcile read is out of date).
PendingMode = Literal["mark", "keep", "clear", "force"]


def channel_change(
    cid: str,
    record: ChannelRecord | None,
    fields: CallFields | None,
    version: float,
    exists: bool = True,
    claimed_since: float | None = None,
    pending: PendingMode = "keep",
    by_member: bool = False,
    missing_for: str | None = None,
) -> tuple[ChannelChange, ChannelRecord | None]:
    """Recording what Stream showed for `cid` at `version` over `record`: the outcome, and the
    record to write (None when something newer is recorded). `claimed_since` dates a claim
    callsync wrote itself (the start of its session). `by_member`: the news is a member's event
    (not a server-side request). `missing_for`: the live session a read that found no channel
    was made for."""
    previous = record.channel if record is not None else None
    was_pending = record is not None and record.pending
    # What the channel showed before its pending change: what a re-run judges "End call" by.
    before = record.before if record is not None and was_pending else (previous.fields if previous else None)
    if record is not None and previous is not None and version < record.version:
        if pending == "force" and not was_pending:
            return ChannelChange(previous, previous, applied=False, pending=True), replace(record, pending=True)
        return ChannelChange(previous, previous, applied=False, pending=was_pending, before=before), None
    shown = fields if exists and fields is not None else UNSET
    intent = record.intent if record is not None and record.intent is not None and record.intent.in_flight(version) else None
    echo = intent is not None and exists and intent.echoed_by(fields, version, by_member)
    if echo and intent is not None and claimed_since is None:
        claimed_since = intent.claim(previous)  # callsync's own write: dated as its bookkeeping dates it
    since = claimed_since if claimed_since is not None and shown.active else claim_since(previous, shown, version, by_member)
    current = Channel(cid, shown, exists, since, None if exists else missing_for)
    news = pending == "mark" and current != previous and not echo
    marked = pending == "force" or (pending != "clear" and (was_pending or news))
    new = ChannelRecord(current, version, marked, before if marked else None, intent)
    return ChannelChange(previous, current, applied=True, pending=marked, before=before, echo=echo), new


def settle_write(
    cid: str, read: ChannelRecord | None, current: ChannelRecord | None, fields: CallFields, intent: WriteIntent
) -> tuple[ChannelRecord | None, bool]:
    """A write's bookkeeping: Stream answered `fields` to the write `intent` that a reconcile
    recorded over `read`; the record is now `current`. Returns the record to write (None:
    leave it) and whether the channel must be reconciled again.

    Nothing since (current is read): the write is the news, dated `intent.at`, and the pending
    mark the reconcile read is cleared. Only the write's echo since (once or more): it is the
    news already, dated by Stream; the intent is settled the same way. Anything else is news the
    reconcile did not plan from: the write is recorded unless older, the intent dropped, and
    the channel reconciled again."""
    if current == read:
        _, written = channel_change(cid, read, fields, intent.at, claimed_since=intent.claim(_channel(read)), pending="clear")
        return _settled(written or read, intent), False
    if read is not None and current is not None:
        _, echoed = channel_change(cid, read, fields, current.version, pending="mark")
        if echoed == current:
            return _settled(replace(current, pending=False, before=None), intent), False
    claim = intent.claim(_channel(current))
    _, written = channel_change(cid, current, fields, intent.at, claimed_since=claim, pending="force")
    settled = _settled(written or current, intent)
    return (settled if settled != current else None), True


def _channel(record: ChannelRecord | None) -> Channel | None:
    return record.channel if record is not None else None


def _settled(record: ChannelRecord | None, intent: WriteIntent) -> ChannelRecord | None:
    """`record` without `intent` (another write's intent stays: it is its writer's to settle)."""
    if record is None or record.intent != intent:
        return record
    return replace(record, intent=None)


def drop_intent(record: ChannelRecord | None, intent: WriteIntent) -> ChannelRecord | None:
    """The record once the write `intent` failed (its writer's retry plans again): without the
    intent, so an echo of it that still comes is news; None when there is nothing to change."""
    if record is None or record.intent != intent:
        return None
    return replace(record, intent=None)


def with_intent(record: ChannelRecord | None, intent: WriteIntent) -> ChannelRecord | None:
    """The record with `intent` as the write in flight (None: nothing recorded, nothing to hold it)."""
    return replace(record, intent=intent) if record is not None else None


@dataclass(frozen=True)
class StreamNews:
    """What a Stream event says of its channel's call fields, to record."""

    cid: str
    fields: CallFields | None
    version: float  # the time that orders it (core.timebounds.stream_event_time)
    exists: bool
    binds: str | None  # the call id it binds to the channel
    by_member: bool


def stream_news(event: StreamEvent, now: float) -> StreamNews | None:
    """The news in `event` (None: it says nothing of the call fields). A deleted channel is gone
    (its fields unset); a `callId` shown binds that call to the channel."""
    assert event.cid is not None
    exists = event.type != "channel.deleted"
    if exists and event.fields is None:
        return None
    binds = event.fields.call_id if event.fields is not None and event.fields.call_id else None
    version = stream_event_time(event.created_at, now)
    return StreamNews(event.cid, event.fields, version, exists, binds, by_member=not event.from_server)


def may_settle_stream(event: StreamEvent) -> bool:
    """What `stream_settled_at_ingest` asks of the event alone: a server-side `channel.updated`
    (not a member's) of a channel, carrying its call fields."""
    return (
        event.type == "channel.updated"
        and event.cid is not None
        and event.from_server
        and event.fields is not None
        and event.fields.call_id != ""
    )


def rebinds(cid: str, call_id: str, recorded_owner: str | None, bound: Collection[str]) -> bool:
    """Whether `cid` showing `call_id` binds nothing new: the channel owns it (core.binding.owner_of
    over the recorded first binder) and has it bound already, so binding it again only moves
    the binding's time (worker/store/lua/bind_owned.lua: no new binding, no owner recorded)."""
    return binding.owner_of(call_id, recorded_owner) == cid and call_id in bound


def stream_settled_at_ingest(event: StreamEvent, record: ChannelRecord | None, now: float, rebound: bool = False) -> bool:
    """Whether recording `event` at `now` over the channel's `record` provably changes nothing
    a reconcile reads, so the receiver may record it and queue no task (docs/design.md, "The
    path of a webhook"): the echo of callsync's own write once its bookkeeping is recorded.

    A server-side `channel.updated` showing the fields the record holds, of a channel recorded
    as existing with no pending mark, a claim exactly when the call is active (a server write
    keeps its date: core.reconcile.claim_since), and no write in flight at the event's version
    (none recorded, or one whose writer died: `WriteIntent.in_flight`); the call id it shows
    (if any) bound to the channel already, which owns it (`rebound`: `rebinds`). Then
    `channel_change` gives the channel back as it is, marks nothing and wakes no reconcile,
    and the record becomes `echo_settled` (the version moved, a lapsed intent dropped).
    Anything else (a member's event, other fields, a pending change, a write in flight, its
    early echo, a new binding, a deleted or missing channel) goes to the worker.
    `worker/store/lua/settle_echo.lua` decides the same over the record in Redis.
    """
    if record is None or not may_settle_stream(event):
        return False
    news = stream_news(event, now)
    if news is None or news.fields is None or (news.binds is not None and not rebound):
        return False
    channel, intent = record.channel, record.intent
    return (
        news.exists
        and channel.exists
        and channel.missing_for is None
        and not record.pending
        and record.before is None
        and channel.fields == news.fields
        and (channel.claim_since is not None) == news.fields.active
        and (intent is None or not intent.in_flight(news.version))
    )


def echo_settled(record: ChannelRecord, version: float) -> ChannelRecord | None:
    """The record an event `stream_settled_at_ingest` settles leaves, dated `version` (None:
    the event is older than the record, and nothing is written): the same channel, the news'
    version, and no intent (it lapsed: an intent in flight is never settled)."""
    if version < record.version:
        return None
    return replace(record, version=version, intent=None)
