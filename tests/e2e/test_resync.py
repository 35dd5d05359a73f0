"""The resync end to end (docs/behaviour.md, rule 12; docs/operations.md, "Resync"): web, worker
and beat as real processes on real Redis, the platforms' stand-ins over HTTP, a short
CALLSYNC_RESYNC_INTERVAL_SECONDS.

callsync believes what reaches it. Here what happened never reaches it, and the resync must put
every channel right within one interval of the loss (its next run, plus a claim's grace and the
write), with the reference client's nested `data.` layout and with top-level fields:

- lost Stream deliveries (Stream retries for about 15 s and has no replay): a crashed tab's claim
  (`callActive: true` with no session) is cleared; a member's End call (`callActive: false`) on
  a live session is shown again, and no room is ended (a resync cannot tell who wrote it);
- a lost Redis (FLUSHDB of callsync's database while calls run: what FLUSHALL, or a failover
  that lost the data, leaves callsync with), then a close whose webhook is lost, a stale claim
  and a live call nobody reported: every channel right, the running calls never cleared.

The sweep runs once an hour here, so what repairs the channels is the resync alone; each test
prints how long after the loss each channel was right.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from standins import running
from tests.support.roles import environment, start_roles
from tests.support.servers import real_redis, real_url
from worker.cli import launch
from worker.store.keys import EPOCH
from worker.store.resync import last_full_resync, last_resync

pytestmark = pytest.mark.redis

INTERVAL = 8  # CALLSYNC_RESYNC_INTERVAL_SECONDS
GRACE = 1  # CALLSYNC_STALE_FLAG_GRACE_SECONDS
# One interval of the loss: the next resync starts within INTERVAL, a claim it finds is cleared
# one grace after it read it, then the reconcile writes; plus a few seconds for the processes
# on a loaded machine (two CPUs shared with other runs).
WITHIN = INTERVAL + GRACE + 4
HOLD = 1.0  # a channel counts as right once it stays right this long
LAYOUTS = [pytest.param("data.", id="nested"), pytest.param("", id="top-level")]
INACTIVE = (False, None)


@dataclass
class Run:
    prefix: str
    stream: Any
    hms: Any
    web: str
    env: dict[str, str]
    logs: Path
    children: list[launch.Child]

    # --- the platforms, as their users act on them -----------------------------------------
    def channel(self, tag: str) -> tuple[str, str]:
        """A new channel (with the layout's empty custom object) and the reference client's call id."""
        cid = f"messaging:{tag}-{time.monotonic_ns() % 10**9}"
        self.stream.create_channel(cid, **({"data": {}} if self.prefix else {}))
        return cid, f"call-{cid}"

    def shown(self, cid: str) -> tuple[Any, Any]:
        fields = self.stream.call_fields(cid)
        return fields.get("callActive"), fields.get("callId")

    def open_call(self, cid: str, call: str) -> dict[str, Any]:
        """A session opened and delivered: the channel shows it."""
        session: dict[str, Any] = self.hms.open_session(self.hms.create_room(call)["id"])
        launch.wait_for(lambda: self.shown(cid) == (True, call), 30, f"{cid} to show its call")
        return session

    def close_call(self, cid: str, session: dict[str, Any]) -> None:
        self.hms.close_session(session["id"])
        launch.wait_for(lambda: self.shown(cid) == INACTIVE, 30, f"{cid} to show no call")

    def client_write(self, cid: str, active: bool, call: str | None, delivered: bool) -> None:
        """What the reference client writes: a claim (`callActive: true` and its call id) or an
        End call (`callActive: false`, the call id removed); its webhook lost unless `delivered`."""
        p = self.prefix
        sets: dict[str, Any] = {f"{p}callActive": active, **({f"{p}callId": call} if call else {})}
        self.stream.client_update(cid, sets, [] if call else [f"{p}callId"], webhook=delivered)

    # --- what callsync did ---------------------------------------------------------------
    def end_rooms(self) -> list[str]:
        return [path for _, path, _ in self.hms.calls if path.endswith("/end-room")]

    def cleared_after(self, cid: str, since: int) -> list[dict[str, Any] | None]:
        """Partial updates of `cid` among Stream's calls from index `since` that set callActive false."""
        path = "/channels/" + cid.replace(":", "/")
        field = f"{self.prefix}callActive"
        return [
            body
            for method, p, body in self.stream.calls[since:]
            if method == "PATCH" and p == path and body and body.get("set", {}).get(field) is False
        ]

    def log(self, role: str) -> str:
        return (self.logs / f"{role}.log").read_text(errors="replace")

    def alive(self) -> None:
        dead = [c.name for c in self.children if not c.alive()]
        assert not dead, f"processes died: {dead}; logs in {self.logs}"

    def right_within(self, expected: dict[str, tuple[Any, Any]], since: float) -> dict[str, float]:
        """Wait until every channel shows what `expected` says and has for HOLD seconds; how
        long after `since` (time.monotonic) each one became right for good."""
        right_from: dict[str, float | None] = dict.fromkeys(expected)
        deadline = since + 3 * WITHIN
        while True:
            now = time.monotonic()
            for cid, wanted in expected.items():
                if self.shown(cid) != wanted:
                    right_from[cid] = None
                elif right_from[cid] is None:
                    right_from[cid] = now
            settled = [at for at in right_from.values() if at is not None and now - at >= HOLD]
            if len(settled) == len(expected):
                return {cid: round(max(at - since, 0.0), 1) for cid, at in right_from.items() if at is not None}
            if now > deadline:
                wrong = {cid: self.shown(cid) for cid, at in right_from.items() if at is None}
                raise AssertionError(f"still wrong {now - since:.0f} s after the loss: {wrong}; logs in {self.logs}")
            time.sleep(0.05)


@pytest.fixture(params=LAYOUTS)
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Run]:
    prefix: str = request.param
    store = real_redis()  # flushed: a first start
    with running(field_prefix=prefix) as platforms:
        platforms.stream.update_limit = 1_000_000  # the stand-in reports no lower limit than the run's ceiling
        port = launch.free_port()
        web = f"http://127.0.0.1:{port}"
        platforms.send_webhooks_to(web)
        env = environment(
            platforms,
            real_url(),
            CALLSYNC_FIELD_PREFIX=prefix,
            CALLSYNC_RESYNC_INTERVAL_SECONDS=INTERVAL,
            CALLSYNC_STALE_FLAG_GRACE_SECONDS=GRACE,
            CALLSYNC_SWEEP_INTERVAL_SECONDS=3600,  # the resync alone repairs what these tests lose
            CALLSYNC_STREAM_UPDATE_RATE="20/s",
            WEB_CONCURRENCY=1,
            CALLSYNC_WORKER_CONCURRENCY=2,
        )
        children = start_roles(env, tmp_path, port)
        system = Run(prefix, platforms.stream, platforms.hms, web, env, tmp_path, children)
        try:
            launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver")
            # The first start writes the epoch marker and runs a full resync (of no channel yet).
            launch.wait_for(lambda: last_resync(store), 60, "the first resync")
            yield system
            system.alive()
        finally:
            launch.stop(children)
            store.flushdb()
            store.close()


