"""`POST /calls/{id}/end` marks the session ending and queues its end in one step (issue 18,
item 4), and the sweep ends again a session left ending (worker/steps/sweep.py)."""

from __future__ import annotations

import redis

from tests.support.calls_api import CALL, Served, queued, web_for
from tests.support.world import World, open_call
from worker.steps import sweep as sweeps
from worker.steps.sweep import ENDING_RETRY_SECONDS
from worker.store.enqueue import QUEUE
from worker.store.keys import ENDING_SESSIONS, OPEN_BUCKETS
from worker.store.state import State


def open_index(client: redis.Redis) -> set[bytes]:
    return {m for bucket in client.zrange(OPEN_BUCKETS, 0, -1) for m in client.smembers(f"cs:ob:{bucket.decode()}")}


def live_session(web, room_id: str) -> str:  # type: ignore[no-untyped-def]
    session = web.hms.open_session(room_id)  # its webhook never reached callsync: the end adopts it
    return str(session["id"])


def test_a_full_queue_refuses_the_end_with_a_503_and_leaves_the_session_open(redis_client: redis.Redis, served: Served) -> None:
    web = web_for(served, redis_client, max_queue_depth=2)
    room_id = web.create("alice").json["call"]["hms"]["room_id"]
    session_id = live_session(web, room_id)
    redis_client.lpush(QUEUE, "waiting-1", "waiting-2")  # the queue holds its ceiling
    refused = web.end("bob")
    assert refused.status_code == 503 and refused.mimetype == "application/json"
    assert refused.json == {"error": "too many tasks waiting; retry later"} and refused.headers["Retry-After"] == "10"
    recorded = State(redis_client).call(CALL).session
    assert recorded is not None and (recorded.session_id, recorded.status) == (session_id, "open")
    assert open_index(redis_client) == {CALL.encode()}  # still where the sweep looks
    assert redis_client.llen(QUEUE) == 2 and not redis_client.exists(ENDING_SESSIONS)
    redis_client.rpop(QUEUE)  # a worker took one: the retry goes through
    assert web.end("bob").json == {"status": "ending"}
    redis_client.rpop(QUEUE)  # the other placeholder: what is left is what the end queued
    assert [(task, args[:2]) for task, args in queued(redis_client)] == [("callsync.end_session", [CALL, session_id])]
    assert State(redis_client).call(CALL).session.status == "ending"  # type: ignore[union-attr]
    assert open_index(redis_client) == set() and redis_client.zscore(ENDING_SESSIONS, CALL) is not None


def test_a_redis_error_in_the_step_writes_neither_the_mark_nor_the_task(redis_client: redis.Redis, served: Served) -> None:
    web = web_for(served, redis_client)
    room_id = web.create("alice").json["call"]["hms"]["room_id"]
    live_session(web, room_id)
    redis_client.set(QUEUE, "not a list")  # the step's first command fails (WRONGTYPE): Redis refused it
    refused = web.end("bob")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1" and "error" in refused.json
    assert State(redis_client).call(CALL).session.status == "open"  # type: ignore[union-attr]
    assert open_index(redis_client) == {CALL.encode()}
    redis_client.delete(QUEUE)
    assert web.end("bob").json == {"status": "ending"} and len(queued(redis_client)) == 1


def end_rooms(world: World) -> list[str]:
    return [path for _, path, _ in world.hms.calls if path.endswith("/end-room")]


def test_a_session_left_ending_is_ended_again_by_the_sweep(world: World) -> None:
    room, session = open_call(world)
    state = State(world.rt.redis)
    assert state.begin_ending(CALL, session["id"], world.now) is not None  # its end task was then lost
    world.now += ENDING_RETRY_SECONDS - 1
    assert world.sweep().ended_again == 0 and end_rooms(world) == []  # within the bound: its end may be on its way
    world.now += 2
    result = world.sweep()
    assert result.ended_again == 1 and end_rooms(world) == [f"/active-rooms/{room['id']}/end-room"]
    world.deliver_hms(world.hms_event("session.close.success", session, room))
    assert state.call(CALL).session.status == "closed"  # type: ignore[union-attr]
    assert not world.rt.redis.zrange(ENDING_SESSIONS, 0, -1)  # closed: out of the index
    world.now += 2 * ENDING_RETRY_SECONDS
    assert world.sweep().ended_again == 0 and len(end_rooms(world)) == 1


def test_a_session_still_ending_is_sent_once_per_bound_and_a_lost_close_is_recorded(world: World) -> None:
    _, session = open_call(world)
    state = State(world.rt.redis)
    state.begin_ending(CALL, session["id"], world.now)
    world.hms.lose_next_webhooks(1)
    world.hms.close_session(session["id"])  # 100ms ended it; the close never reached callsync
    world.now += ENDING_RETRY_SECONDS + 1
    assert world.sweep().ended_again == 1  # the end finds it over in 100ms: recorded closed, no end-room
    assert state.call(CALL).session.status == "closed" and end_rooms(world) == []  # type: ignore[union-attr]
    world.now += ENDING_RETRY_SECONDS + 1
    assert world.sweep().ended_again == 0


def test_the_sweeps_own_claim_joins_the_index_of_ending_sessions(world: World) -> None:
    room, _ = open_call(world)
    world.now += world.settings.max_session_seconds + 1
    first = sweeps.sweep(world.rt)
    lost = world.queue.take()  # its end task is lost
    assert first.ended == 1 and [task for task, _, _ in lost] == ["callsync.end_session"]
    assert world.rt.redis.zscore(ENDING_SESSIONS, CALL) is not None
    world.now += ENDING_RETRY_SECONDS + 1
    assert world.sweep().ended_again == 1 and end_rooms(world) == [f"/active-rooms/{room['id']}/end-room"]
