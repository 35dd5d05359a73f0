"""Which channel a call belongs to: the reference client's `call-<cid>` rule, written once.

The reference client names a channel's call (and so its 100ms room) `call-<type>:<id>`
(docs/behaviour.md, terms). A call may also be bound to channels by Stream events that show it
as their `callId` (the store keeps those bindings). The store's load_channel.lua mirrors
`default_call_id` and `call_ids_of_channel` in one atomic read; tests/test_binding.py holds the
two together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ROOM_PREFIX = "call-"
ROOM_CID_RE = re.compile(r"call-([A-Za-z0-9_\-]{1,64}):([A-Za-z0-9.\-:_]{1,191})")


def default_call_id(cid: str) -> str:
    """The call id the reference client gives the channel's call."""
    return f"{ROOM_PREFIX}{cid}"


def cid_of_room(room_name: str | None) -> str | None:
    """The channel a room name binds by the reference client's `call-<type>:<id>`."""
    if not room_name:
        return None
    match = ROOM_CID_RE.fullmatch(room_name)
    return f"{match.group(1)}:{match.group(2)}" if match else None


def channels_of_call(call_id: str, bound: Iterable[str]) -> set[str]:
    """The channels of a call: those bound to it, and the one its name binds."""
    cids = {cid for cid in bound if cid}
    named = cid_of_room(call_id)
    if named:
        cids.add(named)
    return cids


def call_ids_of_channel(cid: str, bound: Iterable[str]) -> list[str]:
    """The calls of a channel: those bound to it (in their order), and its default call id
    unless a binding already names it (room names are case-insensitive in 100ms)."""
    ids = list(bound)
    default = default_call_id(cid)
    if all(call_id.lower() != default.lower() for call_id in ids):
        ids.append(default)
    return ids
