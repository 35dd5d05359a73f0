"""Reads and writes of callsync's store that only tests make (worker.store.state serves the roles)."""

from __future__ import annotations

from typing import Any

from worker.core.events import HmsEvent
from worker.core.reconcile import Channel
from worker.core.sessions import Session
from worker.store.codec import channel_from_hash
from worker.store.keys import channel_key
from worker.store.state import State


def record_hms_event(state: State, event: HmsEvent, now: float) -> Session | None:
    """Apply `event` to its room's call record at `now` as the worker does
    (`State.record_hms_event_and_channels`); returns the session as observed."""
    return state.record_hms_event_and_channels(event, now)[0]


def recorded_channel(state: State, cid: str) -> Channel:
    """The channel's record as stored, without its calls (`State.load` reads them too)."""
    return channel_from_hash(cid, state.redis.hgetall(channel_key(cid)))


def snapshot(client: Any) -> dict[Any, tuple[bytes, int]]:
    """Every key's dump and TTL (ms), to put the database back with `restore_snapshot`."""
    return {k: (client.dump(k), client.pttl(k)) for k in client.keys("*")}


def restore_snapshot(client: Any, saved: dict[Any, tuple[bytes, int]]) -> None:
    """The database as `snapshot` saw it, and nothing else."""
    client.flushdb()
    for key, (value, ttl) in saved.items():
        client.restore(key, max(ttl, 0), value)
