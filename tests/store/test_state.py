"""The call records and the open-session index in Redis (fakeredis, and real Redis in CI)."""

from __future__ import annotations

import pytest

from tests.support.state import record_hms_event, recorded_channel
from worker.core.events import HmsEvent
from worker.store.keys import BUCKET_SECONDS, CLOSED_TTL, OPEN_BUCKETS, bucket_key, bucket_of, call_key, lock_key
from worker.store.state import State

T0 = 1_800_000_000.0


def hms(kind: str, name: str, session: str, started: float, at: float | None = None) -> HmsEvent:
    return HmsEvent(f"{kind}:{session}", kind, f"room-of-{name}", name, session, started, at or started, False)


def open_(state: State, name: str, session: str, started: float) -> None:
    record_hms_event(state, hms("session.open.success", name, session, started), started)


def close(state: State, name: str, session: str, started: float, at: float) -> None:
    record_hms_event(state, hms("session.close.success", name, session, started, at), at)


def index(state: State) -> dict[int, set[str]]:
    """The whole open index: bucket → members (and every bucket listed is non-empty)."""
    buckets = [int(b) for b in state.redis.zrange(OPEN_BUCKETS, 0, -1)]
    return {b: {m.decode() for m in state.redis.smembers(bucket_key(b))} for b in buckets if state.redis.exists(bucket_key(b))}


@pytest.fixture
def state(redis_client) -> State:
    return State(redis_client)


def test_an_open_session_is_indexed_by_start_and_kept_without_expiry(state):
    open_(state, "call-a:b", "s1", T0)
    assert index(state) == {bucket_of(T0): {"call-a:b"}}
    assert state.redis.ttl(call_key("call-a:b")) == -1
    assert state.open_summary() == (1, T0)


def test_a_close_leaves_the_index_and_the_record_expires(state):
    open_(state, "call-a:b", "s1", T0)
    close(state, "call-a:b", "s1", T0, T0 + 60)
    assert index(state) == {}
    assert 0 < state.redis.ttl(call_key("call-a:b")) <= CLOSED_TTL
    assert state.call("call-a:b").session.status == "closed"
    assert state.open_summary() == (0, None)


def test_a_newer_session_replaces_the_older_in_the_index(state):
    open_(state, "call-a:b", "s1", T0)
    open_(state, "call-a:b", "s2", T0 + 3 * BUCKET_SECONDS)  # s1's close was lost
    assert index(state) == {bucket_of(T0 + 3 * BUCKET_SECONDS): {"call-a:b"}}
    open_(state, "call-a:b", "s1", T0)  # a late duplicate of the older open changes nothing
    assert state.call("call-a:b").session.session_id == "s2"
    assert index(state) == {bucket_of(T0 + 3 * BUCKET_SECONDS): {"call-a:b"}}


def test_a_real_start_time_moves_an_estimated_one_in_the_index(state):
    record_hms_event(state, hms("peer.join.success", "call-a:b", "s1", started=None, at=T0 + 100), T0 + 100)  # type: ignore[arg-type]
    open_(state, "call-a:b", "s1", T0)
    assert index(state) == {bucket_of(T0): {"call-a:b"}}


def test_a_call_is_keyed_by_its_exact_id_and_a_derived_room_by_the_id_it_encodes(state):
    open_(state, "call-messaging:General", "s1", T0)
    assert state.call("call-messaging:general").session is None  # another case is another call
    assert state.call("call-messaging:General").session.room_name == "call-messaging:General"
    open_(state, "call-messaging:general--cs0", "s2", T0)  # the derived room of call-messaging:general
    derived = state.call("call-messaging:general").session
    assert derived.session_id == "s2" and derived.room_name == "call-messaging:general--cs0"
    moved = sorted(state.claim_overdue(T0, 10, T0 + 1))
    assert moved == [("call-messaging:General", "s1"), ("call-messaging:general", "s2")]  # call ids, not room names


def test_rooms_without_a_call_id_name_are_not_recorded(state):
    assert record_hms_event(state, HmsEvent("e", "session.open.success", "r", None, "s1", T0, T0, False), T0) is None
    assert state.redis.dbsize() == 0


def test_claim_takes_only_sessions_past_the_cutoff_even_within_a_bucket(state):
    open_(state, "call-a:1", "s1", T0)
    open_(state, "call-a:2", "s2", T0 + 1)  # same bucket, one second later
    assert bucket_of(T0) == bucket_of(T0 + 1)
    assert state.claim_overdue(T0, 10, T0 + 5) == [("call-a:1", "s1")]
    assert state.call("call-a:1").session.status == "ending"
    assert index(state) == {bucket_of(T0): {"call-a:2"}}
    assert state.claim_overdue(T0, 10, T0 + 5) == []  # a second claimant gets nothing


