"""What operators ask first: is it keeping up, and what failed (`callsync status`, `/metrics`)."""

from __future__ import annotations

from typing import Any

import redis

from worker.ops.heartbeat import workers_seen
from worker.store.enqueue import DRAIN_QUEUE, QUEUE
from worker.store.keys import BOUND_CHANNELS, CALL_TTL, DEAD_LETTER_INDEX, KOMBU_UNACKED, LAST_SWEEP
from worker.store.resync import last_resync, load_run
from worker.store.state import State
from worker.store.writequeue import queued


def gather(client: redis.Redis, now: float) -> dict[str, Any]:
    """Everything `status` shows, in a few round trips."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(QUEUE)
    pipe.llen(DRAIN_QUEUE)
    pipe.zcard(KOMBU_UNACKED)
    pipe.zcount(BOUND_CHANNELS, now - CALL_TTL, "+inf")
    pipe.zcard(DEAD_LETTER_INDEX)
    pipe.get(LAST_SWEEP)
    depth, drains, unacked, bound, dead, last_sweep = pipe.execute()
    open_count, oldest = State(client).open_summary()
    writes = {
        name: {"waiting": count, "oldest_wait_seconds": round(now - first, 1) if first is not None else None}
        for name, (count, first) in queued(client).items()
    }
    last = float(last_sweep) if last_sweep else None
    resync, running = last_resync(client), load_run(client)
    resync_at = float(resync["at"]) if resync and isinstance(resync.get("at"), int | float) else None
    return {
        # Reserved (taken by workers, not yet acknowledged) is one count for both queues: kombu
        # keeps one record of them, which names no queue.
        "queues": {QUEUE: {"waiting": depth, "reserved": unacked}, DRAIN_QUEUE: {"waiting": drains}},
        "write_queues": writes,
        "workers": workers_seen(client, now),
        "open_sessions": open_count,
        "oldest_session_age_seconds": round(now - oldest, 1) if oldest is not None else None,
        "bound_channels": bound,
        "dead_letters": dead,
        "last_sweep_at": last,
        "last_sweep_age_seconds": round(now - last, 1) if last is not None else None,
        "last_resync_at": resync_at,
        "last_resync_age_seconds": round(now - resync_at, 1) if resync_at is not None else None,
        "last_resync": resync,
        "resync_running": {"id": running.get("id"), "phase": running.get("phase"), "started_at": running.get("started_at")}
        if running
        else None,
    }


def render(status: dict[str, Any]) -> str:
    """A two-column table for people."""
    rows = [
        (f"queue {name}", f"{q['waiting']} waiting" + (f", {q['reserved']} taken by workers" if "reserved" in q else ""))
        for name, q in status["queues"].items()
    ]
    for name, q in status.get("write_queues", {}).items():
        oldest = q["oldest_wait_seconds"]
        rows.append((f"queue {name}", f"{q['waiting']} waiting" + (f" (oldest {oldest:.0f}s)" if oldest is not None else "")))
    workers = status["workers"]
    rows.append(
        (
            "workers",
            f"{len(workers)} seen" + "".join(f"\n  {w['hostname']} ({w['last_seen_age_seconds']:.0f}s ago)" for w in workers),
        )
    )
    age = status["oldest_session_age_seconds"]
    rows += [
        ("open sessions", f"{status['open_sessions']}" + (f" (oldest {age:.0f}s)" if age is not None else "")),
        ("bound channels", str(status["bound_channels"])),
        ("dead letters", str(status["dead_letters"]) + (" (callsync dead-letters list)" if status["dead_letters"] else "")),
        ("last sweep", "never" if status["last_sweep_age_seconds"] is None else f"{status['last_sweep_age_seconds']:.0f}s ago"),
    ]
    rows.append(("last resync", _resync_line(status)))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name.ljust(width)}  {value}".replace("\n  ", "\n" + " " * (width + 4)) for name, value in rows)


def _resync_line(status: dict[str, Any]) -> str:
    last, running = status["last_resync"], status["resync_running"]
    line = "never"
    if last is not None and status["last_resync_age_seconds"] is not None:
        line = (
            f"{status['last_resync_age_seconds']:.0f}s ago ({last.get('mode')}, {last.get('duration_seconds')} s): "
            f"{last.get('sessions_listed', 0)} live session(s), {last.get('channels_read', 0)} channel(s) read, "
            f"{last.get('adopted', 0)} adopted, {last.get('closed', 0)} closed, {last.get('recorded', 0)} changed"
        )
    if running is not None:
        line += f"\n  one running: {running['id']}, phase {running['phase']}"
    return line
