"""Settling at ingest (lua/dedupe_and_push.lua with `enqueue.settle_hms`) holds to
core.sessions.settled_at_ingest, and a settled event leaves exactly the state the worker's
path (worker/steps/sync.py apply_hms_event: record the peer, record the session) leaves,
except the task; on fakeredis and real Redis."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.store.test_record_session import dump
from tests.support.state import restore_snapshot, snapshot
from worker.core.events import HmsEvent
from worker.core.sessions import Session, settled_at_ingest
from worker.core.timebounds import admit_hms_event
from worker.store import scripts
from worker.store.codec import session_to_hash
from worker.store.enqueue import QUEUE, _call, _Pending, settle_hms
from worker.store.keys import DEDUPE_TTL, call_key, dedupe_key, owed_key
from worker.store.peers import record_peer
from worker.store.state import State

T0 = 1_800_000_000.0
NOW = T0 + 600
ROOMS = ["call-messaging:general", "free-form-id"]  # a call-<cid> name (bound index kept) and a free-form one

recorded = st.none() | st.builds(
    Session,
    st.sampled_from(["s1", "s2"]),
    st.just("room-1"),
    st.sampled_from(ROOMS),
    st.sampled_from(["open", "ending", "closed"]),
    st.sampled_from([T0, T0 + 0.0004, T0 + 0.001, T0 + 1]),
    st.none() | st.just(T0 + 5),
)
events = st.builds(
    lambda kind, sid, started, at, peer, room, n: HmsEvent(
        f"e{n}", kind, "room-1", room, sid, started, at, False, peer, "ann" if peer else None, at if peer else None
    ),
    st.sampled_from(["peer.join.success", "peer.leave.success", "session.open.success", "session.close.success"]),
    st.sampled_from(["s1", "s2"]),
    st.none() | st.sampled_from([T0, T0 + 0.0004, T0 + 0.001, T0 + 1, T0 - 40 * 86400]),
    st.sampled_from([T0 + 2, T0 + 9, NOW + 3600]),
    st.none() | st.sampled_from(["p1", "p2"]),
    st.sampled_from(ROOMS),
    st.integers(0, 10**6),
)


def ingest(client: Any, event: HmsEvent) -> int:
    """The receiver's one step for `event` at NOW: 0 duplicate, 1 queued, 2 settled."""
    item = _Pending([dedupe_key("hms", event.id), QUEUE], "message", settle_hms(event, NOW))
    [result] = scripts.run(client, [_call(item, DEDUPE_TTL, 1000)])
    return int(result)


def worker_path(client: Any, event: HmsEvent) -> set[str]:
    """What apply_hms_event records for an admitted event (its reconcile aside): the channels it reconciles."""
    admitted = admit_hms_event(event, NOW)
    if admitted is None:
        return set()
    event, peer = admitted, admitted.peer()
    if peer is not None:
        record_peer(client, event.session_id, peer)
    _, cids, owed = State(client).record_hms_event_and_channels(event, NOW)
    if owed is not None and event.room_name:  # as apply_hms_event drops it after reconciling
        State(client).settle_owed(event.room_name, owed)
    return cids


def seed(client: Any, session: Session | None) -> None:
    client.flushdb()
    if session is not None:
        client.hset(call_key(session.room_name or ""), mapping=session_to_hash(session))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded, events, st.sampled_from([None, *ROOMS]))
def test_the_lua_settles_exactly_what_the_core_says(
    redis_client, session: Session | None, event: HmsEvent, owed: str | None
) -> None:
    seed(redis_client, session)
    if owed is not None:  # a reconcile still owed to that call
        redis_client.set(owed_key(owed), "token")
    mine = session if session is not None and session.room_name == event.room_name else None
    expected = settled_at_ingest(event, mine, NOW, reconcile_owed=owed == event.room_name)
    result = ingest(redis_client, event)
    assert result == (2 if expected else 1)
    assert redis_client.llen(QUEUE) == (0 if expected else 1)
    assert ingest(redis_client, event) == 0  # its key is spent either way: a redelivery is a duplicate


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recorded, st.lists(events, min_size=1, max_size=4))
def test_a_settled_event_leaves_the_state_the_worker_would(redis_client, session: Session | None, many: list[HmsEvent]) -> None:
    """Each settled event, applied instead by the worker's path on a copy of the state before
    it, leaves the same keys (dedupe keys and the queue aside), and reconciles nothing."""
    seed(redis_client, session)
    for event in many:
        before = snapshot(redis_client)
        if ingest(redis_client, event) != 2:
            redis_client.delete(QUEUE)
            worker_path(redis_client, event)  # what its task would do, so the next event sees it
            continue
        settled = _state(redis_client)
        restore_snapshot(redis_client, before)
        assert worker_path(redis_client, event) == set()  # no reconcile either way
        assert _state(redis_client) == settled


def _state(client: Any) -> dict[str, Any]:
    return {k: v for k, v in dump(State(client)).items() if not k.startswith(("cs:dd:", QUEUE))}


def hms(kind: str, n: int, started: float | None = T0, sid: str = "s1", peer: str | None = "p1") -> HmsEvent:
    at = T0 + n
    return HmsEvent(f"e{n}", kind, "room-1", ROOMS[0], sid, started, at, False, peer, "ann", T0 + 1 if peer else None)


def test_each_kind_that_changes_nothing_is_settled_with_the_workers_state(redis_client) -> None:
    open_s1 = Session("s1", "room-1", ROOMS[0], "open", T0)
    settled = [hms("peer.join.success", 1), hms("peer.leave.success", 9), hms("peer.join.success", 2, peer=None)]
    for event in settled:
        seed(redis_client, open_s1)
        worker_path(redis_client, event)
        by_worker = _state(redis_client)
        seed(redis_client, open_s1)
        assert ingest(redis_client, event) == 2 and redis_client.llen(QUEUE) == 0
        assert _state(redis_client) == by_worker
    to_worker = [
        hms("peer.join.success", 1, started=T0 + 1),  # another start
        hms("peer.join.success", 1, sid="s2"),  # another session
        hms("peer.join.success", 1, started=None),  # no start to compare
        hms("session.open.success", 1, peer=None),  # not a peer event
        hms("session.close.success", 1, peer=None),  # a close
    ]
    for event in to_worker:
        seed(redis_client, open_s1)
        assert ingest(redis_client, event) == 1 and redis_client.llen(QUEUE) == 1
    seed(redis_client, None)
    assert ingest(redis_client, hms("peer.join.success", 1)) == 1  # no session recorded
    seed(redis_client, Session("s1", "room-1", ROOMS[0], "closed", T0, T0 + 5))
    assert ingest(redis_client, hms("peer.leave.success", 9)) == 1  # recorded closed
