"""The receiver's own counters and the `/metrics` registry.

Webhook counters are in-process prometheus-client counters: counting costs no Redis round
trip on the hot path. gunicorn runs several processes and any one of them answers a scrape,
so `callsync web` runs prometheus-client's multiprocess mode: each process writes its values
to mmap files in PROMETHEUS_MULTIPROC_DIR and the scrape sums them (MultiProcessCollector).
That mode is chosen when prometheus_client is first imported, so the entry point prepares
the directory before anything imports it (`prepare_multiprocess_dir`). Without the variable
(tests, `flask run`) the counters live in the app's own registry.

Worker-side numbers and state gauges come from Redis at scrape time (worker.ops.collector),
and so do the calls API's upstream calls (webhooks.calls_api counts them into the workers' hash):
no family here may take a name the collector exports.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir() -> Path:
    """Point prometheus-client at a clean directory; call before it is imported (web entry point).

    An operator-set PROMETHEUS_MULTIPROC_DIR is used and emptied of old `.db` files (counters
    restart with the server, as Prometheus expects); else a fresh temporary one is made.
    """
    if "prometheus_client" in sys.modules and not os.environ.get(MULTIPROC_ENV):
        raise RuntimeError("prometheus_client was imported before its multiprocess directory was set")
    chosen = os.environ.get(MULTIPROC_ENV)
    if not chosen:
        chosen = tempfile.mkdtemp(prefix="callsync-metrics-")
        # gunicorn's workers are forks that inherit atexit handlers: only the master removes it.
        atexit.register(_remove_if_owner, chosen, os.getpid())
    path = Path(chosen)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def _remove_if_owner(path: str, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def child_exit(_server: Any, worker: Any) -> None:
    """gunicorn's child_exit hook: drop a dead process's live-gauge files (counters stay)."""
    from prometheus_client import multiprocess as mp

    if multiprocess():
        mp.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class WebhookMetrics:
    """`callsync_webhooks_received_total{source, event_type, outcome, reason}`, and the scrape."""

    def __init__(self, cluster: Any):
        """`cluster`: a Collector of what Redis holds (worker.collector.RedisCollector)."""
        from prometheus_client import CollectorRegistry, Counter
        from prometheus_client.multiprocess import MultiProcessCollector

        self.registry = CollectorRegistry()
        # In multiprocess mode the values are summed from every process's files at scrape,
        # so the counter itself is registered nowhere.
        shared = multiprocess()
        if shared:
            MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        self.received = Counter(
            "callsync_webhooks_received",
            "Webhook deliveries by source, event type and outcome (reason says why one was rejected).",
            ["source", "event_type", "outcome", "reason"],
            registry=None if shared else self.registry,
        )
        self.calls = Counter(
            "callsync_calls_api_requests",
            "Calls API requests by route (create, join, end) and HTTP status.",
            ["route", "status"],
            registry=None if shared else self.registry,
        )
        self.registry.register(cluster)

    def count_call(self, route: str, status: int) -> None:
        self.calls.labels(route, str(status)).inc()

    def count(self, source: str, event_type: str, outcome: str, reason: str = "") -> None:
        self.received.labels(source, event_type, outcome, reason).inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
