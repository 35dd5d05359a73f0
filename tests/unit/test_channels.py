"""The channel-record rules (worker/core/channels.py): pure, over values, no Redis."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.channels import (
    WRITE_INTENT_SECONDS,
    ChannelChange,
    ChannelRecord,
    WriteIntent,
    channel_change,
    echo_settled,
    rebinds,
    stream_news,
    stream_settled_at_ingest,
)
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


# --- settling an echo at ingest (stream_settled_at_ingest) ---------------------------------
NAMED = "call-messaging:general"  # the reference form: messaging:general owns it
NAMED_ON = CallFields(True, NAMED)


def echo(fields: CallFields | None, created_at: float | None = T0 + 1, kind: str = "channel.updated") -> StreamEvent:
    return StreamEvent(kind, CID, fields, created_at, True, None)


def written(fields: CallFields, version: float = T0, intent: WriteIntent | None = None) -> ChannelRecord:
    """The record once callsync's write of `fields` is booked (a claim dated when active)."""
    return ChannelRecord(Channel(CID, fields, True, T0 - 5 if fields.active else None), version, intent=intent)


def test_the_echo_of_a_booked_write_is_settled_and_only_moves_the_version() -> None:
    record = written(NAMED_ON)
    assert stream_settled_at_ingest(echo(NAMED_ON), record, T0 + 2, rebound=True)
    assert echo_settled(record, T0 + 1) == replace(record, version=T0 + 1)
    assert stream_settled_at_ingest(echo(OFF), written(OFF), T0 + 2)  # no call id: nothing to bind
    assert stream_settled_at_ingest(echo(NAMED_ON, created_at=T0 - 1), record, T0 + 2, rebound=True)  # older
    assert echo_settled(record, T0 - 1) is None  # older: nothing written


def test_what_may_change_something_goes_to_the_worker() -> None:
    record = written(NAMED_ON)
    assert not stream_settled_at_ingest(echo(NAMED_ON), record, T0 + 2, rebound=False)  # a binding to make
    assert not stream_settled_at_ingest(echo(NAMED_ON), None, T0 + 2, rebound=True)  # nothing recorded
    assert not stream_settled_at_ingest(echo(OFF), record, T0 + 2)  # other fields
    member = replace(echo(NAMED_ON), from_server=False)
    assert not stream_settled_at_ingest(member, record, T0 + 2, rebound=True)  # a member's claim restarts it
    assert not stream_settled_at_ingest(echo(NAMED_ON, kind="channel.created"), record, T0 + 2, rebound=True)
    assert not stream_settled_at_ingest(echo(None, kind="channel.deleted"), record, T0 + 2)
    assert not stream_settled_at_ingest(echo(None), record, T0 + 2)  # no channel object
    pending = replace(record, pending=True, before=OFF)
    assert not stream_settled_at_ingest(echo(NAMED_ON), pending, T0 + 2, rebound=True)  # a reconcile owed
    undated = replace(record, channel=replace(record.channel, claim_since=None))
    assert not stream_settled_at_ingest(echo(NAMED_ON), undated, T0 + 2, rebound=True)  # the echo would date the claim
    missing = replace(record, channel=Channel(CID, OFF, False, None, "s1"))
    assert not stream_settled_at_ingest(echo(OFF), missing, T0 + 2)  # recorded missing: now it exists


def test_an_echo_while_a_write_is_in_flight_goes_to_the_worker_and_a_lapsed_intent_is_dropped() -> None:
    in_flight = written(OFF, intent=WriteIntent(NAMED_ON, T0 + 0.5, T0))
    assert not stream_settled_at_ingest(echo(OFF), in_flight, T0 + 2)  # its writer books after it
    assert not stream_settled_at_ingest(echo(NAMED_ON), in_flight, T0 + 2, rebound=True)  # the early echo
    edge = written(OFF, intent=WriteIntent(NAMED_ON, T0 + 1 - WRITE_INTENT_SECONDS))
    assert not stream_settled_at_ingest(echo(OFF), edge, T0 + 2)  # still in flight at the event's version
    lapsed = written(OFF, intent=WriteIntent(NAMED_ON, T0 - WRITE_INTENT_SECONDS - 1))
    assert stream_settled_at_ingest(echo(OFF), lapsed, T0 + 2)  # its writer died
    assert echo_settled(lapsed, T0 + 1) == replace(lapsed, version=T0 + 1, intent=None)


