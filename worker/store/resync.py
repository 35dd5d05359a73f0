"""The resync's keys: the run under way (resumable), the last run done, the epoch marker that
tells a lost Redis, the room-name cache, and the bound channels and records it reads in pages."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any, cast

import redis

from worker.core.channels import ChannelRecord
from worker.store.codec import record_from_hash, text
from worker.store.keys import (
    BOUND_CHANNELS,
    CALL_TTL,
    EPOCH,
    LAST_FULL_RESYNC,
    LAST_RESYNC,
    RESYNC_RUN,
    channel_key,
    room_name_key,
)


def claim_epoch(client: redis.Redis) -> bool:
    """Write the epoch marker if the store has none; True when this caller wrote it (a first
    start, or a Redis that lost its data: only one caller across processes sees True)."""
    return bool(client.set(EPOCH, uuid.uuid4().hex, nx=True))


def load_run(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(RESYNC_RUN)
    try:
        run = json.loads(raw) if raw else None
    except ValueError:
        return None
    return run if isinstance(run, dict) else None


def save_run(client: redis.Redis, run: dict[str, Any], ttl: int) -> None:
    client.set(RESYNC_RUN, json.dumps(run, separators=(",", ":")), ex=ttl)


def finish_run(client: redis.Redis, summary: dict[str, Any], full: bool, at: float) -> None:
    """The run is done: keep its summary as the last resync, drop the run under way."""
    pipe = client.pipeline(transaction=True)
    pipe.set(LAST_RESYNC, json.dumps(summary, separators=(",", ":")))
    if full:
        pipe.set(LAST_FULL_RESYNC, repr(at))
    pipe.delete(RESYNC_RUN)
    pipe.execute()


def last_resync(client: redis.Redis) -> dict[str, Any] | None:
    raw = client.get(LAST_RESYNC)
    try:
        last = json.loads(raw) if raw else None
    except ValueError:
        return None
    return last if isinstance(last, dict) else None


def last_full_resync(client: redis.Redis) -> float | None:
    raw = client.get(LAST_FULL_RESYNC)
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def bound_pages(client: redis.Redis, cursor: int, skip: int, size: int) -> Iterator[tuple[tuple[int, int] | None, list[str]]]:
    """The bound channels, `size` at a time (the last page may be shorter), from ZSCAN's `cursor`
    (0: the start) past the first `skip` members its batch returns: each page with the (cursor,
    skip) that resumes after it (None: the list is over). ZSCAN returns every member present all
    along at least once, whatever is added or rescored meanwhile (a repeat only costs a read), in
    bounded memory; its uneven batches are refilled to `size` so each QueryChannels asks for 30."""
    buffer: list[tuple[str, int, int]] = []  # each member, the cursor of its batch, its place there
    while True:
        before = cursor
        cursor, found = client.zscan(BOUND_CHANNELS, cursor, count=size)
        batch = [(text(cast(bytes, member)) or "", before, n) for n, (member, _) in enumerate(found)]
        buffer += batch[skip:]
        skip = 0
        while len(buffer) >= size or (cursor == 0 and buffer):
            page, buffer = buffer[:size], buffer[size:]
            resume = (buffer[0][1], buffer[0][2]) if buffer else (None if cursor == 0 else (cursor, 0))
            yield resume, [member for member, _, _ in page]
        if cursor == 0:
            return


def channel_records(client: redis.Redis, cids: list[str]) -> dict[str, ChannelRecord | None]:
    """The records of `cids`, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for cid in cids:
        pipe.hgetall(channel_key(cid))
    return {cid: record_from_hash(cid, raw) for cid, raw in zip(cids, pipe.execute(), strict=True)}


def room_names(client: redis.Redis, room_ids: list[str]) -> dict[str, str | None]:
    """The names of rooms looked up before, in one round trip."""
    values = cast(list[Any], client.mget([room_name_key(r) for r in room_ids])) if room_ids else []
    return {room: text(value) for room, value in zip(room_ids, values, strict=True)}


def keep_room_name(client: redis.Redis, room_id: str, name: str) -> None:
    client.set(room_name_key(room_id), name, ex=CALL_TTL)
