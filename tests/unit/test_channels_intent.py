"""The write in flight (worker/core/channels.py `WriteIntent`, `settle_write`): an echo of
callsync's own write is callsync's write whatever the order in which the echo, the write's
answer and its bookkeeping arrive (issue 23). Pure, over values, no Redis, no mocks."""

from __future__ import annotations

from dataclasses import replace
from itertools import permutations

from worker.core.actions import Recheck, WriteFields
from worker.core.channels import (
    WRITE_INTENT_SECONDS,
    ChannelRecord,
    WriteIntent,
    channel_change,
    drop_intent,
    settle_write,
    with_intent,
)
from worker.core.events import CallFields
from worker.core.reconcile import INACTIVE, BoundCall, Channel, claim_since, plan_channel
from worker.core.sessions import Session

CID = "messaging:general"
CALL = "call-messaging:general"
START = 1_800_000_000.0  # the session's start, in whole seconds as 100ms may date it
WROTE = START + 0.241  # callsync's clock when it planned the write
ECHO = START + 0.397  # Stream's stamp of the write's echo
ON = CallFields(True, CALL)
OFF = CallFields(False, None)
GRACE = 60.0
INTENT = WriteIntent(ON, WROTE, START)


def before_write() -> ChannelRecord:
    """The channel as the reconcile read it (showing no call), with the write's intent recorded."""
    record = with_intent(ChannelRecord(Channel(CID, OFF), START - 100), INTENT)
    assert record is not None
    return record


def echo(record: ChannelRecord | None, at: float = ECHO, by_member: bool = False) -> ChannelRecord | None:
    """The echo's task: record what Stream showed (core.channels.stream_news's way)."""
    change, new = channel_change(CID, record, ON, at, pending="mark", by_member=by_member)
    assert not change.needs_reconcile or by_member
    return new or record


def closed_at_start() -> list[BoundCall]:
    """The session, closed and dated in whole seconds: its end is its start, before the echo."""
    return [BoundCall(CALL, Session("s1", "r1", CALL, "closed", START, START))]


def test_an_echo_before_the_bookkeeping_is_callsyncs_write_not_a_members_claim() -> None:
    change, new = channel_change(CID, before_write(), ON, ECHO, pending="mark")
    assert change.echo and not change.changed and not change.needs_reconcile
    assert new is not None and new.channel.claim_since == START  # the session's claim, not the echo's time
    assert not new.pending and new.intent == INTENT  # the bookkeeping settles it
    # A close dated before the echo clears the channel at once: no grace, no 100ms check.
    assert plan_channel(new.channel, closed_at_start(), ECHO + 1, GRACE) == WriteFields(INACTIVE)


def test_without_the_intent_that_echo_was_a_members_claim_waiting_on_the_grace() -> None:
    """What the issue saw: the same echo over a record that knew nothing of the write."""
    read = ChannelRecord(Channel(CID, OFF), START - 100)
    _, new = channel_change(CID, read, ON, ECHO, pending="mark")
    assert new is not None and new.channel.claim_since == ECHO
    assert isinstance(plan_channel(new.channel, closed_at_start(), ECHO + 1, GRACE), Recheck)


def test_every_order_of_echoes_and_bookkeeping_ends_in_the_same_settled_record() -> None:
    """Echo early, late or twice, around the bookkeeping: one record, nothing to reconcile."""
    outcomes = set()
    for order in set(permutations(["echo", "echo", "answer"])) | set(permutations(["echo", "answer"])) | {("answer",)}:
        read = before_write()
        record: ChannelRecord | None = read
        again = False
        for step in order:
            if step == "echo":
                record = echo(record)
            else:
                settled, again = settle_write(CID, read, record, ON, INTENT)
                record = settled or record
        assert record is not None and not again, order
        assert record.intent is None and not record.pending, order
        assert record.channel.fields == ON and record.channel.claim_since == START, order
        assert plan_channel(record.channel, closed_at_start(), ECHO + 1, GRACE) == WriteFields(INACTIVE), order
        outcomes.add(record.channel)
    assert len(outcomes) == 1


