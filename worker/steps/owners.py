"""Ownership kept where the platform keeps it: the 100ms room's description names the channel
that owns a free-form call id (a reference-form id names its channel itself), so the owner
outlives callsync's Redis (core.binding)."""

from __future__ import annotations

import logging

from worker.core import binding
from worker.core.actions import Reconcile
from worker.core.calls import Room
from worker.steps.runtime import Runtime

log = logging.getLogger("callsync.sync")


def call_room(rt: Runtime, call_id: str) -> Room | None:
    """The 100ms room serving `call_id`: named exactly by it, else by its derived name."""
    for name in (call_id, binding.derived_room_name(call_id)):
        room = rt.hms.room_by_name(name)
        if room is not None and room.name == name:
            return room
    return None


def record_owner(rt: Runtime, call_id: str, cid: str) -> None:
    """`cid` bound the free-form `call_id` first: write it into the room's description, unless the
    room already names an owner, which is the platform's word: then that channel owns the call."""
    if binding.cid_of_room(call_id) is not None:
        return  # the id names its channel: nothing to record
    room = call_room(rt, call_id)
    if room is None:
        return  # no room yet: the calls API writes the owner when it creates one
    named = binding.owner_in_description(room.description)
    if named is not None and named != cid:
        if rt.state.take_ownership(call_id, named, cid, rt.clock()):
            log.info("call %s belongs to channel %s, as its 100ms room records, not to %s", call_id, named, cid)
            for channel in (cid, named):
                rt.schedule(Reconcile(channel))
        return
    description = binding.description_step(room.description, cid)
    if description is not None:
        rt.hms.describe_room(room.id, description)
        log.info("call %s: channel %s recorded as its owner in 100ms room %s", call_id, cid, room.id)
