import json
import time

from tests.support.state import record_hms_event
from worker.core.events import HmsEvent
from worker.ops.heartbeat import SEEN_SECONDS, forget, record_heartbeat
from worker.ops.status import gather, render
from worker.steps.sweep import LAST_SWEEP
from worker.store.deadletters import DeadLetters
from worker.store.enqueue import DRAIN_QUEUE, QUEUE
from worker.store.state import State
from worker.store.writequeue import WriteQueue


def test_status_reflects_a_known_state(redis_client):
    now = time.time()
    redis_client.lpush(QUEUE, "m1", "m2")
    for name, started in (("room-1", now - 120), ("room-2", now - 30)):
        opened = HmsEvent("e", "session.open.success", "r", name, f"s-{name}", started, now, False)
        record_hms_event(State(redis_client), opened, now)
    State(redis_client).bind("messaging:a", "call-a", now)
    State(redis_client).bind("messaging:b", "call-b", now - 15 * 86400)  # forgotten: older than the bindings' TTL
    DeadLetters(redis_client).add("callsync.end_session", ["s9", "why"], "hms 404: gone", 1, now)
    redis_client.set(LAST_SWEEP, repr(now - 42))
    WriteQueue(redis_client, "channels", 300, 60.0).offer("messaging:late", now - 7, now, direct=False)
    record_heartbeat(redis_client, "celery@a", {"pid": 7, "concurrency": 4}, now - 5)
    record_heartbeat(redis_client, "celery@gone", {"pid": 8, "concurrency": 4}, now - SEEN_SECONDS - 1)
    status = gather(redis_client, now)
    assert json.loads(json.dumps(status)) == {
        "queues": {QUEUE: {"waiting": 2, "reserved": 0}, DRAIN_QUEUE: {"waiting": 0}},
        "write_queues": {
            "channels": {"waiting": 1, "oldest_wait_seconds": 7.0},
            "messages": {"waiting": 0, "oldest_wait_seconds": None},
        },
        "workers": [{"hostname": "celery@a", "last_seen_age_seconds": 5.0, "pid": 7, "concurrency": 4}],
        "open_sessions": 2,
        "oldest_session_age_seconds": 120.0,
        "bound_channels": 1,
        "dead_letters": 1,
        "last_sweep_at": now - 42,
        "last_sweep_age_seconds": 42.0,
        "last_resync": None,
        "last_resync_at": None,
        "last_resync_age_seconds": None,
        "resync_running": None,
    }
    table = render(status)
    assert "2 waiting" in table and "celery@a" in table and "oldest 120s" in table and "42s ago" in table
    rows = {" ".join(line.split()[:2]): " ".join(line.split()[2:]) for line in table.splitlines() if line.startswith("queue ")}
    assert rows == {
        "queue callsync": "2 waiting, 0 taken by workers",
        "queue callsync.drain": "0 waiting",
        "queue channels": "1 waiting (oldest 7s)",
        "queue messages": "0 waiting",
    }
    forget(redis_client, "celery@a")
    assert gather(redis_client, now)["workers"] == []


def test_status_of_an_empty_installation(redis_client):
    status = gather(redis_client, time.time())
    assert status["oldest_session_age_seconds"] is None and status["last_sweep_at"] is None and status["workers"] == []
    assert "never" in render(status)
