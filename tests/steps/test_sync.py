"""The worker's steps end to end against Redis and the platform stand-ins at the HTTP transport."""

from __future__ import annotations

import json
import logging
import time

import pytest

from tests.support.state import record_hms_event, recorded_channel
from tests.support.world import CALL, CID, KEY, SECRET, World, open_call
from worker.core import actions
from worker.core.events import CallFields, StreamEvent, parse_hms_event, parse_stream_event, parse_time
from worker.core.upstream import Retry, UpstreamError
from worker.settings import Rate
from worker.steps import sessions, sync


def test_session_open_sets_the_fields_once_and_the_echo_writes_nothing(world):
    world.stream.create_channel(CID, name="General", data={"topic": "x"})
    open_call(world)
    assert world.patches() == [{"set": {"data.callActive": True, "data.callId": CALL}}]
    assert world.fields() == {"topic": "x", "callActive": True, "callId": CALL}
    assert world.stream.channels[CID]["name"] == "General"  # nothing else touched
    world.deliver_stream_outbox()  # callsync's own channel.updated comes back
    assert len(world.patches()) == 1


def test_session_close_clears_the_fields_with_an_unset(world):
    world.stream.create_channel(CID)
    room, session = open_call(world)
    world.deliver_stream_outbox()
    world.deliver_hms(world.hms_event("session.close.success", session, room, session_stopped_at="2027-01-15T09:00:00Z"))
    assert world.patches()[-1] == {"set": {"data.callActive": False}, "unset": ["data.callId"]}
    assert world.fields() == {"callActive": False}
    world.deliver_stream_outbox()
    assert len(world.patches()) == 2


