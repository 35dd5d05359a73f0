#!/usr/bin/env python3
"""The chaos run (issue 6): session lifecycles through the real processes while everything goes wrong.

    .venv/bin/python bench/chaos.py                  # 2,000 lifecycles over 200 channels
    .venv/bin/python bench/chaos.py --short          # 200 over 40 (what tests/e2e/test_chaos.py runs)

Real `callsync web` (1), `worker` (2) and `beat` (2) processes run against the Stream and
100ms stand-ins (served over HTTP in this process) and a Redis server of the run's own
(append-only file on, in a temporary directory, on a free port). The stand-ins do not post
their webhooks: a courier here takes them from their outboxes (100ms session open/close,
and Stream's `channel.updated` echoes of callsync's own writes) and delivers each after a
random 0-2 s delay, so deliveries are shuffled within 2-second windows; 20% are delivered
twice; a 503 or a refused connection is retried as the platforms do. In a fifth of the
lifecycles a member writes the claim (`callActive`/`callId`) right after joining, as the
reference client does, and that session's `session.open.success` reaches the courier a second
later. The Stream stand-in behaves as the live API: partial updates leave `channel.updated_at`
unchanged, events carry their own `created_at`; for a quarter of callsync's writes (seeded) the
Stream stand-in hands the write's echo to the courier, which delivers it at once, before the
write's answer (as Stream may: it sends `channel.updated` as soon as it applies the update); the
outbox copy follows as a duplicate. Upstream, 5% of API
calls answer a 5xx and 2% a 429 with the platform's wait headers. In the middle one worker's
whole process group is SIGKILLed (a process manager starts a replacement), then Redis is
SIGKILLed and started again on the same port and append-only file.

Afterwards, once the queue is drained and nothing is delivered or written any more, it
prints: channels right (the Stream stand-in's fields against the 100ms stand-in's sessions),
every flag cleared while the session it was raised for was live (must be none), every dead
letter classified, Stream writes against the minimum in-order delivery needs, the
busiest window of successful Stream updates against `CALLSYNC_STREAM_UPDATE_RATE`, and a
secret scan of everything the run produced (process logs, dead letters, /metrics, error bodies).

The harness lives in tests/support/chaos/ (the test runs the same code); this is its command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.chaos import Config, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", action="store_true", help="200 lifecycles over 40 channels (the CI form)")
    parser.add_argument("--lifecycles", type=int)
    parser.add_argument("--channels", type=int)
    parser.add_argument("--seconds", type=float, help="how long sessions keep opening and closing")
    parser.add_argument("--rate", help="CALLSYNC_STREAM_UPDATE_RATE for the run, e.g. 30/s")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--visibility-timeout", type=int)
    parser.add_argument("--echo-first", type=float, help="share of writes whose echo comes before their answer (0.25)")
    parser.add_argument("--logs", type=Path, help="keep the processes' logs here")
    args = parser.parse_args(argv)
    cfg = Config.short() if args.short else Config()
    for name in ("lifecycles", "channels", "seconds", "rate", "seed", "visibility_timeout", "echo_first"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    cfg.log_dir = args.logs
    report = run(cfg)
    print("\n".join(report.lines()), flush=True)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