def test_a_members_claim_is_never_an_echo() -> None:
    """A member's event showing the very fields callsync writes, while the write is in flight,
    is a claim of its own (dated then), and news the write was not planned from."""
    read = before_write()
    change, new = channel_change(CID, read, ON, ECHO, pending="mark", by_member=True)
    assert not change.echo and change.needs_reconcile
    assert new is not None and new.channel.claim_since == ECHO and new.pending
    # Callsync's echo after it keeps the member's claim date: the same call stays claimed.
    later = echo(new, ECHO + 0.1)
    assert later is not None and later.channel.claim_since == ECHO
    settled, again = settle_write(CID, read, later, ON, INTENT)
    assert again and settled is not None and settled.intent is None and settled.pending
    assert settled.channel.claim_since == ECHO


def test_other_news_while_in_flight_is_reconciled_after_the_write() -> None:
    """A client turned the call off after callsync's write landed: the write's bookkeeping
    keeps that newer news and asks for a reconcile (as before the intent existed)."""
    read = before_write()
    _, news = channel_change(CID, echo(read), OFF, ECHO + 1, pending="mark", by_member=True)
    settled, again = settle_write(CID, read, news, ON, INTENT)
    assert again and settled is not None and settled.channel.fields == OFF and settled.intent is None


def test_an_echo_needs_the_written_fields_a_server_request_and_the_writes_time() -> None:
    assert INTENT.echoed_by(ON, ECHO, by_member=False)
    assert not INTENT.echoed_by(OFF, ECHO, by_member=False)
    assert not INTENT.echoed_by(CallFields(True, "call-other"), ECHO, by_member=False)
    assert not INTENT.echoed_by(ON, ECHO, by_member=True)
    assert not INTENT.echoed_by(ON, WROTE - 10, by_member=False)  # stamped long before the write
    assert not INTENT.echoed_by(ON, WROTE + WRITE_INTENT_SECONDS + 1, by_member=False)  # its writer died


def test_an_intent_whose_writer_died_lapses() -> None:
    """Past the bound, the same fields from the server are news, and the record forgets it."""
    late = WROTE + WRITE_INTENT_SECONDS + 1
    change, new = channel_change(CID, before_write(), ON, late, pending="mark")
    assert not change.echo and change.needs_reconcile
    assert new is not None and new.intent is None and new.channel.claim_since == late


def test_a_failed_write_drops_only_its_own_intent() -> None:
    read = before_write()
    dropped = drop_intent(read, INTENT)
    assert dropped is not None and dropped.intent is None
    assert drop_intent(read, replace(INTENT, at=WROTE + 1)) is None  # another write's: left to its writer
    assert drop_intent(None, INTENT) is None
    # Once dropped, an echo of it that still comes is news again (its reconcile judges it).
    change, _ = channel_change(CID, dropped, ON, ECHO, pending="mark")
    assert change.needs_reconcile and not change.echo


def test_a_clear_is_an_echo_too() -> None:
    """An intent to clear: its echo wakes nothing and dates no claim."""
    showing = ChannelRecord(Channel(CID, ON, True, START), START)
    intent = WriteIntent(INACTIVE, WROTE)
    record = with_intent(showing, intent)
    change, new = channel_change(CID, record, OFF, ECHO, pending="mark")
    assert change.echo and not change.needs_reconcile
    assert new is not None and new.channel.claim_since is None
    settled, again = settle_write(CID, record, new, OFF, intent)
    assert not again and settled is not None and settled.intent is None and settled.version == ECHO


def test_claim_since_dates_callsyncs_own_new_claim_by_its_session() -> None:
    assert claim_since(Channel(CID, OFF), ON, ECHO, written_for=START) == START
    assert claim_since(Channel(CID, ON, True, START - 5), ON, ECHO, written_for=START) == START - 5  # kept
    assert claim_since(Channel(CID, OFF), ON, ECHO, by_member=True, written_for=START) == ECHO
    assert claim_since(Channel(CID, OFF), OFF, ECHO, written_for=START) is None
