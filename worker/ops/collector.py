"""What `/metrics` reads from Redis at scrape time: the state gauges and the workers' counters.

Gauges computed at scrape (queue depth, open sessions, dead letters, last sweep) are true
whichever web process answers and however many workers run; the workers' counters come
from the hash they flush to (worker.ops.counters). Both are cluster-wide: every web instance
shows the same values, so aggregate them with max(), not sum(), across instances.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.ops import counters
from worker.ops.status import gather

_COUNTERS = {
    counters.TASK_RUNS: "Task runs by task and outcome (success, retry, deferred, dead_letter, error).",
    counters.UPSTREAM_CALLS: "Calls to Stream and 100ms by api, method, templated endpoint and status.",
    counters.RATE_LIMIT_WAITS: (
        "Waits before an upstream call, by source: the channel-update ceiling (ceiling) or a 429 (upstream_429); "
        "the call-message ceiling (message_ceiling) or a 429 on a message (message_429)."
    ),
    counters.RATE_LIMIT_WAIT_SECONDS: "Seconds waited, by the same labels as callsync_rate_limit_waits_total.",
    counters.DEAD_LETTERED: "Tasks that became dead letters, by task.",
    counters.RESYNC_RUNS: "Resyncs done, by mode (bound: what callsync recorded; full: also every channel showing a call).",
    counters.RESYNC_OUTCOMES: (
        "What resyncs found and did, by outcome: sessions adopted or closed, channels recorded (changed), "
        "unchanged, skipped (a write in flight), reconciles scheduled."
    ),
}
_HISTOGRAMS = {counters.TASK_DURATION: "Task run time by task and outcome."}


class RedisCollector(Collector):  # type: ignore[misc]
    def __init__(self, client: redis.Redis, clock: Callable[[], float] = time.time):
        self._redis, self._clock = client, clock

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("callsync_redis_up", "1 when Redis answered this scrape, else 0.")
        try:
            status = gather(self._redis, self._clock())
            stored = counters.parse_all(self._redis.hgetall(counters.METRICS))
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _gauges(status)
        yield from _counters(stored)
        yield from _histograms(stored)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, doc)
    if value is not None:
        gauge.add_metric([], value)
    return gauge


def _gauges(status: dict[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("callsync_queue_depth", "Tasks waiting in a queue.", labels=["queue"])
    reserved = GaugeMetricFamily("callsync_queue_reserved", "Tasks taken by workers, not yet acknowledged.", labels=["queue"])
    for name, queue in status["queues"].items():
        depth.add_metric([name], queue["waiting"])
        if "reserved" in queue:  # one count for all queues, shown under the main one (ops/status.py)
            reserved.add_metric([name], queue["reserved"])
    yield depth
    yield reserved
    waiting = GaugeMetricFamily(
        "callsync_write_queue_depth", "Keys waiting for a write at an endpoint's ceiling.", labels=["endpoint"]
    )
    oldest = GaugeMetricFamily(
        "callsync_write_queue_oldest_wait_seconds",
        "How long the oldest waiting key has waited (0 when none waits).",
        labels=["endpoint"],
    )
    for name, queue in status.get("write_queues", {}).items():
        waiting.add_metric([name], queue["waiting"])
        oldest.add_metric([name], queue["oldest_wait_seconds"] or 0.0)
    yield waiting
    yield oldest
    yield _gauge("callsync_workers_seen", "Workers that sent a heartbeat in the last 30 s.", len(status["workers"]))
    yield _gauge("callsync_open_sessions", "100ms sessions recorded open.", status["open_sessions"])
    yield _gauge(
        "callsync_oldest_open_session_age_seconds",
        "Age of the oldest open session (absent when none is open).",
        status["oldest_session_age_seconds"],
    )
    yield _gauge("callsync_bound_channels", "Channels bound to a call in the last 14 days.", status["bound_channels"])
    yield _gauge("callsync_dead_letters", "Dead letters kept, waiting for replay or purge.", status["dead_letters"])
    yield _gauge(
        "callsync_last_sweep_timestamp_seconds",
        "Unix time of the last successful sweep (absent before the first).",
        status["last_sweep_at"],
    )
    yield _gauge(
        "callsync_resync_last_timestamp_seconds",
        "Unix time the last resync finished (absent before the first).",
        status["last_resync_at"],
    )
    yield _gauge(
        "callsync_resync_last_duration_seconds",
        "How long the last resync took, from its start to its end (absent before the first).",
        status["last_resync"]["duration_seconds"] if status["last_resync"] else None,
    )


def _counters(stored: dict[tuple[str, counters.Labels], float]) -> Iterator[Metric]:
    by_metric: dict[str, list[tuple[counters.Labels, float]]] = defaultdict(list)
    for (metric, labels), value in stored.items():
        by_metric[metric].append((labels, value))
    for metric, doc in _COUNTERS.items():
        rows = sorted(by_metric.get(metric, []))
        names = [name for name, _ in rows[0][0]] if rows else []
        family = CounterMetricFamily(metric.removesuffix("_total"), doc, labels=names)
        for labels, value in rows:
            if [name for name, _ in labels] == names:
                family.add_metric([v for _, v in labels], value)
        yield family


def _histograms(stored: dict[tuple[str, counters.Labels], float]) -> Iterator[Metric]:
    for metric, doc in _HISTOGRAMS.items():
        series: dict[counters.Labels, dict[str, float]] = defaultdict(dict)
        for (name, labels), value in stored.items():
            if name == f"{metric}_bucket":
                key = tuple(pair for pair in labels if pair[0] != "le")
                series[key][dict(labels)["le"]] = value
            elif name in (f"{metric}_sum", f"{metric}_count"):
                series[labels][name.removeprefix(metric)] = value
        names = [name for name, _ in next(iter(series))] if series else []
        family = HistogramMetricFamily(metric, doc, labels=names)
        for labels, values in sorted(series.items()):
            cumulative, buckets = 0.0, []
            for bound in [*map(repr, counters.TASK_BUCKETS), "+Inf"]:
                cumulative += values.get(bound, 0.0)
                buckets.append((bound, cumulative))
            family.add_metric([v for _, v in labels], buckets, values.get("_sum", 0.0))
        yield family
