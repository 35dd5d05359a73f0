"""The store's codec (worker/store/codec.py): records read back as written."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from worker.core.channels import ChannelRecord, WriteIntent
from worker.core.events import CallFields
from worker.core.reconcile import Channel
from worker.core.sessions import Session
from worker.store.codec import call_from_hash, call_to_hash, record_from_hash, record_to_hash, session_to_hash

CID = "messaging:general"
times = st.floats(min_value=1.0, max_value=4e9, allow_nan=False)
call_ids = st.none() | st.text("abc-:09", min_size=1, max_size=12)
fields = st.builds(CallFields, st.booleans(), call_ids)


def as_redis(raw: dict) -> dict[bytes, bytes]:
    """A hash as redis-py reads it back."""
    return {k.encode(): str(v).encode() if not isinstance(v, bytes) else v for k, v in raw.items()}


@st.composite
def records(draw: st.DrawFn) -> ChannelRecord:
    exists = draw(st.booleans())
    shown = draw(fields)
    channel = Channel(CID, shown, exists, draw(st.none() | times), draw(st.none() | st.text("s0", min_size=1)))
    pending = draw(st.booleans())
    return ChannelRecord(channel, draw(times), pending, draw(st.none() | fields) if pending else None)


@given(records())
def test_a_channel_record_reads_back_as_written(record: ChannelRecord) -> None:
    assert record_from_hash(CID, as_redis(record_to_hash(record))) == record


intents = st.builds(WriteIntent, fields, times, st.none() | times)


@given(records(), intents)
def test_a_write_in_flight_reads_back_as_written(record: ChannelRecord, intent: WriteIntent) -> None:
    with_intent = replace(record, intent=intent)
    assert record_from_hash(CID, as_redis(record_to_hash(with_intent))) == with_intent


@given(
    st.sampled_from(["open", "ending", "closed"]),
    st.integers(0, 4_000_000_000_000),
    st.none() | times,
    st.sampled_from(["call-a:b", "Call-A:B"]),
)
def test_a_session_reads_back_as_written(status, started_ms: int, ended, name: str) -> None:
    session = Session("s1", "r1", name, status, started_ms / 1000, ended)
    assert call_from_hash(name, as_redis(session_to_hash(session))).session == session


def test_replacing_the_session_keeps_the_idle_time_and_drops_the_old_sessions_end() -> None:
    old = as_redis(session_to_hash(Session("s1", "r1", "Call-A:B", "closed", 1.0, 2.0))) | {b"idle": b"3.0"}
    new = call_to_hash(old, Session("s2", "r1", "call-a:b", "open", 4.0))
    assert new == {"r": "r1", "s": "s2", "st": "open", "t0": 4000, "idle": b"3.0"}
    assert call_to_hash({}, idle_at=5.0) == {"idle": "5.0"}
