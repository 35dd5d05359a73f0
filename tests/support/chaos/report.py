"""What the chaos run found, its printed lines and pass rule, and the figures drawn from its records."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from tests.support.chaos.workload import Config
from worker.settings import Rate

# Successful updates are stamped as they reach the stand-in. Writes start evenly spaced, one
# each period/count (worker/core/pacing.py), and an arrival follows its start by the request's
# time: a window may hold one arrival more than the ceiling (Stream's per-second cap is twice
# the even rate, a thirtieth of its per-minute limit).
JITTER_ALLOWANCE = 1


@dataclass
class Report:
    cfg: Config
    channels_right: int = 0
    wrong: list[str] = field(default_factory=list)
    claims: int = 0  # lifecycles whose member wrote the claim
    live_cleared: list[str] = field(default_factory=list)  # flags cleared while the session they were raised for was live
    raced: list[str] = field(default_factory=list)  # ... by a clear decided before callsync had the member's claim
    dead_letters: list[tuple[str, str, str]] = field(default_factory=list)  # (class, task, error)
    writes: int = 0
    unshown: Counter[str] = field(default_factory=Counter)  # lifecycles never shown active, by fault under way
    redundant_writes: int = 0  # successful PATCHes that left the call fields as they were
    minimum_writes: int = 0
    ceiling: Rate = field(default_factory=lambda: Rate(30, 1.0))
    busiest: int = 0
    tightest: float = 0.0  # the shortest span holding ceiling + 1 successful updates
    windows_at_ceiling: float = 0.0
    deliveries: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    faults: dict[str, dict[int, int]] = field(default_factory=dict)
    upstream_calls: dict[str, int] = field(default_factory=dict)
    scanned_bytes: int = 0
    scanned_items: int = 0
    leaks: list[str] = field(default_factory=list)
    died: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    settled: bool = False
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.writes / self.minimum_writes if self.minimum_writes else 0.0

    @property
    def unexplained(self) -> list[tuple[str, str, str]]:
        return [letter for letter in self.dead_letters if letter[0] == "unexplained"]

    def ok(self) -> bool:
        return (
            self.settled
            and not self.wrong
            and not self.live_cleared
            and not self.unexplained
            and self.ratio <= 1.05
            and self.busiest <= self.ceiling.count + JITTER_ALLOWANCE
            and not self.leaks
            and not self.lost
            and not self.died
        )

    def lines(self) -> list[str]:
        c, n = self.cfg, self.cfg.channels
        out = [
            f"chaos run: {c.lifecycles} session lifecycles over {n} channels in {self.seconds:.0f} s "
            f"(seed {c.seed}; web x1, worker x2, beat x2; visibility timeout {c.visibility_timeout} s)",
            *(f"  {line}" for line in self.timeline),
            f"deliveries: {self.deliveries['hms webhooks']} 100ms + {self.deliveries['stream webhooks']} Stream webhooks, "
            f"{self.deliveries['duplicated']} duplicated, shuffled within {c.window:.0f} s; "
            f"answers: {self.deliveries['answered accepted']} accepted, {self.deliveries['answered duplicate']} duplicate, "
            f"{self.deliveries['answered ignored']} ignored; {self.deliveries['retried after 503']} retried after 503, "
            f"{self.deliveries['retried after a refused connection']} after a refused connection; lost {self.lost}; "
            f"{self.deliveries['stream echoes before their answer']} Stream echoes delivered before their write's answer "
            f"({self.deliveries['echo before its answer answered accepted']} accepted, then the outbox copy)",
            "upstream faults injected: "
            + "; ".join(
                f"{api} {sum(f.values())} of {self.upstream_calls.get(api, 0)} calls ({_faults(f)})"
                for api, f in self.faults.items()
            ),
            f"channels right: {self.channels_right}/{n} ({100 * self.channels_right / n:.0f}%)",
            *(f"  WRONG {line}" for line in self.wrong[:20]),
            f"flags cleared while the session they were raised for was live: {len(self.live_cleared)} (target 0; "
            f"{self.claims} lifecycles claimed by the member right after joining); and {len(self.raced)} by a clear "
            "decided before callsync had the member's claim, landing after it",
            *(f"  CLEARED {line}" for line in self.live_cleared[:20]),
            *(f"  raced {line}" for line in self.raced[:10]),
            f"dead letters: {len(self.dead_letters)}" + (f" ({len(self.unexplained)} unexplained)" if self.dead_letters else ""),
            *(f"  [{kind}] {task}: {error}" for kind, task, error in self.dead_letters[:50]),
            f"Stream writes: {self.writes} successful PATCHes; minimum in-order delivery needs {self.minimum_writes}; "
            f"ratio {self.ratio:.3f} (target <= 1.05); {self.redundant_writes} of them changed nothing"
            + (
                f"; below the minimum: {sum(self.unshown.values())} lifecycles were over before their write came due "
                "(open and close both recorded first: nothing to write), opened while: "
                + ", ".join(f"{what} {count}" for what, count in self.unshown.most_common())
                if self.writes - self.redundant_writes < self.minimum_writes
                else ""
            ),
            f"Stream update ceiling {self.ceiling.count}/{self.ceiling.period:g}s: busiest {self.ceiling.period:g} s window "
            f"at the stand-in {self.busiest} (ceiling reached in {self.windows_at_ceiling:.0%} of the windows with writes; "
            f"the shortest span of {self.ceiling.count + 1} updates: {self.tightest:.3f} s; "
            f"{JITTER_ALLOWANCE} over is arrival jitter)",
            f"secret scan: {self.scanned_items} items, {self.scanned_bytes:,} bytes "
            "(logs, dead letters, /metrics, error bodies): "
            + (f"{len(self.leaks)} finding(s): {self.leaks[:5]}" if self.leaks else "no secret or token"),
        ]
        if self.died:
            out.append(f"processes that died unasked: {self.died}")
        if not self.settled:
            out.append(f"NOT SETTLED within {c.settle_deadline:.0f} s")
        out.append("RESULT: " + ("PASS" if self.ok() else "FAIL"))
        return out


def _faults(faults: dict[int, int]) -> str:
    return ", ".join(f"{status}: {count}" for status, count in sorted(faults.items()))


def classify(error: str) -> str:
    """Why a task became a dead letter: an injected upstream fault that outlasted the retries, or unexplained."""
    if re.match(r"(stream|hms) (5\d\d|429|transport)", error):
        return "upstream fault outlasted the retries"
    if error.startswith("redis"):
        return "Redis outage outlasted the retries"
    return "unexplained"


def busiest_window(times: list[float], rate: Rate) -> tuple[int, float]:
    """The most successful updates in any window of `rate.period` seconds (a window starts at an
    update, so this is the sliding maximum), and the share of such windows that reach the ceiling."""
    ordered = sorted(times)
    best, full, j = 0, 0, 0

    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + rate.period:
            j += 1
        best = max(best, j - i)
        full += j - i >= rate.count
    return best, (full / len(ordered) if ordered else 0.0)
