"""The indexes kept beside a session's or a channel's record, as commands for the record's own
compare-and-set: the open sessions by start bucket (the sweep's pages), the sessions marked
ending, and the bound channels (the resync's list)."""

from __future__ import annotations

from worker.core.sessions import Session
from worker.store.cas import NO_TTL, Command
from worker.store.keys import (
    BOUND_CHANNELS,
    BUCKET_SECONDS,
    CALL_TTL,
    CLOSED_TTL,
    ENDING_SESSIONS,
    OPEN_BUCKETS,
    bucket_key,
    bucket_of,
)


def session_moves(member: str, before: Session | None, after: Session) -> tuple[int, list[Command]]:
    """The TTL and the open-index moves that go with writing `after` over `before`."""
    moves: list[Command] = []
    stays = after.is_open and before is not None and bucket_of(after.started_at) == bucket_of(before.started_at)
    if before is not None and before.is_open and not stays:
        moves.append(("SREM", bucket_key(bucket_of(before.started_at)), member))
    moves += _ending_moves(member, before, after)
    if not after.is_open:
        return CLOSED_TTL, moves
    bucket = bucket_of(after.started_at)
    moves += [("SADD", bucket_key(bucket), member), ("ZADD", OPEN_BUCKETS, bucket * BUCKET_SECONDS, str(bucket))]
    return NO_TTL, moves  # an open session never expires: the sweep ends it


def _ending_moves(member: str, before: Session | None, after: Session) -> list[Command]:
    """Keep the index of sessions marked ending (the sweep ends again one whose end did not complete)."""
    was_ending, is_ending = before is not None and before.status == "ending", after.status == "ending"
    if is_ending and not was_ending:
        return [("ZADD", ENDING_SESSIONS, after.ended_at or 0, member)]
    return [("ZREM", ENDING_SESSIONS, member)] if was_ending and not is_ending else []


def bound_index(cid: str, at: float) -> list[Command]:
    """Keep the index of bound channels at `at` (callsync's clock, never an event's); bindings
    unseen for CALL_TTL are forgotten, as their keys are."""
    return [("ZADD", BOUND_CHANNELS, "GT", at, cid), ("ZREMRANGEBYSCORE", BOUND_CHANNELS, "-inf", at - CALL_TTL)]
