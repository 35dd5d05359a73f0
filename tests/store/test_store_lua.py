"""The store's Lua programs on fakeredis and real Redis: compare_and_set.lua, and the sweep's
claim (claim_overdue.lua) holding to core.sessions.advance."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.core.sessions import Session, advance
from worker.store import scripts
from worker.store.codec import session_to_hash
from worker.store.keys import BUCKET_SECONDS, OPEN_BUCKETS, bucket_key, bucket_of, call_key
from worker.store.state import NO_TTL, State, compare_and_set, written

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
