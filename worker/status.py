"""What operators ask first: is it keeping up, and what failed."""

from __future__ import annotations

from typing import Any

import redis

from .deadletters import DeadLetters
from .queue import QUEUE
from .state import State
from .sweeps import LAST_SWEEP


def gather(client: redis.Redis, now: float) -> dict[str, Any]:
    pipe = client.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.get(LAST_SWEEP)
    pipe.zcard("unacked_index")  # kombu's Redis transport: tasks taken but not yet acknowledged
    depth, last_sweep, unacked = pipe.execute()
    open_count, oldest = State(client).open_summary()
    oldest_age = round(now - oldest, 1) if oldest is not None else None
    return {
        "queues": {QUEUE: {"waiting": depth, "unacked": unacked}},
        "open_sessions": open_count,
        "oldest_session_age_seconds": oldest_age,
        "dead_letters": DeadLetters(client).count(),
        "last_sweep_age_seconds": round(now - float(last_sweep), 1) if last_sweep else None,
    }


def render(status: dict[str, Any]) -> str:
    rows = [(f"queue {name}", f"{q['waiting']} waiting, {q['unacked']} running") for name, q in status["queues"].items()]
    age = status["oldest_session_age_seconds"]
    rows += [
        ("open sessions", f"{status['open_sessions']}" + (f" (oldest {age:.0f}s)" if age is not None else "")),
        ("dead letters", str(status["dead_letters"])),
        ("last sweep", "never" if status["last_sweep_age_seconds"] is None else f"{status['last_sweep_age_seconds']:.0f}s ago"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)
