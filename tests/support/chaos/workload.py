"""The chaos run's settings, credentials and workload: session lifecycles over channels (tests/support/chaos)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from standins.credentials import HMS_SECRET, HOOK_SECRET, STREAM_SECRET

SECRETS = (STREAM_SECRET, HMS_SECRET, HOOK_SECRET)
TOKENISH = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*|(?i:bearer\s+)[\w.~+/=-]{8,}|api_key=")
TOPIC = {"topic": "chaos"}  # a field callsync must never touch (docs/behaviour.md, rule 2)


@dataclass
class Config:
    lifecycles: int = 2000
    channels: int = 200
    seconds: float = 200.0  # how long the sessions keep opening and closing
    rate: str = "30/s"  # CALLSYNC_STREAM_UPDATE_RATE
    duplicate: float = 0.20
    window: float = 2.0
    p_5xx: float = 0.05
    p_429: float = 0.02
    client_claims: float = 0.2  # lifecycles whose member writes the claim right after joining
    claim_lag: float = 1.0  # seconds more before their session.open.success reaches the courier
    echo_first: float = 0.25  # writes whose echo Stream delivers before answering them (as it may)
    echo_lead: float = 0.05  # seconds such an answer waits after the echo was taken
    seed: int = 6
    visibility_timeout: int = 30
    settle_deadline: float = 240.0
    kill_worker: bool = True
    restart_redis: bool = True
    log_dir: Path | None = None

    @classmethod
    def short(cls) -> Config:
        return cls(lifecycles=200, channels=40, seconds=40.0, rate="20/s", visibility_timeout=20, settle_deadline=120.0)


@dataclass
class Plan:
    events: list[tuple[float, int, str]]  # (offset seconds, channel index, "open" | "claimed open" | "close")
    left_open: set[int]  # channels whose last session stays open
    minimum_writes: int  # state changes of the channels that in-order delivery requires


def plan_workload(cfg: Config) -> Plan:
    """Each channel runs its share of lifecycles one after another. A third of the channels
    open their first session within the same second (the 9 o'clock stand-up: a burst over the
    Stream update ceiling); a quarter keep a last session open at the end. In a "claimed open"
    the member writes the claim: in-order delivery then needs no write for the open."""
    rng, claims = random.Random(cfg.seed), random.Random(cfg.seed + 4)
    minimum = 0
    events: list[tuple[float, int, str]] = []
    per_channel = [cfg.lifecycles // cfg.channels + (1 if n < cfg.lifecycles % cfg.channels else 0) for n in range(cfg.channels)]
    left_open = {n for n in range(cfg.channels) if rng.random() < 0.25}
    for n, count in enumerate(per_channel):
        slot = cfg.seconds * 0.75 / max(count + (n in left_open), 1)
        t = rng.uniform(0.5, 1.5) if rng.random() < 1 / 3 else rng.uniform(0, cfg.seconds * 0.2)
        for k, last in enumerate([False] * count + [True] * (n in left_open)):
            claimed = claims.random() < cfg.client_claims
            if claimed and k:
                # The member starts the next call once callsync has had the last one's close
                # (deliveries lag up to `window`): calls in a channel are minutes apart, and a
                # claim made while callsync's clear of the last call is still on its way is the
                # race of two unconditional partial updates, which Stream offers no way around.
                t += cfg.window + 1.0
            events.append((t, n, "claimed open" if claimed else "open"))
            minimum += 0 if claimed else 1
            if last:
                break
            hold = rng.uniform(0.6, 0.85) * slot
            events.append((t + hold, n, "close"))
            minimum += 1
            t += hold + rng.uniform(0.1, 0.25) * slot
    events.sort()
    return Plan(events, left_open, minimum)


def cid_of(n: int) -> str:
    return f"messaging:chaos-{n:04d}"


def room_of(n: int) -> str:
    return f"call-{cid_of(n)}"  # the reference client's room name: binds the channel
