"""docs/behaviour.md rule 6 end to end, on Stream's clock: the Procfile's roles as real processes
(tests/support/system.py) against a Stream stand-in whose partial updates leave
`channel.updated_at` unchanged, as the live API does."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.roles import wait_for
from tests.support.system import ACTIVE, GRACE, INACTIVE, SWEEP, System, fields, names

pytestmark = pytest.mark.redis
DAY = 86400.0


@contextlib.contextmanager
def platform_clocks(sut: System, offset: float) -> Iterator[None]:
    """The platforms stamp their payloads `offset` seconds from now while inside."""
    sut.stream.clock = sut.hms.clock = lambda: time.time() + offset
    try:
        yield
    finally:
        sut.stream.clock = sut.hms.clock = time.time


def clears(sut: System, cid: str) -> list[float]:
    """When callsync cleared `cid`'s flag (filled in as it happens)."""
    seen: list[float] = []

    def watch(changed: str, shown: dict[str, Any], by: str) -> None:
        if changed == cid and by == "server" and shown.get("callActive") is not True:
            seen.append(time.time())

    sut.stream.change_watchers.append(watch)
    return seen


def test_a_new_call_after_yesterdays_is_never_cleared(sut: System) -> None:
    cid, call = names("yesterday")
    with platform_clocks(sut, -30 * DAY):
        sut.stream.create_channel(cid)  # a month old: its updated_at stays that old
    room = sut.hms.create_room(call)
    sut.hms.lose_next_webhooks(2)
    with platform_clocks(sut, -DAY):
        yesterday = sut.hms.open_session(room["id"], started_at=time.time() - DAY - 10)
        sut.hms.close_session(yesterday["id"])
    [(_, (_, opened)), (_, (_, closed))] = sut.hms.failed[-2:]
    # Yesterday's session as callsync knows it: closed (its close delivered first, so this
    # system's 20-second session limit never has a session of yesterday's to end).
    assert sut.post_hms(closed).status_code == 202 and sut.post_hms(opened).status_code == 202
    sut.settle()
    cleared = clears(sut, cid)
    sut.hms.lose_next_webhooks(1)
    sut.hms.open_session(room["id"])  # a member starts a new call ...
    sut.stream.client_update(cid, {"data": {"callActive": True, "callId": call}})  # ... and writes the claim
    [(_, (_, opened))] = sut.hms.failed[-1:]
    time.sleep(1.0)
    assert sut.post_hms(opened).status_code == 202  # session.open.success, a second later
    time.sleep(GRACE + 2 * SWEEP + 1.0)  # past the grace and a sweep: a misjudged claim is cleared by now
    sut.settle()
    assert cleared == [] and fields(sut, cid) == ACTIVE(call)
    assert sut.patches(cid) == []  # the client's claim was true all along
    [live] = [s for s in sut.hms.sessions.values() if s["room_id"] == room["id"] and s["active"]]
    sut.hms.close_session(live["id"])
    wait_for(lambda: fields(sut, cid) == INACTIVE)


def test_reordered_stream_deliveries_keep_their_order_by_created_at(sut: System) -> None:
    cid, _ = names("reordered")
    sut.stream.create_channel(cid)
    ghost = cid.replace("messaging:", "call-elsewhere-")  # a claim no session backs
    hook_url, sut.stream.webhook_url = sut.stream.webhook_url, None  # hold the deliveries
    try:
        sut.stream.client_update(cid, {"data.callActive": True, "data.callId": ghost})
        sut.stream.client_update(cid, {"data.callActive": False}, ["data.callId"])
    finally:
        sut.stream.webhook_url = hook_url
    [first, second] = [hook for hook in sut.stream.outbox if f'"cid": "{cid}"'.encode() in hook[1]]
    for headers, body in (second, first):  # the later update arrives first
        assert httpx.post(f"{sut.webs[0]}/webhooks/stream", content=body, headers=headers).status_code == 202
    time.sleep(GRACE + 2 * SWEEP + 1.0)  # a claim believed would be checked and cleared by now
    sut.settle()
    assert sut.patches(cid) == [] and fields(sut, cid) == INACTIVE
