"""Settling Stream's echo at ingest (lua/dedupe_and_push.lua with lua/settle_echo.lua and
`enqueue.settle_stream`) holds to core.channels.stream_settled_at_ingest, and a settled event
leaves exactly the state the worker's path (worker/steps/sync.py apply_stream_event: state.py
record_stream_event) leaves, except the task; on fakeredis and real Redis."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.state import restore_snapshot, snapshot
from tests.unit.test_channels import T0, echoes, events, near
from worker.core.channels import ChannelRecord, WriteIntent, rebinds, stream_settled_at_ingest
from worker.core.events import CallFields, StreamEvent
from worker.core.reconcile import Channel
from worker.store import scripts
from worker.store.codec import record_from_hash, record_to_hash, text
from worker.store.enqueue import QUEUE, _call, _Pending, settle_stream
from worker.store.keys import BOUND_CHANNELS, CALL_TTL, DEDUPE_TTL, MAX_BINDINGS, bindings_key, channel_key, dedupe_key, owner_key
from worker.store.state import State

CID = "messaging:general"
NAMED, FREE = "call-messaging:general", "standup"  # its reference-form call id, a free-form one
NOW = T0 + 2
SEEDED_TTL = 3600  # below CALL_TTL, so a TTL the worker renews reads as renewed

owners = st.none() | st.sampled_from([CID, "messaging:other"])  # the free-form id's recorded owner
# The channel's bindings: at times more than MAX_BINDINGS, as take_ownership may leave them.
OTHERS = [f"c{i}" for i in range(MAX_BINDINGS + 1)]
bindings = st.lists(st.sampled_from([NAMED, FREE, *OTHERS]), unique=True, max_size=MAX_BINDINGS + 2) | st.sampled_from(
    [OTHERS[: MAX_BINDINGS - 1], OTHERS[:MAX_BINDINGS], OTHERS]  # full, or more than MAX_BINDINGS with the call's
)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[StreamEvent, ChannelRecord | None, str | None, list[str]]:
    """An event, the channel's record, the free-form id's owner and the channel's bindings:
    most often an echo the receiver may settle (core.channels.stream_settled_at_ingest), then
    often one thing of it changed (tests/unit/test_channels.py `near`), else anything."""
    event = draw(echoes if draw(st.booleans()) else events)
    record = None if not draw(st.integers(0, 9)) else draw(near(event))
    bound, owner = list(draw(bindings)), CID if draw(st.integers(0, 3)) else draw(owners)
    call_id = event.fields.call_id if event.fields is not None else None
    if call_id and call_id not in bound and draw(st.integers(0, 3)):
        bound.insert(draw(st.integers(0, len(bound))), call_id)
    return event, record, owner, bound


def seed(client: Any, record: ChannelRecord | None, owner: str | None, bound: list[str]) -> None:
    """The channel's record, the free-form id's owner and the channel's bindings (more than
    MAX_BINDINGS is what take_ownership may leave), and an entry of the bound index past its horizon."""
    client.flushdb()
    if record is not None:
        client.hset(channel_key(CID), mapping=record_to_hash(record))
        client.expire(channel_key(CID), SEEDED_TTL)
    if owner is not None:
        client.set(owner_key(FREE), owner, ex=SEEDED_TTL)
    if bound:
        client.zadd(bindings_key(CID), {call_id: T0 - 100 + i for i, call_id in enumerate(bound)})
        client.expire(bindings_key(CID), SEEDED_TTL)
    client.zadd(BOUND_CHANNELS, {CID: T0 - 50, "messaging:old": NOW - CALL_TTL - 1, "messaging:new": NOW + 10})


def ingest(client: Any, event: StreamEvent, n: int = 0) -> int:
    """The receiver's one step for `event` at NOW (two dedupe keys, as Stream's): 0 duplicate, 1 queued, 2 settled."""
    keys = [dedupe_key("stream", f"w{n}"), dedupe_key("stream-body", f"b{n}")]
    item = _Pending([*keys, QUEUE], "message", settle_stream(event, NOW))
    [result] = scripts.run(client, [_call(item, DEDUPE_TTL, 1000)])
    return int(result)


def expected(client: Any, event: StreamEvent) -> bool:
    """The core rule over what is recorded."""
    record = record_from_hash(CID, client.hgetall(channel_key(CID)))
    call_id = event.fields.call_id if event.fields is not None else None
    recorded_owner = text(client.get(owner_key(call_id))) if call_id else None
    bound = [text(m) or "" for m in client.zrange(bindings_key(CID), 0, -1)]
    rebound = call_id is not None and rebinds(CID, call_id, recorded_owner, bound)
    return stream_settled_at_ingest(event, record, NOW, rebound)


def state(client: Any) -> dict[str, Any]:
    """Every key but the dedupe keys and the queue: value, and whether its TTL is none, as
    seeded, or renewed (a real server's TTL ticks)."""
    out: dict[str, Any] = {}
    for raw_key in client.keys("*"):
        key = raw_key.decode()
        if key.startswith("cs:dd:") or key == QUEUE:
            continue
        kind = client.type(key).decode()
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.get(key)
        ttl = client.ttl(key)
        out[key] = (kind, value, "none" if ttl == -1 else "seeded" if ttl <= SEEDED_TTL else "renewed")
    return out


def worker_path(client: Any, event: StreamEvent) -> bool:
    """What apply_stream_event records for `event` (its reconcile aside); whether it would do
    anything more (reconcile the channel, record the call's owner)."""
    change, bound = State(client).record_stream_event(event, NOW)
    return change.needs_reconcile or (bound is not None and bound.first)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios())
