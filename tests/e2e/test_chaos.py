"""Issue 6: the chaos run's short form (bench/chaos.py --short) holds every figure.

200 session lifecycles over 40 channels through real web, worker (2) and beat (2) processes,
with duplicated and shuffled deliveries, members' own claims, upstream 5xx and 429s, a worker
SIGKILLed and Redis restarted in the middle, against a Stream stand-in whose partial updates
leave `channel.updated_at` unchanged (as the live API). It starts its own Redis, so it only needs the binary.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.support.chaos import JITTER_ALLOWANCE, Config, run
from tests.support.chaos.harness import Chaos, LiveClear


@pytest.mark.redis
def test_the_short_chaos_run_holds(capsys: pytest.CaptureFixture[str]) -> None:
    report = run(Config.short())
    with capsys.disabled():
        print("\n" + "\n".join(report.lines()))
    assert report.settled, report.timeline[-2:]
    assert report.channels_right == report.cfg.channels, report.wrong
    assert report.claims and not report.live_cleared, report.live_cleared  # members claimed; none cleared live
    assert not report.unexplained, report.dead_letters
    assert report.ratio <= 1.05
    assert report.busiest <= report.ceiling.count + JITTER_ALLOWANCE
    assert not report.lost and not report.died and not report.leaks


def test_a_live_clear_is_judged_by_what_callsync_had_when_it_decided(tmp_path) -> None:
    # The worker logs each write with the record version it was planned from; the run's reading
    # of Redis as the PATCH arrived (here: the claim already recorded) is only the fallback.
    chaos = Chaos(Config(log_dir=tmp_path), tmp_path)
    claim, arrived = 1_800_000_000.0, 1_800_000_000.5

    def logged(cid: str, at: float, planned_from: float, session: str | None = None) -> str:
        stamp = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        line = {"ts": stamp, "logger": "callsync.sync", "msg": f"channel {cid} call fields set to active=False callId=None"}
        return json.dumps({**line, "cid": cid, "active": False, "planned_from": planned_from, "session_id": session})

    (tmp_path / "worker1.log").write_text(
        "\n".join(
            [
                logged("m:before", arrived + 0.01, claim - 0.2),  # decided before the claim: a race
                logged("m:after", arrived + 0.01, claim + 0.1),  # decided with the claim in hand
                logged("m:open", arrived + 0.01, claim - 0.2, "s1"),  # decided while it had the session open
                logged("m:old", arrived - 5, claim - 1),  # an earlier write of that channel: not this one
            ]
        )
    )
    for cid in ("m:before", "m:after", "m:open", "m:old", "m:unlogged"):
        chaos.clears.append(LiveClear(cid, "s1", cid, arrived, claim, claim + 0.3, False))
    chaos.judge_clears()
    assert chaos.report.raced == ["m:before"]
    # m:old and m:unlogged have no line of their own: Redis as their PATCH arrived had the claim.
    assert chaos.report.live_cleared == ["m:after", "m:open", "m:old", "m:unlogged"]
