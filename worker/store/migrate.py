"""Converting what an earlier release wrote to the store's current layout, once per Redis.

Schema 1 (before a call belonged to one channel) keyed call records, owners and room caches by
the call id in lower case, and bound a call to every channel whose event showed it. Schema 2
keys them by the exact call id and binds a call to its owner alone (core/binding.py). Each
worker process checks the version once (`ensure_schema`); one of them converts, under a lock,
and records the version (keys.SCHEMA), so any number of workers may start at once.

Schema 1 kept when each binding was last seen, not when it was first made: the owner of a
free-form id is the channel the calls API recorded, else its only binder, else the binder seen
least recently (the one whose binding is oldest).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import redis

from worker.core import binding
from worker.store.codec import text
from worker.store.keys import (
    CALL_KEY_PREFIX,
    CALL_ROOM_NAME,
    CALL_STARTED_MS,
    CALL_STATUS,
    CALL_TTL,
    LEGACY_CALL_CHANNELS_PREFIX,
    SCHEMA,
    SCHEMA_VERSION,
    bindings_key,
    bucket_key,
    bucket_of,
    call_key,
    owner_key,
    room_key,
)

log = logging.getLogger("callsync.store")
LOCK = "cs:lock:migrate"
LOCK_SECONDS = 600
BINDINGS_PREFIX = bindings_key("")
OWNER_PREFIX = owner_key("")


def ensure_schema(client: redis.Redis) -> bool:
    """Convert the store to SCHEMA_VERSION unless it is there; True when this call converted."""
    if int(client.get(SCHEMA) or 0) >= SCHEMA_VERSION:
        return False
    lock = client.lock(LOCK, timeout=LOCK_SECONDS, blocking_timeout=LOCK_SECONDS)
    if not lock.acquire():
        return False
    try:
        if int(client.get(SCHEMA) or 0) >= SCHEMA_VERSION:
            return False  # another process converted while this one waited
        counts = to_schema_2(client)
        client.set(SCHEMA, SCHEMA_VERSION)
        log.info("store converted to schema %d: %s", SCHEMA_VERSION, counts, extra={"migration": counts})
        return True
    finally:
        lock.release()


def _scan(client: redis.Redis, prefix: str) -> Iterator[str]:
    for key in client.scan_iter(match=prefix + "*", count=1000):
        yield text(key) or ""


def to_schema_2(client: redis.Redis) -> dict[str, int]:
    """Schema 1 → 2: one owner per call (the others' bindings dropped), exact call-id keys."""
    counts = {"bindings_dropped": 0, "owners": 0, "calls_rekeyed": 0}
    old_owners = {key.removeprefix(OWNER_PREFIX): text(client.get(key)) for key in _scan(client, OWNER_PREFIX)}
    binders: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for key in _scan(client, BINDINGS_PREFIX):
        cid = key.removeprefix(BINDINGS_PREFIX)
        pairs: list[tuple[bytes, float]] = client.zrange(key, 0, -1, withscores=True)  # type: ignore[assignment]
        for member, score in pairs:
            binders[text(member) or ""].append((float(score), cid))
    # Schema 1's owners (rewritten below under exact ids), its call -> channels sets, and its
    # cache of rooms by lower-cased id (asked of 100ms again when needed).
    stale = [OWNER_PREFIX + call_id for call_id in old_owners]
    stale += [*_scan(client, LEGACY_CALL_CHANNELS_PREFIX), *_scan(client, room_key(""))]
    for key in stale:
        client.delete(key)
    for call_id, bound in binders.items():
        owner = _owner(call_id, bound, old_owners.get(call_id.lower()))
        for _, cid in bound:
            if cid != owner:
                counts["bindings_dropped"] += client.zrem(bindings_key(cid), call_id)
        if binding.cid_of_room(call_id) is None:
            client.set(owner_key(call_id), owner, ex=CALL_TTL)
            counts["owners"] += 1
    for key in list(_scan(client, CALL_KEY_PREFIX)):
        counts["calls_rekeyed"] += _rekey_call(client, key)
    return counts


def _owner(call_id: str, bound: list[tuple[float, str]], created_by: str | None) -> str:
    named = binding.cid_of_room(call_id)
    if named is not None:
        return named
    cids = {cid for _, cid in bound}
    return created_by if created_by in cids else min(bound)[1]


def _rekey_call(client: redis.Redis, key: str) -> int:
    """Move a call record kept under its lower-cased id to its exact id (schema 1 kept 100ms's
    spelling in its `n` field), with its place in the open-session index."""
    fields: dict[Any, Any] = client.hgetall(key)
    name = text(fields.get(CALL_ROOM_NAME.encode()))
    old_id = key.removeprefix(CALL_KEY_PREFIX)
    if name is None:
        return 0
    new_id = binding.call_of_room(name)
    pipe = client.pipeline(transaction=True)
    if name == new_id:
        pipe.hdel(key, CALL_ROOM_NAME)  # schema 2 keeps `n` only for a derived room name
    if new_id != old_id:
        pipe.rename(key, call_key(new_id))
        if fields.get(CALL_STATUS.encode()) == b"open":
            bucket = bucket_key(bucket_of(int(fields.get(CALL_STARTED_MS.encode(), b"0")) / 1000))
            pipe.srem(bucket, old_id)
            pipe.sadd(bucket, new_id)
    pipe.execute()
    return int(new_id != old_id)
