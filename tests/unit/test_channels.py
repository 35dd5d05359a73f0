"""The channel-record rules (worker/core/channels.py): pure, over values, no Redis."""

from __future__ import annotations

from dataclasses import replace

from worker.core.channels import ChannelChange, ChannelRecord, channel_change, stream_news
from worker.core.events import CallFields, StreamEvent
from worker.core.reconcile import Channel
from worker.core.timebounds import FUTURE_SKEW_SECONDS

CID = "messaging:general"
T0 = 1_800_000_000.0
ON = CallFields(True, "call-x")
OFF = CallFields(False, None)


def recorded(fields: CallFields, version: float = T0, pending: bool = False, claim: float | None = None) -> ChannelRecord:
    return ChannelRecord(Channel(CID, fields, True, claim), version, pending, OFF if pending else None)


def test_a_first_event_is_recorded_marked_pending_and_needs_its_reconcile() -> None:
    change, new = channel_change(CID, None, ON, T0, pending="mark", by_member=True)
    assert change.applied and change.changed and change.needs_reconcile and change.previous is None
    assert new == ChannelRecord(Channel(CID, ON, True, T0), T0, pending=True, before=None)


def test_an_echo_changes_nothing_and_wakes_no_reconcile() -> None:
    record = recorded(ON, claim=T0)
    change, new = channel_change(CID, record, ON, T0 + 1, pending="mark")
    assert change.applied and not change.changed and not change.pending and not change.needs_reconcile
    assert new == replace(record, version=T0 + 1)  # the claim keeps its date under server writes


def test_an_echo_still_reconciles_while_an_earlier_change_is_pending() -> None:
    change, new = channel_change(CID, recorded(ON, pending=True, claim=T0), ON, T0 + 1, pending="mark")
    assert not change.changed and change.pending and change.needs_reconcile
    assert new is not None and new.pending and new.before == OFF and change.before == OFF


def test_an_older_event_is_not_applied_and_nothing_is_written() -> None:
    change, new = channel_change(CID, recorded(ON), OFF, T0 - 1, pending="mark")
    assert not change.applied and not change.changed and not change.needs_reconcile and new is None
    assert change.before == ON


def test_force_marks_even_an_older_write_and_clear_drops_the_mark() -> None:
    record = recorded(ON)
    change, new = channel_change(CID, record, OFF, T0 - 1, pending="force")
    assert change.pending and not change.applied and new == replace(record, pending=True)
    change, new = channel_change(CID, recorded(ON, pending=True), ON, T0 + 1, pending="clear")
    assert not change.pending and new is not None and not new.pending and new.before is None


def test_a_member_restarts_the_claim_a_server_write_keeps_it_and_callsync_dates_its_own() -> None:
    record = recorded(ON, claim=T0)
    assert channel_change(CID, record, ON, T0 + 5, by_member=True)[0].current.claim_since == T0 + 5  # type: ignore[union-attr]
    assert channel_change(CID, record, ON, T0 + 5)[0].current.claim_since == T0  # type: ignore[union-attr]
    change, _ = channel_change(CID, recorded(OFF), ON, T0 + 5, claimed_since=T0 - 60)
    assert change.current is not None and change.current.claim_since == T0 - 60
    assert channel_change(CID, record, OFF, T0 + 5)[0].current.claim_since is None  # type: ignore[union-attr]


def test_a_missing_channel_shows_no_call_and_remembers_the_session_it_was_read_for() -> None:
    change, new = channel_change(CID, recorded(ON), ON, T0 + 1, exists=False, missing_for="s1")
    assert change.current == Channel(CID, OFF, exists=False, claim_since=None, missing_for="s1")
    assert new is not None and new.channel == change.current


def test_a_new_binding_alone_is_a_change() -> None:
    assert ChannelChange(None, None, applied=False, new_binding=True).needs_reconcile
    assert not ChannelChange(None, None, applied=False).needs_reconcile


def stream(kind: str, fields: CallFields | None, created_at: float | None, from_server: bool = False) -> StreamEvent:
    return StreamEvent(kind, CID, fields, created_at, from_server, "u1")


def test_stream_news_deleted_means_gone_and_a_call_id_binds() -> None:
    news = stream_news(stream("channel.deleted", None, T0), T0)
    assert news is not None and not news.exists and news.binds is None
    news = stream_news(stream("channel.updated", ON, T0), T0)
    assert news is not None and news.exists and news.binds == "call-x" and news.by_member and news.version == T0
    assert stream_news(stream("channel.updated", None, T0), T0) is None  # says nothing of the call fields
    news = stream_news(stream("channel.updated", OFF, T0 + FUTURE_SKEW_SECONDS + 1, from_server=True), T0)
    assert news is not None and news.version == T0 and not news.by_member and news.binds is None
