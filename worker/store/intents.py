"""A channel's write in flight, in the channel's record (core.channels.WriteIntent).

A reconcile records what it is about to write before its PATCH leaves, so that the write's
echo is known for callsync's own whenever it arrives; the write's bookkeeping settles the
intent, a failed write drops it, and the core lets one lapse whose writer died. Each step is a
compare-and-set over the record (worker/store/state.py), decided by core.channels.
"""

from __future__ import annotations

from worker.core import channels
from worker.core.channels import ChannelRecord, WriteIntent
from worker.core.events import CallFields
from worker.store import scripts
from worker.store.cas import compare_and_set
from worker.store.codec import Raw, record_from_hash, record_to_hash
from worker.store.keys import CALL_TTL, channel_key
from worker.store.state import State


def record_intent(state: State, cid: str, read: Raw, intent: WriteIntent) -> tuple[Raw, ChannelRecord | None]:
    """Record `intent` as the channel's write in flight over whatever the record holds (`read`:
    the record as the reconcile read it, tried first). Returns `read` with the intent, raw and
    decoded: what the write's bookkeeping compares with, so news recorded since the reconcile
    read the record is not taken for the record the write was planned from."""
    key = channel_key(cid)

    def decide(raw: Raw) -> tuple[None, scripts.ScriptCall | None]:
        record = channels.with_intent(record_from_hash(cid, raw), intent)
        return None, compare_and_set(key, raw, record_to_hash(record)) if record is not None else None

    state.update_hash(key, decide, first=read)
    planned = channels.with_intent(record_from_hash(cid, read), intent)
    if planned is None:
        return read, None
    return {field.encode(): str(value).encode() for field, value in record_to_hash(planned).items()}, planned


def settle_write(state: State, cid: str, read: Raw, fields: CallFields, intent: WriteIntent) -> bool:
    """The bookkeeping of a write whose record changed since `read` (core.channels.settle_write
    decides); returns whether the channel must be reconciled again."""
    key = channel_key(cid)
    before = record_from_hash(cid, read)

    def decide(raw: Raw) -> tuple[bool, scripts.ScriptCall | None]:
        new, again = channels.settle_write(cid, before, record_from_hash(cid, raw), fields, intent)
        return again, compare_and_set(key, raw, record_to_hash(new), CALL_TTL) if new is not None else None

    return bool(state.update_hash(key, decide)[0])


def drop_intent(state: State, cid: str, intent: WriteIntent) -> None:
    """The write `intent` failed: the channel has no write in flight any more (an echo of it
    that still comes is news, and the writer's retry plans again)."""
    key = channel_key(cid)

    def decide(raw: Raw) -> tuple[None, scripts.ScriptCall | None]:
        new = channels.drop_intent(record_from_hash(cid, raw), intent)
        return None, compare_and_set(key, raw, record_to_hash(new)) if new is not None else None

    state.update_hash(key, decide)
