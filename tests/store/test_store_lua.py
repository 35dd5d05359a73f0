"""The store's Lua programs on fakeredis and real Redis: compare_and_set.lua, the sweep's claim
(claim_overdue.lua) holding to core.sessions.advance, a channel's load (load_channel.lua) to
core.binding.call_ids_of_channel, and the owner's binding (bind_owned.lua) to core.binding.may_bind."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core.binding import call_ids_of_channel, default_call_id
from worker.core.sessions import Session, advance
from worker.store import scripts
from worker.store.cas import NO_TTL, compare_and_set, written
from worker.store.codec import session_to_hash
from worker.store.keys import BUCKET_SECONDS, OPEN_BUCKETS, bindings_key, bucket_key, bucket_of, call_key, owner_key
from worker.store.state import Bound, State

T0 = 1_800_000_000


def run(client, call) -> object:
    [result] = scripts.run(client, [call])
    return result


def test_compare_and_set_writes_only_over_what_was_read(redis_client) -> None:
    redis_client.hset("cs:t:h", mapping={"a": "1", "b": "2"})
    redis_client.expire("cs:t:h", 100)
    read = redis_client.hgetall("cs:t:h")
    done = run(redis_client, compare_and_set("cs:t:h", read, {"a": "3", "c": "4"}, commands=[("SADD", "cs:t:s", "m")]))
    assert written(done) and done == [1, 1]
    assert redis_client.hgetall("cs:t:h") == {b"a": b"3", b"c": b"4"}  # b was read and is not wanted: gone
    assert 0 < redis_client.ttl("cs:t:h") <= 100  # the TTL was left as it was
    stale = run(redis_client, compare_and_set("cs:t:h", read, {"a": "5"}, commands=[("SADD", "cs:t:s", "n")]))
    assert stale == [0] and not written(stale)
    assert redis_client.hgetall("cs:t:h") == {b"a": b"3", b"c": b"4"} and redis_client.smembers("cs:t:s") == {b"m"}


def test_compare_and_set_over_nothing_creates_and_can_leave_or_persist(redis_client) -> None:
    assert not written(run(redis_client, compare_and_set("cs:t:h", {b"a": b"1"}, {"a": "2"})))  # absent ≠ read
    assert written(run(redis_client, compare_and_set("cs:t:h", {}, {"a": "1"}, ttl=50)))
    assert 0 < redis_client.ttl("cs:t:h") <= 50
    read = redis_client.hgetall("cs:t:h")
    assert written(run(redis_client, compare_and_set("cs:t:h", read, None, NO_TTL)))
    assert redis_client.ttl("cs:t:h") == -1 and redis_client.hgetall("cs:t:h") == {b"a": b"1"}


sessions = st.lists(st.tuples(st.sampled_from(["open", "ending", "closed"]), st.integers(0, 600_000)), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions, st.integers(-60, 700), st.integers(1, 8))
def test_the_sweeps_claim_moves_sessions_as_core_sessions_advance_does(redis_client, given_sessions, cutoff_after, limit):
    """claim_overdue.lua moves open → ending in Redis (atomically over many keys): each session
    it moves must end up as core.sessions.advance makes it, the others untouched."""
    redis_client.flushdb()
    state, now, cutoff = State(redis_client), float(T0 + 900), T0 + cutoff_after
    before = {}
    for i, (status, offset_ms) in enumerate(given_sessions):
        call_id = f"call-t:{i}"
        ended = None if status == "open" else T0 + 1.5
        session = Session(f"s{i}", f"r{i}", call_id, status, T0 + offset_ms / 1000, ended)
        redis_client.hset(call_key(call_id), mapping=session_to_hash(session))
        bucket = bucket_of(session.started_at)
        redis_client.sadd(bucket_key(bucket), call_id)  # the index may hold stale members: the claim drops them
        redis_client.zadd(OPEN_BUCKETS, {str(bucket): bucket * BUCKET_SECONDS})
        before[call_id] = session
    moved = dict(state.claim_overdue(cutoff, limit, now))
    due = {c for c, s in before.items() if s.is_open and (s.started_at or 0) <= cutoff}
    assert set(moved) <= due and len(moved) == min(len(due), limit)
    for call_id, session in before.items():
        expected = advance(session, "ending", now) if call_id in moved else session
        assert state.call(call_id).session == expected
        assert moved.get(call_id, session.session_id) == session.session_id


CIDS = st.builds(
    lambda kind, cid_id: f"{kind}:{cid_id}",
    st.text("abcAB_-", min_size=1, max_size=8),
    st.text("abcXYZ09.-:_", min_size=1, max_size=12),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cid=CIDS, others=st.lists(st.text("abcXY09-:", min_size=1, max_size=10), unique=True, max_size=4), data=st.data())
def test_load_channel_lua_lists_the_calls_core_binding_names(redis_client, cid: str, others: list[str], data) -> None:
    """load_channel.lua adds the default call id itself (atomically with the read): it must name
    the same calls, in the same order, as core.binding.call_ids_of_channel."""
    redis_client.flushdb()
    default = default_call_id(cid)
    spellings = st.sampled_from([default, default.upper(), default.swapcase()])
    bound = others + data.draw(st.lists(spellings, unique=True, max_size=1))
    bound = data.draw(st.permutations(bound))
    for at, call_id in enumerate(bound):
        redis_client.zadd(bindings_key(cid), {call_id: 1000.0 + at})
    loaded = State(redis_client).load(cid)
    assert loaded is not None
    assert [c.call_id for c in loaded.calls] == call_ids_of_channel(cid, bound)


def test_bind_owned_lua_binds_only_the_owner_and_records_the_first_binder(redis_client) -> None:
    state = State(redis_client)
    assert state.bind("messaging:a", "standup", T0) == Bound("standup", owned=True, new=True, first=True, owner="messaging:a")
    assert state.bind("messaging:a", "standup", T0 + 1) == Bound("standup", owned=True, new=False, owner="messaging:a")
    assert state.bind("messaging:b", "standup", T0 + 2) == Bound("standup", owned=False, owner="messaging:a")
    assert redis_client.zscore(bindings_key("messaging:b"), "standup") is None  # binds nothing
    # A reference-form id: its channel, never the first that showed it; nothing recorded.
    assert not state.bind("messaging:TEAM", "call-messaging:team", T0).owned
    assert state.bind("messaging:team", "call-messaging:team", T0) == Bound(
        "call-messaging:team", owned=True, new=True, first=False, owner="messaging:team"
    )
    assert redis_client.get(owner_key("call-messaging:team")) is None
    assert state.owner_of_call("standup") == "messaging:a" and state.owner_of_call("call-messaging:TEAM") == "messaging:TEAM"