def test_the_lua_settles_exactly_what_the_core_says(redis_client, scenario) -> None:
    event, record, owner, bound = scenario
    seed(redis_client, record, owner, bound)
    settled = expected(redis_client, event)
    assert ingest(redis_client, event) == (2 if settled else 1)
    assert redis_client.llen(QUEUE) == (0 if settled else 1)
    assert ingest(redis_client, event) == 0  # its keys are spent either way: a redelivery is a duplicate


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenarios(), st.lists(events, max_size=3))
def test_a_settled_event_leaves_the_state_the_worker_would(redis_client, scenario, more: list[StreamEvent]) -> None:
    """Each settled event, applied instead by the worker's path on a copy of the state before
    it, leaves the same keys (dedupe keys and the queue aside), and the worker would do nothing more."""
    first, record, owner, bound = scenario
    seed(redis_client, record, owner, bound)
    many = [first, *more]
    for n, event in enumerate(many):
        before = snapshot(redis_client)
        if ingest(redis_client, event, n) != 2:
            redis_client.delete(QUEUE)
            worker_path(redis_client, event)  # what its task would record, so the next event sees it
            continue
        settled = state(redis_client)
        restore_snapshot(redis_client, before)
        assert not worker_path(redis_client, event)
        assert state(redis_client) == settled


ON = CallFields(True, NAMED)


def echo(fields: CallFields, n: int, from_server: bool = True) -> StreamEvent:
    return StreamEvent("channel.updated", CID, fields, T0 + n, from_server, None)


def booked(client: Any, intent: WriteIntent | None = None) -> None:
    """The channel once callsync's write of ON is booked, bound to its call as the worker binds it."""
    seed(client, ChannelRecord(Channel(CID, ON, True, T0 - 5), T0, intent=intent), None, [])
    State(client).bind(CID, NAMED, T0)


def test_the_echo_of_a_booked_write_is_settled_with_the_workers_state(redis_client) -> None:
    booked(redis_client)
    worker_path(redis_client, echo(ON, 1))
    by_worker = state(redis_client)
    booked(redis_client)
    assert ingest(redis_client, echo(ON, 1)) == 2 and redis_client.llen(QUEUE) == 0
    assert state(redis_client) == by_worker
    assert record_from_hash(CID, redis_client.hgetall(channel_key(CID))) == ChannelRecord(Channel(CID, ON, True, T0 - 5), T0 + 1)


def test_what_the_receiver_cannot_prove_goes_to_the_worker(redis_client) -> None:
    cases = [
        (None, echo(ON, 1, from_server=False)),  # a member's claim restarts the claim's date
        (None, echo(CallFields(False, None), 1)),  # other fields: a change
        (WriteIntent(CallFields(False, None), T0 + 0.5), echo(ON, 1)),  # a write in flight: its writer books after the echo
    ]
    for intent, event in cases:
        booked(redis_client, intent)
        assert ingest(redis_client, event) == 1 and redis_client.llen(QUEUE) == 1
    seed(redis_client, ChannelRecord(Channel(CID, ON, True, T0 - 5), T0), None, [])
    assert ingest(redis_client, echo(ON, 1)) == 1  # the call not bound yet: a new binding
