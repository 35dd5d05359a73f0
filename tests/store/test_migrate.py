"""Converting schema 1 (call ids in lower case, a call bound to every channel that showed it) to
schema 2 (exact call ids, one owner per call): worker/store/migrate.py."""

from __future__ import annotations

from typing import Any

from worker.store.keys import SCHEMA, bindings_key, bucket_key, bucket_of, owner_key
from worker.store.migrate import ensure_schema
from worker.store.state import State

T0 = 1_800_000_000.0


def schema_1(client: Any) -> None:
    """What an earlier release wrote after Mallory's claims (the review's cases 1 to 3)."""
    client.zadd("cs:cb:messaging:team", {"call-messaging:team": T0, "standup": T0 + 5})
    client.zadd("cs:cb:messaging:evil", {"call-messaging:team": T0 + 1, "standup": T0 + 9})
    client.zadd("cs:cb:messaging:solo", {"Weekly": T0})
    client.sadd("cs:cc:call-messaging:team", "messaging:team", "messaging:evil")
    client.sadd("cs:cc:standup", "messaging:team", "messaging:evil")
    client.set("cs:owner:weekly", "messaging:solo")
    client.hset("cs:room:weekly", mapping={"id": "r-w", "name": "Weekly"})
    # A mixed-case room's open session, kept under its lower-cased name with 100ms's spelling.
    started_ms = int(T0 * 1000)
    client.hset("cs:c:weekly", mapping={"r": "r-w", "s": "s1", "st": "open", "t0": started_ms, "n": "Weekly"})
    client.sadd(bucket_key(bucket_of(T0)), "weekly")
    client.zadd("cs:open", {str(bucket_of(T0)): bucket_of(T0) * 10})


def test_schema_1_is_converted_once_to_one_owner_per_call_under_exact_ids(redis_client: Any) -> None:
    schema_1(redis_client)
    assert ensure_schema(redis_client)
    state = State(redis_client)
    assert redis_client.zrange(bindings_key("messaging:evil"), 0, -1) == []  # another channel's: dropped
    assert redis_client.zrange(bindings_key("messaging:team"), 0, -1) == [b"call-messaging:team", b"standup"]
    assert state.owner_of_call("standup") == "messaging:team"  # the binding seen least recently
    assert state.owner_of_call("Weekly") == "messaging:solo" and state.owner_of_call("weekly") is None
    assert redis_client.get(owner_key("call-messaging:team")) is None  # a reference id needs no record
    assert not redis_client.keys("cs:cc:*") and not redis_client.keys("cs:room:*")
    session = state.call("Weekly").session
    assert session is not None and (session.session_id, session.room_name, session.status) == ("s1", "Weekly", "open")
    assert redis_client.hget("cs:c:Weekly", "n") is None and not redis_client.exists("cs:c:weekly")
    assert state.claim_overdue(T0, 10, T0 + 1) == [("Weekly", "s1")]  # the sweep finds it under its id
    assert int(redis_client.get(SCHEMA)) == 2
    assert not ensure_schema(redis_client)  # once


def test_a_new_store_is_marked_without_converting_anything(redis_client: Any) -> None:
    assert ensure_schema(redis_client) and redis_client.keys("*") == [SCHEMA.encode()]