def test_claim_pages_and_drops_emptied_buckets(state):
    for n in range(25):
        open_(state, f"call-a:{n}", f"s{n}", T0 + n)
    first = state.claim_overdue(T0 + 100, 10, T0 + 200)
    rest = state.claim_overdue(T0 + 100, 100, T0 + 200)
    assert len(first) == 10 and len(rest) == 15 and not set(first) & set(rest)
    assert state.redis.zcard(OPEN_BUCKETS) == 0


def test_open_page_walks_every_open_call_once_in_start_order(state):
    names = [f"call-a:{n:02d}" for n in range(30)]
    for n, name in enumerate(names):
        open_(state, name, f"s{n}", T0 + n * 3)
    seen, cursor = [], None
    while page := state.open_page(cursor, 7):
        assert len(page) <= 7
        seen += [name for _, name in page]
        cursor = page[-1]
    assert seen == names


def test_begin_ending_moves_only_the_current_open_session_once(state):
    open_(state, "call-a:b", "s1", T0)
    assert state.begin_ending("call-a:b", "s0", T0 + 1) is None  # not the current session
    assert state.begin_ending("call-a:b", "s1", T0 + 1).status == "ending"
    assert state.begin_ending("call-a:b", "s1", T0 + 2) is None
    assert index(state) == {}


def test_confirm_idle_never_puts_an_expiry_on_an_open_record(state):
    open_(state, "call-a:b", "s1", T0)
    state.confirm_idle("call-a:b", T0 + 5)
    assert state.redis.ttl(call_key("call-a:b")) == -1
    state.confirm_idle("call-x:y", T0 + 5)
    assert 0 < state.redis.ttl(call_key("call-x:y")) <= CLOSED_TTL
    assert state.call("call-x:y").idle_confirmed_at == T0 + 5


def test_open_page_resumes_after_its_cursor_bucket_emptied(state):
    open_(state, "call-a:1", "s1", T0)
    open_(state, "call-a:2", "s2", T0 + 3 * BUCKET_SECONDS)
    [cursor] = state.open_page(None, 1)
    close(state, "call-a:1", "s1", T0, T0 + 60)
    state.claim_overdue(T0 - 1, 10, T0 + 60)  # drops the emptied bucket
    assert state.open_page(cursor, 5) == [(bucket_of(T0 + 3 * BUCKET_SECONDS), "call-a:2")]


CID = "messaging:general"


def test_load_takes_the_lock_with_the_read_and_sees_the_default_call(state):
    open_(state, "call-messaging:general", "s1", T0)
    state.bind(CID, "Other-Room", T0)
    loaded = state.load(CID, lock=("token-1", 5.0))
    assert loaded is not None and loaded.raw == {} and loaded.channel.fields is None
    assert sorted(c.call_id for c in loaded.calls) == ["Other-Room", "call-messaging:general"]
    assert [c.session.session_id for c in loaded.calls if c.session] == ["s1"]
    assert state.load(CID, lock=("token-2", 5.0)) is None  # held
    assert state.load(CID) is not None  # a read without the lock always answers
    state.unlock(CID, "token-2")  # not the holder: nothing happens
    assert state.load(CID, lock=("token-3", 5.0)) is None
    state.unlock(CID, "token-1")
    assert state.load(CID, lock=("token-3", 5.0)) is not None


def test_the_holders_own_token_takes_the_lock_back_for_a_full_lock_time(state):
    # A task's token is its id: its retry or redelivery takes back what an earlier run left.
    assert state.load(CID, lock=("task-1", 5.0)) is not None
    state.redis.pexpire(lock_key(CID), 100)  # nearly run out
    assert state.load(CID, lock=("task-1", 5.0)) is not None
    assert state.redis.pttl(lock_key(CID)) > 4000
    assert state.load(CID, lock=("task-2", 5.0)) is None


def test_a_call_of_another_channel_is_never_among_a_channels_calls(state):
    assert state.bind("messaging:other", "standup", T0).owned
    assert not state.bind(CID, "standup", T0 + 1).owned  # another channel bound it first
    assert not state.bind(CID, "call-messaging:General", T0 + 1).owned  # it names messaging:General
    assert state.bind(CID, "CALL-messaging:general", T0 + 1).owned  # a free-form id (no `call-` form) nobody bound
    loaded = state.load(CID)
    assert loaded is not None and [c.call_id for c in loaded.calls] == ["CALL-messaging:general", "call-messaging:general"]