def test_duplicates_and_a_close_before_its_open_converge(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    opened = world.hms_event("session.open.success", session, room)
    closed = world.hms_event("session.close.success", session, room)
    for event in (closed, opened, opened, closed):
        world.deliver_hms(event)
        world.deliver_stream_outbox()
    assert world.patches() == []  # the channel never claimed the call and never needed a write


def test_duplicate_opens_write_once(world):
    world.stream.create_channel(CID)
    room, session = open_call(world)
    for _ in range(3):
        world.deliver_hms(world.hms_event("session.open.success", session, room))
        world.deliver_hms(world.hms_event("peer.join.success", session, room, peer_id="p1"))
    world.deliver_stream_outbox()
    assert len(world.patches()) == 1


def test_missing_channel_is_not_written(world):
    open_call(world)  # room names channel messaging:general, which does not exist in Stream
    assert world.patches() == []


def test_top_level_fields_with_an_empty_prefix(redis_client):
    world = World(redis_client, prefix="")
    world.stream.create_channel(CID)
    open_call(world)
    assert world.patches() == [{"set": {"callActive": True, "callId": CALL}}]
    assert world.stream.channels[CID]["callActive"] is True


def test_stale_claim_is_kept_during_grace_then_cleared_when_100ms_confirms(world, caplog):
    world.stream.create_channel(CID)
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": CALL})  # a tab that then crashed
    with caplog.at_level(logging.INFO, logger="callsync.sync"):
        world.deliver_stream_outbox()
    assert world.patches() == []  # within the grace period nothing is written
    [said] = [r for r in caplog.records if "not confirmed" in r.getMessage()]  # the operator is told why, and until when
    assert said.cs["cid"] == CID and said.cs["call_id"] == CALL and said.cs["recheck_at"] == pytest.approx(world.now + 60, abs=1)
    [(task, args, countdown)] = world.queue.tasks
    assert task == actions.RECONCILE and args == (CID,) and 0 < countdown <= 61
    world.now += 30
    world.drain()  # not due yet
    assert world.patches() == [] and len(world.queue.tasks) == 1
    world.now += 31
    world.drain()
    assert world.patches() == [{"set": {"data.callActive": False}, "unset": ["data.callId"]}]
    assert ("GET", "/rooms") in [(m, p) for m, p, _ in world.hms.calls]


def test_claim_of_a_live_session_callsync_never_heard_of_is_adopted(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    world.hms.open_session(room["id"], started_at=world.now)  # its webhook was lost
    world.hms.outbox.clear()
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": CALL})
    world.deliver_stream_outbox()
    world.now += 61
    world.drain()
    assert world.patches() == []  # the claim was true
    assert world.rt.state.calls_of_channel(CID)[0].session.is_open


def test_client_ending_the_call_ends_the_room_for_everyone(world):
    world.stream.create_channel(CID)
    room, _ = open_call(world)
    world.deliver_stream_outbox()
    world.stream.client_update(CID, {"data": {"callActive": False}})  # the reference client's "End call"
    world.deliver_stream_outbox()
    ends = [(p, b) for m, p, b in world.hms.calls if p.endswith("/end-room")]
    assert ends == [(f"/active-rooms/{room['id']}/end-room", {"reason": f"call ended in channel {CID}", "lock": False})]
    assert world.fields() == {"callActive": False}  # never flipped back on while the room ends
    assert len(world.patches()) == 1
    _, close = world.hms.outbox[-1]
    world.deliver_hms(parse_hms_event(json.loads(close)))
    assert len(world.patches()) == 1


def test_a_session_100ms_no_longer_runs_is_recorded_closed_not_ended(world):
    world.stream.create_channel(CID)
    _, session = open_call(world)
    world.hms.close_session(session["id"])  # it ended meanwhile; its webhook not yet here
    sessions.end_session(world.rt, CALL, session["id"], "test")
    assert world.rt.state.call(CALL).session.status == "closed"
    assert not [p for m, p, _ in world.hms.calls if p.endswith("/end-room")]  # 100ms was asked, nothing ended
    world.drain()
    assert world.fields() == {"callActive": False}


def test_rate_limited_stream_answer_says_how_long_to_wait(world):
    world.stream.create_channel(CID)
    world.stream.fail_next(1, 429, {"X-RateLimit-Reset": str(int(time.time()) + 30)})
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    with pytest.raises(UpstreamError) as err:
        sync.apply_hms_event(world.rt, world.hms_event("session.open.success", session, room))
    assert err.value.retry is Retry.AFTER and 25 <= err.value.retry_after <= 31


def test_server_error_is_retryable_and_changes_nothing(world):
    world.stream.create_channel(CID)
    world.stream.fail_next(1, 500)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    opened = world.hms_event("session.open.success", session, room)
    with pytest.raises(UpstreamError) as err:
        sync.apply_hms_event(world.rt, opened)
    assert err.value.retry is Retry.BACKOFF
    assert world.patches() == []
    sync.apply_hms_event(world.rt, opened)  # the retry
    assert world.fields() == {"callActive": True, "callId": CALL}


def test_stream_update_ceiling_queues_the_channel_and_one_drain_writes_it_at_its_slot(redis_client):
    world = World(redis_client, stream_update_rate=Rate(1, 60.0))
    events = []
    for n in range(3):
        world.stream.create_channel(f"messaging:c{n}")
        room = world.hms.create_room(f"call-messaging:c{n}")
        session = world.hms.open_session(room["id"])
        events.append(world.hms_event("session.open.success", session, room))
    started = world.now
    for event in events:
        sync.apply_hms_event(world.rt, event)  # no Deferred: the first writes, the others wait in line
    assert len(world.patches()) == 1
    assert [name for name, _, _ in world.queue.tasks] == [actions.DRAIN_WRITES]  # one drain for the two
    # The drain sleeps (the world's clock) until each slot, gives its turn back after a slice
    # and publishes itself again, due when the next slot is.
    world.drain(until=started + 300)
    assert len(world.patches()) == 3
    assert world.now - started == pytest.approx(120, abs=1)  # one a minute, evenly
    for n in range(3):
        assert world.stream.channels[f"messaging:c{n}"]["data"]["callActive"] is True


def test_a_busy_channel_lock_defers(world):
    lock = world.rt.redis.lock(f"cs:lock:{CID}", timeout=5)
    assert lock.acquire()
    with pytest.raises(sync.Deferred):
        sync.reconcile_channel(world.rt, CID)
    lock.release()


def test_expired_100ms_token_is_renewed_once(world):
    world.hms.fail_next(1, 401)
    room = world.hms.create_room(CALL)
    world.hms.open_session(room["id"])
    assert world.rt.hms.live_session(room["id"]) is not None
    tokens = [c for c in world.hms.calls if c[1] == "/sessions"]
    assert len(tokens) == 2  # the 401, then the retry with a fresh token


def test_dry_run_logs_the_exact_call_and_sends_nothing(redis_client, caplog):
    world = World(redis_client, dry_run=True)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    with caplog.at_level("INFO", logger="callsync.upstream"):
        world.deliver_hms(world.hms_event("session.open.success", session, room))
    logged = [r.cs for r in caplog.records if r.name == "callsync.upstream"]
    assert {
        "dry_run": True,
        "method": "PATCH",
        "url": "http://stream.test/channels/messaging/general",
        "json": {"set": {"data.callActive": True, "data.callId": CALL}},
    } in logged
    assert world.stream.calls == [] and world.patches() == []
    assert SECRET not in caplog.text and KEY not in caplog.text


def test_dry_run_writes_once_per_change(redis_client):
    """A dry run records what it would have written, so the same change is not logged again."""
    world = World(redis_client, dry_run=True)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    sync.reconcile_channel(world.rt, CID)
    state = recorded_channel(world.rt.state, CID)
    assert state.fields is not None and state.fields.active and state.fields.call_id == CALL
    assert world.queue.take() == []


def test_an_event_that_changes_nothing_reconciles_nothing(world):
    world.stream.create_channel(CID)
    open_call(world)
    [echo] = world.stream.outbox
    world.deliver_stream_outbox()  # the echo of callsync's own write: its record already
    calls = len(world.stream.calls)
    lock = world.rt.redis.lock(f"cs:lock:{CID}", timeout=5)
    assert lock.acquire()  # a reconcile would be told to wait: none is attempted
    world.stream.outbox.append(echo)  # delivered again (Stream retries)
    world.deliver_stream_outbox()
    lock.release()
    assert len(world.stream.calls) == calls


def test_a_write_over_a_record_changed_since_the_read_records_afresh(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    record_hms_event(world.rt.state, world.hms_event("session.open.success", session, room), world.now)
    loaded = world.rt.state.load(CID, lock=("t", 5.0))
    assert loaded is not None
    world.rt.state.record_channel(CID, CallFields(False, None), 1.0)  # recorded between the read and the write
    sync._write_fields(world.rt, CID, loaded, CallFields(True, CALL), "t", world.now)
    channel = recorded_channel(world.rt.state, CID)
    assert channel.fields == CallFields(True, CALL) and channel.claim_since == pytest.approx(session_start(session), abs=0.001)
    assert world.rt.state.load(CID, lock=("u", 5.0)) is not None  # the write released the lock
    assert world.rt.redis.hget("cs:wq:channels:pace", "r") == b"300"  # and kept the limit Stream reported


def session_start(session: dict) -> float | None:
    return parse_time(session["created_at"])


@pytest.mark.parametrize("failure", ["429", "busy lock"])
def test_an_event_whose_reconcile_failed_is_reconciled_after_all(world, failure):
    world.stream.create_channel(CID)
    open_call(world)
    world.deliver_stream_outbox()
    world.stream.client_update(CID, {"data.callId": "call-somewhere-else"})  # a client overwrites the claim
    [(_, body)] = world.stream.outbox
    world.stream.outbox.clear()
    event = StreamEvent.from_json(parse_stream_event(json.loads(body), world.settings.field_path).to_json())
    lock = world.rt.redis.lock(f"cs:lock:{CID}", timeout=5)
    if failure == "429":
        world.stream.fail_next(1, 429, {"Retry-After": "1"})
    else:
        assert lock.acquire()
    if failure == "429":
        # A 429 pauses every channel update and puts the channel in line: the task is done, and
        # the drain writes the claim back once the pause is over.
        sync.apply_stream_event(world.rt, event)
        assert world.fields()["callId"] == "call-somewhere-else"
        assert [(name, args) for name, args, _ in world.queue.tasks][-1:] == [(actions.DRAIN_WRITES, ("channels",))]
        world.drain(until=world.now + 5)
    else:
        with pytest.raises(sync.Deferred):
            sync.apply_stream_event(world.rt, event)
        lock.release()
        # The task runs again with the same event, which now changes nothing recorded: its
        # change still waits for a reconcile, so the claim is written back (by the drain when
        # the last write's slot, a fifth of a second ago at 300/m, is not over yet).
        sync.apply_stream_event(world.rt, event)
        world.drain()
    assert world.fields() == {"callActive": True, "callId": CALL}
    world.deliver_stream_outbox()  # the echo of that write: settled, nothing more
    assert not world.rt.redis.hget(f"cs:ch:{CID}", "p")
    patches = len(world.patches())
    world.stream.outbox.append(("", body))
    world.deliver_stream_outbox()  # the client's event delivered once more: older now, nothing to do
    assert len(world.patches()) == patches


def test_an_event_recorded_between_the_read_and_the_write_is_reconciled_after_all(world):
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    record_hms_event(world.rt.state, world.hms_event("session.open.success", session, room), world.now)
    world.rt.state.record_channel(CID, CallFields(False, None), 1.0)
    loaded = world.rt.state.load(CID, lock=("t", 5.0))
    assert loaded is not None
    # While callsync's PATCH is on its way, a client's update lands at Stream after it: its
    # event matches the record callsync read (inactive), so by itself it asks for nothing.
    late = StreamEvent("channel.updated", CID, CallFields(False, None), world.now + 1, False, "alice")
    assert not world.rt.state.record_stream_event(late, world.now)[0].needs_reconcile
    sync._write_fields(world.rt, CID, loaded, CallFields(True, CALL), "t", world.now)
    world.stream.client_update(CID, {"data.callActive": False}, ["data.callId"])  # what Stream now shows
    world.stream.outbox.clear()
    world.drain()  # the reconcile the failed compare-and-set asked for
    assert world.fields() == {"callActive": True, "callId": CALL}


def test_a_client_ending_the_call_is_seen_by_a_rerun_after_the_first_try_died_midway(world):
    world.stream.create_channel(CID)
    room, _ = open_call(world)
    world.deliver_stream_outbox()
    world.stream.client_update(CID, {"data.callActive": False})  # the reference client's "End call"
    [(_, body)] = world.stream.outbox
    world.stream.outbox.clear()
    event = StreamEvent.from_json(parse_stream_event(json.loads(body), world.settings.field_path).to_json())
    world.rt.state.record_stream_event(event, world.now)  # the first try recorded it, then its worker died
    sync.apply_stream_event(world.rt, event)  # the redelivered task
    world.drain()
    ends = [p for m, p, b in world.hms.calls if p.endswith("/end-room")]
    assert ends == [f"/active-rooms/{room['id']}/end-room"]
    assert world.fields() == {"callActive": False}


def test_a_grace_longer_than_a_hop_is_waited_in_hops_never_cut_short(redis_client):
    # visibility timeout 20 s: no countdown over 10 s, or a waiting task is handed out twice.
    world = World(redis_client, visibility_timeout_seconds=20, stale_flag_grace_seconds=60)
    # The claim dated on a whole second, not a µs after the channel's creation (the stand-in keeps
    # a channel's stamps apart): else a last hop of a µs is left, its 1 ms marker racing Redis's clock.
    world.now = float(int(world.now))
    world.stream.create_channel(CID)
    world.now += 1
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": CALL})
    claimed_at = world.now
    world.deliver_stream_outbox()
    hops = []
    while not world.patches() and len(hops) < 20:
        [(task, args, countdown)] = world.queue.tasks
        assert task == actions.RECONCILE and args == (CID,) and 0 < countdown <= 10
        assert 0 < redis_client.pttl(f"cs:later:{CID}") <= 10_000
        hops.append(countdown)
        world.now += countdown
        redis_client.delete(f"cs:later:{CID}")  # it expires with its hop (on Redis's clock, not the world's)
        world.drain()  # the hop that came due; the next one is not due yet
    assert world.patches() == [{"set": {"data.callActive": False}, "unset": ["data.callId"]}]
    assert world.now - claimed_at >= 60 and len(hops) <= 7, hops  # six of 10 s and the rest


def test_a_channel_found_missing_is_read_again_when_a_session_of_its_call_opens(world):
    room, first = open_call(world)  # the room names messaging:general, which Stream does not have yet
    reads = lambda: [p for m, p, _ in world.stream.calls if (m, p) == ("POST", "/channels")]  # noqa: E731
    assert len(reads()) == 1 and world.patches() == []
    world.stream.create_channel(CID)  # created now; its channel.created never reached callsync
    world.stream.outbox.clear()
    world.deliver_hms(world.hms_event("peer.join.success", first, room, peer_id="p2"))
    assert len(reads()) == 1  # the same session: not read again
    world.hms.close_session(first["id"])
    world.deliver_hms(world.hms_event("session.close.success", first, room))
    world.now += 60
    second = world.hms.open_session(room["id"], started_at=world.now)
    world.deliver_hms(world.hms_event("session.open.success", second, room))
    assert len(reads()) == 2
    assert world.fields() == {"callActive": True, "callId": CALL}


def test_a_check_of_an_ending_session_whose_room_is_over_records_its_close(world):
    # The check and the end share one guard (core.checks.unsettled): a session callsync asked
    # 100ms to end is still checked, so a lost close of it is recorded too.
    world.stream.create_channel(CID)
    _, session = open_call(world)
    world.deliver_stream_outbox()
    assert world.rt.state.begin_ending(CALL, session["id"], world.now) is not None
    world.hms.close_session(session["id"])
    world.hms.outbox.clear()  # its session.close.success never arrives
    sessions.check_session(world.rt, CALL, session["id"])
    assert world.rt.state.call(CALL).session.status == "closed"
    world.drain()
    assert world.fields() == {"callActive": False}


def test_an_event_that_changes_nothing_rewrites_nothing_and_reconciles_nothing(world):
    """A peer event of the session recorded open leaves the call's record as it was: no reconcile
    (the channel's lock, held by another task here, would defer one), its peer still recorded."""
    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    sync.apply_hms_event(world.rt, world.hms_event("session.open.success", session, room))
    record = world.rt.redis.hgetall(f"cs:c:{CALL}")
    world.rt.redis.set(f"cs:lock:{CID}", "another-task", ex=60)
    joined = world.hms_event("peer.join.success", session, room, peer_id="peer-1", user_id="ann", joined_at=session["created_at"])
    sync.apply_hms_event(world.rt, joined)  # no Deferred: the channel was not touched
    assert world.rt.redis.hgetall(f"cs:c:{CALL}") == record and world.rt.redis.hexists(f"cs:peers:{session['id']}", "peer-1")
    assert world.fields() == {"callActive": True, "callId": CALL} and not world.rt.redis.keys("cs:owed:*")
