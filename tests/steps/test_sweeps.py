"""docs/behaviour.md, rules 4, 5 and 9: the 12-hour limit, lost closes, stale flags, concurrent sweeps."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tests.support.state import record_hms_event
from tests.support.world import CALL, CID, World, open_call
from worker.steps import sessions
from worker.steps import sweep as sweeps
from worker.steps.sweep import checks_per_sweep

HOUR = 3600.0


pytestmark = pytest.mark.world(stale_flag_grace_seconds=1)


def started_hours_ago(world: World, hours: float, name: str = CALL) -> tuple[dict[str, Any], dict[str, Any]]:
    room = world.hms.create_room(name)
    session = world.hms.open_session(room["id"], started_at=world.now - hours * HOUR)
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    return room, session


def end_rooms(world: World) -> list[str]:
    return [path for method, path, _ in world.hms.calls if path.endswith("/end-room")]


def test_checks_per_sweep_follow_the_ceiling():
    assert checks_per_sweep(60, 60) == 60
    assert checks_per_sweep(60, 10) == 10
    assert checks_per_sweep(1, 10) == 1


def test_a_session_past_the_limit_is_ended_and_its_channel_cleared(world):
    world.stream.create_channel(CID)
    room, _ = started_hours_ago(world, 13)
    world.deliver_stream_outbox()
    assert world.fields() == {"callActive": True, "callId": CALL}
    result = world.sweep()
    assert result.ran and result.ended == 1
    assert end_rooms(world) == [f"/active-rooms/{room['id']}/end-room"]
    assert world.fields() == {"callActive": False}
    world.deliver_stream_outbox()
    assert world.sweep().ended == 0  # the next pass has nothing to do
    assert len(end_rooms(world)) == 1 and len(world.patches()) == 2


def test_sessions_within_the_limit_are_left_alone(world):
    world.stream.create_channel(CID)
    started_hours_ago(world, 11.9)
    assert world.sweep().ended == 0
    assert end_rooms(world) == []


def test_the_limit_is_crossed_within_one_sweep_interval(world):
    world.stream.create_channel(CID)
    started_hours_ago(world, 12)
    world.now -= 1  # one second before crossing: not yet
    assert world.sweep().ended == 0
    world.now += world.settings.sweep_interval_seconds
    assert world.sweep().ended == 1


def test_two_sweeps_at_once_end_each_room_once_and_write_each_channel_once(world):
    for n in range(20):
        cid = f"messaging:c{n}"
        world.stream.create_channel(cid)
        started_hours_ago(world, 13, name=f"call-{cid}")
    world.deliver_stream_outbox()
    before = len(world.patches())
    barrier = threading.Barrier(2)
    results = []

    def run() -> None:
        barrier.wait()
        results.append(sweeps.end_overdue(world.rt, world.now))  # the step itself, without the sweep lock

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(results) == 20
    world.drain()
    assert len(end_rooms(world)) == 20
    assert len(world.patches()) - before == 20


def test_a_sweep_already_running_makes_the_second_a_no_op(world):
    lock = world.rt.redis.lock(sweeps.SWEEP_LOCK, timeout=5)
    assert lock.acquire()
    assert world.sweep() == sweeps.SweepResult(ran=False)
    lock.release()
    assert world.sweep().ran


def test_a_lost_close_is_found_by_the_re_check(world):
    world.stream.create_channel(CID)
    _, session = open_call(world)
    world.deliver_stream_outbox()
    world.hms.close_session(session["id"])
    world.hms.outbox.clear()  # its session.close.success never arrives
    world.sweep()
    assert world.rt.state.call(CALL).session.status == "closed"
    assert world.fields() == {"callActive": False}


def test_a_re_check_of_a_live_session_changes_nothing(world):
    world.stream.create_channel(CID)
    open_call(world)
    world.deliver_stream_outbox()
    world.sweep()
    assert world.fields() == {"callActive": True, "callId": CALL}
    assert len(world.patches()) == 1


def test_re_checks_are_bounded_per_sweep_and_cover_every_session_in_turn(redis_client):
    world = World(redis_client, session_checks_per_minute=3, sweep_interval_seconds=60)
    for n in range(10):
        started_hours_ago(world, 1, name=f"room-{n}")
    checked: list[str] = []
    for _ in range(4):
        sweeps.schedule_checks(world.rt)
        tasks = world.queue.take()
        assert len(tasks) <= 3
        checked += [args[0] for _, args, _ in tasks]
    assert len(set(checked)) == 10


def test_stale_flag_with_a_one_second_grace(world):
    world.stream.create_channel(CID)
    world.stream.client_update(CID, {"data.callActive": True, "data.callId": CALL})
    world.deliver_stream_outbox()
    assert world.fields() == {"callActive": True, "callId": CALL}
    world.now += 1.5
    world.drain()
    assert world.fields() == {"callActive": False}


def test_client_end_of_a_session_also_due_for_the_sweep_ends_the_room_once(world):
    world.stream.create_channel(CID)
    started_hours_ago(world, 13)
    world.deliver_stream_outbox()
    world.stream.client_update(CID, {"data": {"callActive": False}})
    world.deliver_stream_outbox()
    world.sweep()
    assert len(end_rooms(world)) == 1


def test_sweep_records_when_it_ran(world):
    world.sweep()
    assert float(world.rt.redis.get(sweeps.LAST_SWEEP)) == pytest.approx(world.now)


def test_end_session_after_close_does_nothing(world):
    world.stream.create_channel(CID)
    room, session = open_call(world)
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    sessions.end_session(world.rt, CALL, session["id"], "late")
    assert end_rooms(world) == []


def test_the_sweep_drains_a_queue_whose_drainer_died(world):
    """A drainer killed holding the turn: once its lease lapses, the sweep publishes a drain and
    the channel it left waiting is written (docs/design.md, "The write queue")."""
    from worker.core import actions
    from worker.steps import sync

    world.stream.create_channel(CID)
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"], started_at=world.now)
    record_hms_event(world.rt.state, world.hms_event("session.open.success", session, room), world.now)
    queue = sync.CHANNELS.queue(world.rt)
    queue.offer(CID, world.now, world.now, direct=False)
    world.queue.take()  # the drain it published is lost with its worker
    assert queue.take_turn("dead")
    assert queue.next("dead", world.now).key == CID  # then killed mid-write
    world.rt.redis.delete(queue.turn)  # its lease lapses
    assert world.fields() == {}
    world.sweep()  # publishes a drain (the queue holds a key and no turn is live) and runs it
    assert world.fields() == {"callActive": True, "callId": CALL}
    assert not any(name == actions.DRAIN_WRITES for name, _, _ in world.queue.tasks)
