"""The resync's decisions (docs/behaviour.md, rule 12): what a read from a platform is recorded as,
which channels it skips or reconciles, how it pages and what its reads may cost.

Kubernetes informers' resync is the model: what the resync reads is fed through the same record
step as the event that would have said it, so nothing here repairs anything: the reconcile the
read wakes does, through the normal path. A resync never ends a room: it records what it reads
as server-side news, which rule 3 never takes for a member's End call.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from worker.core.actions import ChannelStep
from worker.core.channels import ChannelChange, ChannelRecord
from worker.core.events import CallFields, StreamEvent

# Stream's rate-limit table: Query Channels 10,000 a minute per app (getstream.io/chat/docs,
# "Rate limits"; per app, per endpoint, per platform), and a per-second cap of a thirtieth of it.
STREAM_QUERY_CHANNELS_PER_MINUTE = 10_000
# QueryChannels pages: `limit` at most 30 channels, `offset` at most 1000 (Stream's SDKs document
# both: GetStream/stream-chat-flutter channel_list_view.dart "limit: the number of channels to
# return (max is 30) / offset: the offset (max is 1000)"; GetStream/stream-chat-unreal
# FPaginationOptions). So a list of every channel pages by `created_at`, not by offset.
QUERY_CHANNELS_PAGE = 30
QUERY_CHANNELS_MAX_OFFSET = 1000
# 100ms's GET /v2/sessions: `limit` 10 to 100, `start` = the `last` of the previous answer
# (100mslive/100ms-docs, server-side/v2/api-reference/Sessions/list-sessions.mdx).
SESSIONS_PAGE = 100

Mode = Literal["bound", "full"]
Layout = Literal["top-level", "nested"]


def reads_per_minute(percent: int) -> int:
    """The resync's share of Stream's QueryChannels quota, in calls a minute (at least one)."""
    return max(1, math.floor(STREAM_QUERY_CHANNELS_PER_MINUTE * percent / 100))


def floor_seconds(channels: int, per_minute: int) -> float:
    """The least time reading `channels` channels can take at `per_minute` QueryChannels calls."""
    return math.ceil(channels / QUERY_CHANNELS_PAGE) * 60.0 / per_minute


# --- Stream ---------------------------------------------------------------------------------
def bound_query(cids: list[str]) -> dict[str, Any]:
    """QueryChannels for channels callsync recorded as bound: one page of at most 30 cids."""
    assert 0 < len(cids) <= QUERY_CHANNELS_PAGE
    return _query({"cid": {"$in": cids}}, limit=len(cids))


@dataclass(frozen=True)
class FullCursor:
    """Where a full resync's list of channels goes on: after `created_at` (Stream's string, which
    sorts as time), past the `seen` channels created at that very instant (ties share it)."""

    created_at: str | None = None
    seen: tuple[str, ...] = ()


def full_query(layout: Layout, prefix: str, cursor: FullCursor) -> dict[str, Any]:
    """QueryChannels for the next page of a full resync. Top-level fields: only channels showing a
    call (`callActive: true`, a filter Stream supports). Nested `data.` fields: Stream cannot filter
    inside a custom object (a Stream maintainer, GetStream/stream-chat-flutter#1184), so every
    channel, oldest first. Either way ordered by `created_at` and paged from the cursor, since an
    offset stops at 1000."""
    conditions: dict[str, Any] = {}
    if layout == "top-level":
        conditions[f"{prefix}callActive"] = True
    if cursor.created_at is not None:
        conditions["created_at"] = {"$gte": cursor.created_at}
    if not conditions:
        conditions = {}  # no filter at all matches every channel (Stream's QueryChannels docs)
    offset = min(len(cursor.seen), QUERY_CHANNELS_MAX_OFFSET)
    return _query(conditions, limit=QUERY_CHANNELS_PAGE, offset=offset, sort=[{"field": "created_at", "direction": 1}])


def next_cursor(cursor: FullCursor, page: list[tuple[str, str]]) -> FullCursor | None:
    """The cursor after a page of (cid, created_at), None when the list is over (a short page).
    Ties at the page's last instant are carried, so `$gte` with their count as offset goes on past them."""
    if len(page) < QUERY_CHANNELS_PAGE:
        return None
    last = page[-1][1]
    tied = tuple(cid for cid, at in page if at == last)
    seen = cursor.seen + tied if last == cursor.created_at else tied
    if len(seen) > QUERY_CHANNELS_MAX_OFFSET:  # more ties than an offset reaches: skip past that instant
        return FullCursor(last + "\x7f", ())
    return FullCursor(last, seen)


def _query(conditions: dict[str, Any], limit: int, offset: int = 0, sort: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filter_conditions": conditions,
        "state": True,
        "watch": False,
        "presence": False,
        "limit": limit,
        "member_limit": 0,
        "message_limit": 0,
    }
    if offset:
        body["offset"] = offset
    if sort:
        body["sort"] = sort
    return body


def read_as_event(cid: str, fields: CallFields | None, at: float) -> StreamEvent:
    """What the resync read of a channel (None: Stream has no such channel), as the Stream event
    that would have told it: server-side (so no End call, rule 3), dated `at`, callsync's clock
    read before the read left (a change Stream applied after that is newer)."""
    if fields is None:
        return StreamEvent("channel.deleted", cid, None, at, from_server=True, user_id=None)
    return StreamEvent("channel.updated", cid, fields, at, from_server=True, user_id=None)


def skips(record: ChannelRecord | None, now: float) -> bool:
    """A channel with a write of callsync's in flight is not recorded from a read: the read may
    predate the write's landing (docs/design.md, "The write in flight"); the write's bookkeeping
    reconciles it if it moved, and the next resync reads it again."""
    return record is not None and record.intent is not None and record.intent.in_flight(now)


def wants_reconcile(change: ChannelChange, step: ChannelStep) -> bool:
    """Whether to schedule the channel's reconcile: the read was news, or the channel is not what
    recorded state says it should show (a reconcile lost with its task, a Redis lost)."""
    return change.needs_reconcile or step is not None


# --- 100ms ------------------------------------------------------------------------------------
def sessions_params(start: str | None) -> dict[str, str | int]:
    """GET /v2/sessions: the live ones, a page from `start` (None: the first)."""
    params: dict[str, str | int] = {"active": "true", "limit": SESSIONS_PAGE}
    if start:
        params["start"] = start
    return params


def sessions_next(page_size: int, last: object) -> str | None:
    """The next page's `start`, or None: how `last` reads on the final page is not documented, so a
    short page, an empty one or no `last` ends the list."""
    if page_size < SESSIONS_PAGE or not isinstance(last, str) or not last:
        return None
    return last


def absent(recorded_open: Iterable[str], live: set[str]) -> list[str]:
    """Calls recorded open whose room 100ms did not list live: each is confirmed before it is closed."""
    return [call_id for call_id in recorded_open if call_id not in live]


# --- the outcome ----------------------------------------------------------------------------
OUTCOMES = ("adopted", "closed", "recorded", "reconciles", "skipped", "unchanged")


@dataclass
class Tally:
    """What one resync found and did, by outcome (the metric's label) and as figures."""

    mode: Mode = "bound"
    sessions_listed: int = 0
    channels_read: int = 0
    stream_calls: int = 0
    hms_calls: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "sessions_listed": self.sessions_listed,
            "channels_read": self.channels_read,
            "stream_calls": self.stream_calls,
            "hms_calls": self.hms_calls,
            **self.counts,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Tally:
        tally = cls(mode="full" if raw.get("mode") == "full" else "bound")
        for name in ("sessions_listed", "channels_read", "stream_calls", "hms_calls"):
            setattr(tally, name, int(raw.get(name, 0)))
        tally.counts = {k: int(raw.get(k, 0)) for k in OUTCOMES}
        return tally
