"""Marking a session "ending" together with what ends it, and finding ends that did not complete.

The calls API's `/end` marks the call's open session ending and queues the end task in one
atomic step (lua/queue_guard.lua + lua/compare_and_set.lua): both, or neither when the queue
holds CALLSYNC_MAX_QUEUE_DEPTH or Redis fails, so a refused end leaves the session open and
in the open-session index, and the client's retry can end it. The sweep ends again a session
left ending past a bound (`claim_stuck_endings`, lua/claim_stuck_endings.lua).
"""

from __future__ import annotations

from typing import cast

import redis

from worker.core.actions import Scheduled
from worker.core.sessions import Session, advance
from worker.store.cas import compare_and_set, written
from worker.store.codec import call_from_hash, call_to_hash, text
from worker.store.enqueue import Enqueuer, QueueFull
from worker.store.indexes import session_moves
from worker.store.keys import CALL_KEY_PREFIX, ENDING_SESSIONS, call_key
from worker.store.scripts import Script

_END_AND_QUEUE = Script(Script.named("queue_guard").source + Script.named("compare_and_set").source)
_CLAIM_STUCK = Script.named("claim_stuck_endings")


def begin_ending_queued(
    client: redis.Redis, call_id: str, session_id: str, at: float, queue: Enqueuer, task: Scheduled
) -> Session | None:
    """Move the call's open session `session_id` to "ending" and push `task` onto the queue, in
    one step; returns the session to the one caller that made the move (None: it is not open,
    nothing was pushed). Raises QueueFull (nothing written) or redis.RedisError (the step ran
    whole or not at all)."""
    key = call_key(call_id)
    message = queue.message(task.task, task.args())
    while True:
        raw = client.hgetall(key)
        old = call_from_hash(call_id, raw).session
        if old is None or old.session_id != session_id or not old.is_open:
            return None
        new = advance(old, "ending", at)
        ttl, moves = session_moves(key.removeprefix(CALL_KEY_PREFIX), old, new)
        _, _, args = compare_and_set(key, raw, call_to_hash(raw, new), ttl, [*moves, ("LPUSH", queue.queue, message)])
        result = _END_AND_QUEUE(client, [key, queue.queue], [queue.max_depth, *args])
        if result == [-1]:
            raise QueueFull(f"the queue holds {queue.max_depth} messages")
        if written(result):
            return new


def claim_stuck_endings(client: redis.Redis, marked_before: float, limit: int, now: float) -> tuple[int, list[tuple[str, str]]]:
    """The sessions marked ending at or before `marked_before` that are still ending, as (call
    id, session id), each stamped `now` so it is claimed again only after another bound; and how
    many index entries were looked at (stale ones leave the index)."""
    args = [repr(marked_before), limit, repr(now), CALL_KEY_PREFIX]
    reply = cast(list[bytes | int], _CLAIM_STUCK(client, [ENDING_SESSIONS], args))
    looked_at, flat = int(reply[0]), [text(v) or "" for v in reply[1:] if not isinstance(v, int)]
    return looked_at, list(zip(flat[::2], flat[1::2], strict=True))
