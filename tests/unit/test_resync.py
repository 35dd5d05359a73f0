"""worker/core/resync.py: what the resync reads is recorded as, what it skips, how it pages."""

from __future__ import annotations

from worker.core import resync
from worker.core.actions import ReadChannel
from worker.core.channels import ChannelChange, ChannelRecord, WriteIntent, channel_change
from worker.core.events import CallFields
from worker.core.reconcile import Channel, call_id_turned_off_by_client

CID = "messaging:general"
LIVE = CallFields(True, "call-messaging:general")
OFF = CallFields(False, None)


def test_a_read_is_a_server_side_event_dated_by_callsyncs_clock():
    event = resync.read_as_event(CID, OFF, 100.0)
    assert event.from_server and event.created_at == 100.0 and event.type == "channel.updated"
    # So rule 3 never takes it for a member's End call: a resync ends no room.
    assert call_id_turned_off_by_client(LIVE, OFF, event.from_server) is None
    assert resync.read_as_event(CID, None, 5.0).type == "channel.deleted"


def test_a_channel_with_a_write_in_flight_is_skipped_until_the_intent_lapses():
    record = ChannelRecord(Channel(CID, OFF), 10.0, intent=WriteIntent(LIVE, 50.0))
    assert resync.skips(record, 60.0)
    assert not resync.skips(record, 50.0 + 61.0)
    assert not resync.skips(ChannelRecord(Channel(CID, OFF), 10.0), 60.0)
    assert not resync.skips(None, 60.0)


def test_reconcile_when_the_read_was_news_or_the_channel_is_not_as_it_should_be():
    change, _ = channel_change(CID, None, LIVE, 1.0, pending="mark")
    assert resync.wants_reconcile(change, None)
    same = ChannelChange(Channel(CID, LIVE), Channel(CID, LIVE), applied=True)
    assert not resync.wants_reconcile(same, None)
    assert resync.wants_reconcile(same, ReadChannel())


def test_bound_pages_ask_for_at_most_30_cids():
    body = resync.bound_query([f"m:{n}" for n in range(30)])
    assert body["filter_conditions"] == {"cid": {"$in": [f"m:{n}" for n in range(30)]}}
    assert body["limit"] == 30 and body["watch"] is False


def test_the_full_pass_filters_on_callactive_only_with_top_level_fields():
    top = resync.full_query("top-level", "", resync.FullCursor())
    assert top["filter_conditions"] == {"callActive": True}
    nested = resync.full_query("nested", "data.", resync.FullCursor())
    assert nested["filter_conditions"] == {}  # no filter reaches inside `data`
    assert nested["sort"] == [{"field": "created_at", "direction": 1}] and nested["limit"] == 30


def test_the_full_pass_pages_by_created_at_past_ties():
    page = [(f"m:{n}", "2026-01-01T00:00:00.000001Z") for n in range(28)] + [("m:a", "t2"), ("m:b", "t2")]
    cursor = resync.next_cursor(resync.FullCursor(), page)
    assert cursor == resync.FullCursor("t2", ("m:a", "m:b"))
    body = resync.full_query("nested", "data.", cursor)
    assert body["filter_conditions"] == {"created_at": {"$gte": "t2"}} and body["offset"] == 2
    # A page all at the same instant adds its channels to the ties carried.
    again = resync.next_cursor(cursor, [(f"x:{n}", "t2") for n in range(30)])
    assert again is not None and len(again.seen) == 32 and again.created_at == "t2"
    assert resync.next_cursor(cursor, page[:5]) is None  # a short page ends the list


def test_ties_past_the_offset_cap_skip_that_instant():
    cursor = resync.FullCursor("t", tuple(f"m:{n}" for n in range(resync.QUERY_CHANNELS_MAX_OFFSET - 10)))
    after = resync.next_cursor(cursor, [(f"y:{n}", "t") for n in range(30)])
    assert after is not None and after.seen == () and after.created_at > "t"


def test_100ms_sessions_page_from_last_and_stop_on_a_short_page():
    assert resync.sessions_params(None) == {"active": "true", "limit": 100}
    assert resync.sessions_params("abc")["start"] == "abc"
    assert resync.sessions_next(100, "abc") == "abc"
    assert resync.sessions_next(99, "abc") is None
    assert resync.sessions_next(100, None) is None
    assert resync.absent(["a", "b", "c"], {"b"}) == ["a", "c"]


def test_the_read_budget_and_its_floor():
    assert resync.reads_per_minute(20) == 2000
    assert resync.reads_per_minute(100) == 10_000
    # 100k bound channels at 2,000 calls a minute: 3,334 pages, 100 s a minute's worth each.
    assert round(resync.floor_seconds(100_000, 2000)) == 100
    assert resync.floor_seconds(10_000, 10_000) == 334 * 60 / 10_000


def test_the_tally_round_trips():
    tally = resync.Tally(mode="full", channels_read=3)
    tally.add("recorded", 2)
    again = resync.Tally.from_dict(tally.as_dict())
    assert again.as_dict() == tally.as_dict()
