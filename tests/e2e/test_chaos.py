"""Issue 6: the chaos run's short form (bench/chaos.py --short) holds every figure.

200 session lifecycles over 40 channels through real web, worker (2) and beat (2) processes,
with duplicated and shuffled deliveries, members' own claims, upstream 5xx and 429s, a worker
SIGKILLed and Redis restarted in the middle, against a Stream stand-in whose partial updates
leave `channel.updated_at` unchanged (as the live API). It starts its own Redis, so it only needs the binary.
"""

from __future__ import annotations

import pytest

from tests.support.chaos import JITTER_ALLOWANCE, Config, run

pytestmark = pytest.mark.redis


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