def test_a_write_is_recorded_only_over_the_record_it_read_and_releases_the_lock(state):
    from worker.core.channels import channel_change
    from worker.core.events import CallFields
    from worker.store.keys import channel_key

    state.record_channel(CID, CallFields(False, None), T0)
    loaded = state.load(CID, lock=("writer", 30.0))
    read = loaded.raw
    _, record = channel_change(CID, loaded.record, CallFields(True, "call-x"), T0 + 1, claimed_since=T0)
    assert state.record_write(CID, read, record, "writer") is True
    assert recorded_channel(state, CID).fields == CallFields(True, "call-x") and recorded_channel(state, CID).claim_since == T0
    assert state.redis.ttl(channel_key(CID)) > 0
    assert state.lock_left(CID) is None
    # Something else recorded the channel since `read`: the compare fails and nothing is written.
    state.load(CID, lock=("writer", 30.0))
    _, stale = channel_change(CID, loaded.record, CallFields(False, None), T0 + 2)
    assert state.record_write(CID, read, stale, "writer") is False
    assert recorded_channel(state, CID).fields == CallFields(True, "call-x")
    assert state.lock_left(CID) is None
    # Nothing to settle: the lock alone is released, and the write counts as planned.
    state.load(CID, lock=("writer", 30.0))
    assert state.record_write(CID, read, None, "writer") is True and state.lock_left(CID) is None


def test_an_event_that_changes_nothing_says_so(state):
    from worker.core.events import CallFields, StreamEvent

    def event(version: float, active: bool) -> StreamEvent:
        fields = CallFields(active, "call-x" if active else None)
        return StreamEvent("channel.updated", CID, fields, version, False, "u1")

    first, bound = state.record_stream_event(event(T0, True), T0)
    assert first.changed and first.new_binding and bound is not None and bound.first
    again, _ = state.record_stream_event(event(T0, True), T0)  # the same again (a duplicate)
    assert again.applied and not again.changed
    older, _ = state.record_stream_event(event(T0 - 5, False), T0)
    assert not older.applied and not older.changed
    assert state.record_stream_event(event(T0 + 1, False), T0)[0].changed


def test_a_change_stays_pending_until_a_reconcile_that_read_it_finishes(state):
    from worker.core.events import CallFields, StreamEvent

    def event(version: float, call_id: str | None) -> StreamEvent:
        return StreamEvent("channel.updated", CID, CallFields(call_id is not None, call_id), version, False, "u1")

    assert state.record_stream_event(event(T0, "call-x"), T0)[0].pending
    again, _ = state.record_stream_event(event(T0, "call-x"), T0)
    assert not again.changed and again.pending and again.needs_reconcile  # its reconcile has not run
    state.record_channel(CID, CallFields(True, "call-x"), T0)  # a reconcile's read of Stream keeps the mark
    assert state.load(CID).raw.get(b"p") == b"1"
    seen = state.load(CID, lock=("t", 5.0))
    state.record_stream_event(event(T0 + 1, "call-y"), T0)  # a change the reconcile did not read
    state.finish(CID, "t", seen)
    assert state.load(CID).raw.get(b"p") == b"1" and state.load(CID, lock=("u", 5.0)) is not None  # kept; unlocked
    state.finish(CID, "u", state.load(CID))
    settled, _ = state.record_stream_event(event(T0 + 1, "call-y"), T0)
    assert not settled.pending and not settled.needs_reconcile


def test_a_batch_of_several_scripts_runs_whole_and_in_order_after_redis_forgot_them(state):
    from worker.store import scripts

    write = scripts.Script("redis.call('SET', KEYS[1], ARGV[1]) return 1")
    read = scripts.Script("return redis.call('GET', KEYS[1])")
    state.redis.script_flush()
    assert read(state.redis, ["cs:test:k"], []) is None  # `read` is known again, `write` is not
    assert scripts.run(state.redis, [(write, ["cs:test:k"], ["1"]), (read, ["cs:test:k"], [])]) == [1, b"1"]
    state.redis.script_flush()
    assert scripts.run(state.redis, [(write, ["cs:test:k"], ["2"])] * 2) == [1, 1]  # one script: EVALSHA, reloaded
