"""What callsync records of a channel when Stream shows something, and whether to reconcile.

Level-triggering rests on `ChannelChange.needs_reconcile` (the echo rule): an event that changes
nothing callsync reads (an echo of its own write, a duplicate, an older event) wakes no
reconcile, unless an earlier change still waits for one (the pending mark). A record carries
that mark from the Stream event that changed it until a reconcile that read the change
completes: so a task re-run after its reconcile failed (a 429, a busy lock, a killed worker)
still reconciles, although its event now changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from worker.core.events import CallFields, StreamEvent
from worker.core.reconcile import Channel, claim_since
from worker.core.timebounds import stream_event_time

UNSET = CallFields(False, None)


@dataclass(frozen=True)
class ChannelRecord:
    """A channel's record: what it last showed, the time of that news, and its pending mark."""

    channel: Channel
    version: float
    pending: bool = False
    before: CallFields | None = None  # with the mark: the fields before its change (None: none)


@dataclass(frozen=True)
class ChannelChange:
    """The outcome of recording news of a channel."""

    previous: Channel | None
    current: Channel | None
    applied: bool  # False when the news was older than what is recorded
    new_binding: bool = False  # the event bound a call to the channel that was not bound before
    pending: bool = False  # the record holds a change no completed reconcile has seen yet
    before: CallFields | None = None  # the fields before that change (or before this event)

    @property
    def changed(self) -> bool:
        """Whether the event changed anything a reconcile of the channel reads."""
        return self.new_binding or (self.applied and self.current != self.previous)

    @property
    def needs_reconcile(self) -> bool:
        """False only for an event that changed nothing (an echo of callsync's own write, a
        duplicate, an older event) while no earlier change waits for its reconcile."""
        return self.changed or self.pending


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
    since = claimed_since if claimed_since is not None and shown.active else claim_since(previous, shown, version, by_member)
    current = Channel(cid, shown, exists, since, None if exists else missing_for)
    marked = pending == "force" or (pending != "clear" and (was_pending or (pending == "mark" and current != previous)))
    new = ChannelRecord(current, version, marked, before if marked else None)
    return ChannelChange(previous, current, applied=True, pending=marked, before=before), new


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
