"""The echo of callsync's own write, whichever comes first: the echo, the PATCH's answer, the
write's bookkeeping (issue 23). Stream sends `channel.updated` as soon as it applies a write,
so the echo can reach callsync before the answer does."""

from __future__ import annotations

import math
from typing import Any

import pytest

from standins.base import rfc3339
from tests.support.state import recorded_channel
from tests.support.world import CALL, CID, World
from worker.core import actions
from worker.core.events import CallFields
from worker.core.upstream import UpstreamError
from worker.steps import sync

CLEARED = {"callActive": False}


# `receiver`: each Stream delivery through the receiver's step first, which settles an echo
# once its write is booked (docs/design.md, "The path of a webhook"): the same outcomes.
pytestmark = pytest.mark.parametrize("world", [{"ingest": False}, {"ingest": True}], ids=["worker", "receiver"], indirect=True)


def checks(world: World) -> list[Any]:
    """The calls callsync made to 100ms (a check of a claim asks for the room's sessions)."""
    return list(world.hms.calls)


def test_a_close_dated_before_an_early_echo_clears_the_channel_at_once(world):
    """The issue's channel: a session of under a second (100ms dates its start and end in whole
    seconds), callsync's write of the call, and its echo delivered while the PATCH is in flight.
    The echo is callsync's write, not a member's claim: the close clears the channel at once,
    without the stale-flag grace and without asking 100ms."""
    world.stream.create_channel(CID)
    world.deliver_stream_outbox()
    room = world.hms.create_room(CALL)
    start = float(math.floor(world.now)) + 1  # after every stamp so far
    world.now = start + 0.241
    world.stream_latency = 0.156  # the PATCH reaches Stream, which stamps its echo, then
    session = world.hms.open_session(room["id"], started_at=start)
    world.hms.outbox.clear()
    world.echo_before_answer()
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    assert world.stream.echoes_before_answer == 1 and world.stream.outbox == []
    assert world.fields() == {"callActive": True, "callId": CALL}

    world.now = start + 0.9
    world.hms.close_session(session["id"])
    world.hms.outbox.clear()
    closed = world.hms_event("session.close.success", session, room, session_stopped_at=rfc3339(start, micro=False))
    world.deliver_hms(closed)  # dated `start`: before the echo, as 100ms dates in whole seconds
    world.deliver_stream_outbox()
    assert world.fields() == CLEARED
    assert recorded_channel(world.rt.state, CID).fields == CallFields(False, None)
    assert checks(world) == []  # no 100ms check: the claim was callsync's, for that session
    world.now += 0.5  # the echo's deferred task runs again: nothing to do
    world.drain()
    world.now += 120  # past the grace: nothing was waiting on it
    world.drain()
    world.deliver_stream_outbox()
    assert checks(world) == []
    assert len(world.patches()) == 2
    assert world.queue.tasks == []


def test_an_early_echo_schedules_nothing_and_the_answer_settles_the_write(world):
    world.stream.create_channel(CID)
    world.deliver_stream_outbox()
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    world.hms.outbox.clear()
    world.echo_before_answer()
    world.deliver_hms(world.hms_event("session.open.success", session, room))
    # No reconcile, no recheck: at most the echo's own task again (its first sight of the call
    # id binds it, and a new binding reconciles; its channel was busy).
    assert {task for task, _, _ in world.queue.tasks} <= {actions.APPLY_STREAM_EVENT}
    loaded = world.rt.state.load(CID)
    assert loaded is not None and loaded.record is not None
    assert loaded.record.intent is None and not loaded.record.pending  # settled by the write's bookkeeping
    started = world.rt.state.call(CALL).session
    assert started is not None and loaded.channel.claim_since == started.started_at  # the session's claim
    world.now += 1
    world.drain()
    world.now += 120
    world.drain()
    assert world.queue.tasks == [] and len(world.patches()) == 1 and checks(world) == []


def test_a_failed_write_drops_its_intent(world):
    world.stream.create_channel(CID)
    sync.reconcile_channel(world.rt, CID)  # reads the channel: nothing to write yet
    room = world.hms.create_room(CALL)
    session = world.hms.open_session(room["id"])
    world.hms.outbox.clear()
    world.stream.fail_next(1, 400)
    with pytest.raises(UpstreamError):
        world.deliver_hms(world.hms_event("session.open.success", session, room))
    loaded = world.rt.state.load(CID)
    assert loaded is not None and loaded.record is not None and loaded.record.intent is None
    assert world.patches() == [{"set": {"data.callActive": True, "data.callId": CALL}}]  # it was sent