def test_rebinds_only_a_call_the_channel_owns_and_has_bound() -> None:
    assert rebinds(CID, NAMED, None, {NAMED})
    assert not rebinds(CID, NAMED, None, set())  # not bound yet: a new binding
    assert not rebinds(CID, "call-messaging:other", None, {"call-messaging:other"})  # another channel's
    assert rebinds(CID, "standup", CID, {"standup"})  # a free-form id it bound first
    assert not rebinds(CID, "standup", None, {"standup"})  # no owner recorded: this would record it
    assert not rebinds(CID, "standup", "messaging:other", {"standup"})


call_fields = st.builds(CallFields, st.booleans(), st.sampled_from([None, NAMED, "standup"]))
times = st.sampled_from([T0 - 61, T0 - 59, T0 - 1, T0, T0 + 0.5, T0 + 1, T0 + 3600])
any_events = st.builds(
    StreamEvent,
    st.sampled_from(["channel.updated", "channel.created", "channel.deleted"]),
    st.just(CID),
    st.none() | call_fields,
    st.none() | times,
    st.booleans(),
    st.none() | st.just("u1"),
)
echoes = st.builds(
    StreamEvent, st.just("channel.updated"), st.just(CID), call_fields, st.none() | times, st.just(True), st.none()
)
events = echoes | echoes | echoes | any_events  # mostly what an echo is, else anything


@st.composite
def near(draw: st.DrawFn, event: StreamEvent) -> ChannelRecord:
    """A record the event may settle (its fields, a claim when active, nothing pending, no
    write in flight), then often one thing of it changed: so both sides of each condition of
    the rule are explored."""
    fields = event.fields if event.fields is not None else draw(call_fields)
    intent = draw(st.none() | st.builds(WriteIntent, call_fields, st.just(T0 - 61), st.none() | times))
    record = ChannelRecord(Channel(CID, fields, True, T0 - 5 if fields.active else None), draw(times), intent=intent)
    channel = record.channel
    changes = [
        lambda: replace(record, channel=replace(channel, fields=draw(call_fields))),
        lambda: replace(record, channel=replace(channel, claim_since=draw(st.none() | times))),
        lambda: replace(record, pending=True, before=draw(st.none() | call_fields)),
        lambda: replace(record, before=draw(call_fields)),
        lambda: replace(record, channel=replace(channel, exists=False, missing_for=draw(st.none() | st.just("s1")))),
        lambda: replace(record, channel=replace(channel, missing_for="s1")),
        lambda: replace(record, intent=draw(st.builds(WriteIntent, call_fields, times, st.none() | times))),
    ]
    change = draw(st.none() | st.sampled_from(changes))
    return record if change is None else change()


@settings(max_examples=1000)
@given(st.data(), events, st.sampled_from([True, True, True, False]))
def test_a_settled_event_changes_nothing_a_reconcile_reads_and_leaves_echo_settled(
    data: st.DataObject, event: StreamEvent, rebound: bool
) -> None:
    """Whatever the record and the event: when the rule settles it, recording it the worker's
    way (core.channels.channel_change, as state.py record_stream_event calls it) wakes no
    reconcile, marks nothing and writes exactly `echo_settled` (None: nothing)."""
    record, now = data.draw(near(event)), T0 + 2
    if not stream_settled_at_ingest(event, record, now, rebound):
        return
    news = stream_news(event, now)
    assert news is not None and news.exists and not news.by_member
    change, new = channel_change(CID, record, news.fields, news.version, news.exists, pending="mark", by_member=news.by_member)
    assert not change.needs_reconcile and not change.pending and not change.echo
    assert new == echo_settled(record, news.version)