def test_lost_stream_deliveries_are_repaired_within_one_interval_and_no_room_is_ended(run: Run) -> None:
    # A channel with a call behind it (callsync bound it), and one whose call runs now.
    crashed, crashed_call = run.channel("crashed-tab")
    run.close_call(crashed, run.open_call(crashed, crashed_call))
    ended, ended_call = run.channel("end-call")
    live = run.open_call(ended, ended_call)
    resyncs_before = run.log("worker").count('"resync ')

    lost_at = time.monotonic()
    run.client_write(crashed, True, crashed_call, delivered=False)  # a tab claimed the call, then crashed
    run.client_write(ended, False, None, delivered=False)  # a member's End call; the others stay in the room
    took = run.right_within({crashed: INACTIVE, ended: (True, ended_call)}, lost_at)

    print(
        f"\nresync, lost Stream deliveries ({run.prefix or 'top-level'} fields, interval {INTERVAL} s, grace {GRACE} s): "
        f"the crashed tab's claim cleared {took[crashed]:.1f} s after the loss, the End call's channel shown "
        f"the live call again {took[ended]:.1f} s after it"
    )
    assert max(took.values()) <= WITHIN, took
    assert run.end_rooms() == [], "a resync ended a room"
    assert run.hms.sessions[live["id"]]["active"]
    worker = run.log("worker")
    for cid in (crashed, ended):  # the resync found them (the sweep did not run meanwhile)
        assert f"resync: channel {cid} shows" in worker, cid
    assert worker.count('"resync ') > resyncs_before


def test_after_a_lost_redis_every_channel_is_right_within_one_interval(run: Run) -> None:
    running_call, running_id = run.channel("running")
    run.open_call(running_call, running_id)
    lost_close, lost_close_id = run.channel("close-lost")
    closing = run.open_call(lost_close, lost_close_id)
    quiet, quiet_id = run.channel("quiet")
    run.close_call(quiet, run.open_call(quiet, quiet_id))
    stale, stale_id = run.channel("stale")
    unreported, unreported_id = run.channel("unreported")
    calls_before = len(run.stream.calls)
    store = redis.Redis.from_url(real_url())

    lost_at = time.monotonic()
    store.flushdb()  # callsync's Redis loses everything while two calls run (FLUSHALL's effect on its database)
    run.hms.lose_next_webhooks(2)
    run.hms.close_session(closing["id"])  # its close is lost
    nobody = run.hms.open_session(run.hms.create_room(unreported_id)["id"])  # a call nobody reported
    run.client_write(stale, True, stale_id, delivered=False)  # a crashed tab's claim, lost too
    expected = {
        running_call: (True, running_id),
        lost_close: INACTIVE,
        quiet: INACTIVE,
        stale: INACTIVE,
        unreported: (True, unreported_id),
    }
    took = run.right_within(expected, lost_at)

    names = {running_call: "running", lost_close: "close lost", quiet: "ended before", stale: "stale claim"}
    shown = ", ".join(f"{names.get(cid, 'unreported call')} {at:.1f} s" for cid, at in took.items())
    layout = run.prefix or "top-level"
    print(f"\nresync after a lost Redis ({layout} fields, interval {INTERVAL} s, grace {GRACE} s): right after {shown}")
    assert max(took.values()) <= WITHIN, took
    assert run.cleared_after(running_call, calls_before) == [], "a running call's channel was cleared"
    assert run.end_rooms() == [], "a resync ended a room"
    assert run.hms.sessions[nobody["id"]]["active"]
    assert store.get(EPOCH), "the epoch marker is written again"
    assert "no epoch marker" in run.log("beat")
    assert last_full_resync(store) is not None, "no full resync since the loss"
    store.close()
