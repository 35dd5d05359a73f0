"""Which channel a call belongs to, and which 100ms room serves it (docs/behaviour.md, terms).

A call id belongs to one channel, its owner: the channel the reference client's form
`call-<type>:<id>` names exactly, else the first channel that bound it (its create through the
calls API, or its own client's claim). Only the owner is bound to the call: a claim of the id
from any other channel binds nothing, shows nothing and ends nothing.

Call ids are compared exactly (Stream channel ids are case-sensitive); 100ms room names are not.
A call's room is named by its call id, unless another call's room holds that name in another
case: then it is `derived_room_name(call_id)`, the lower-cased id with a suffix that encodes
which letters were upper case, so that `call_of_room` reads the exact call id back and ids that
differ only in case never share a room. Ids of that derived form are reserved: no call has one.

The store's load_channel.lua mirrors `call_ids_of_channel`; tests/unit/test_binding.py holds
the two together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

ROOM_PREFIX = "call-"
ROOM_CID_RE = re.compile(r"call-([A-Za-z0-9_\-]{1,64}):([A-Za-z0-9.\-:_]{1,191})")
DERIVED_SUFFIX = "--cs"
DERIVED_RE = re.compile(r"(.+)--cs([0-9a-f]{1,64})")
# The owner written into a room's 100ms `description` (ownership outlives callsync's Redis).
OWNER_TAG = "callsync owner="


def default_call_id(cid: str) -> str:
    """The call id the reference client gives the channel's call."""
    return f"{ROOM_PREFIX}{cid}"


def cid_of_room(call_id: str | None) -> str | None:
    """The channel a call id names by the reference client's form `call-<type>:<id>`."""
    if not call_id:
        return None
    match = ROOM_CID_RE.fullmatch(call_id)
    return f"{match.group(1)}:{match.group(2)}" if match else None


def is_reserved(call_id: str) -> bool:
    """Whether `call_id` has the derived room-name form, which no call id may have."""
    return DERIVED_RE.fullmatch(call_id) is not None


def derived_room_name(call_id: str) -> str:
    """The room name of `call_id` when its own name is another call's room: the id in lower
    case, then `--cs` and a hexadecimal mask of its letters that are upper case (bit i: the
    i-th letter), e.g. `call-messaging:TEAM` -> `call-messaging:team--cs1e000`."""
    mask, letter = 0, 0
    for char in call_id:
        if char.isalpha():
            mask |= (1 << letter) if char.isupper() else 0
            letter += 1
    return f"{call_id.lower()}{DERIVED_SUFFIX}{mask:x}"


def call_of_room(room_name: str) -> str:
    """The call id a 100ms room serves: its name, or the id a derived name encodes."""
    match = DERIVED_RE.fullmatch(room_name)
    if match is None:
        return room_name
    base, mask, letter, out = match.group(1).lower(), int(match.group(2), 16), 0, []
    for char in base:
        if char.isalpha():
            out.append(char.upper() if mask >> letter & 1 else char)
            letter += 1
        else:
            out.append(char)
    return "".join(out)


def owner_of(call_id: str, recorded: str | None) -> str | None:
    """The channel `call_id` belongs to: the one its reference form names, else the recorded
    first binder (None: nobody has bound it yet)."""
    return cid_of_room(call_id) or recorded


def may_bind(cid: str, call_id: str, recorded: str | None) -> bool:
    """Whether `cid` binds `call_id` by showing it: only its owner, or the first to bind it."""
    owner = owner_of(call_id, recorded)
    return owner is None or owner == cid


def owner_description(cid: str) -> str:
    """The room description that records `cid` as the owner of the room's call."""
    return f"{OWNER_TAG}{cid}"


def owner_in_description(description: object) -> str | None:
    """The owner a room's description records (None: it records none)."""
    if not isinstance(description, str) or not description.startswith(OWNER_TAG):
        return None
    return description.removeprefix(OWNER_TAG).strip() or None


def call_ids_of_channel(cid: str, bound: Iterable[str]) -> list[str]:
    """The calls of a channel: those bound to it (in their order), and its default call id."""
    ids = list(bound)
    default = default_call_id(cid)
    if default not in ids:
        ids.append(default)
    return ids


def description_step(description: str | None, cid: str) -> str | None:
    """What the room of a free-form call, first bound by `cid`, needs: the description to write
    (None: nothing). A description that records an owner is the platform's word and stays; one
    the app wrote for itself (not callsync's) is never overwritten."""
    if description:
        return None
    return owner_description(cid)
