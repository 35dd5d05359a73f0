"""Worker-side counters and histograms, kept in one Redis hash so `/metrics` can show them.

Why Redis and not prometheus-client's multiprocess files: workers run "any number, any
host" (docs/operations.md) and serve no HTTP, while `/metrics` is served by the web role. A
directory of mmap files is shared only by processes of one host; a Redis hash is shared by
all, survives worker restarts, and the web role reads it at scrape time (worker.ops.collector).
Increments are buffered in the process and written in one pipelined round trip a second
(`flush_every`), not per task: under load that is one round trip a second for hundreds of
tasks. A killed worker loses at most its last second of counts.

A field is the JSON `[metric, [[label, value], ...]]`; histogram buckets are stored
non-cumulative (one HINCRBY per observation) and summed into Prometheus' cumulative
buckets by the collector.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from typing import Any, Protocol

import redis

from worker.store.keys import METRICS as METRICS  # collector.py reads it from here

# Task runs last from a millisecond (nothing to do) to two upstream timeouts (~20 s).
TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

TASK_RUNS = "callsync_task_runs_total"
TASK_DURATION = "callsync_task_duration_seconds"
UPSTREAM_CALLS = "callsync_upstream_calls_total"
RATE_LIMIT_WAITS = "callsync_rate_limit_waits_total"
RATE_LIMIT_WAIT_SECONDS = "callsync_rate_limit_wait_seconds_total"
DEAD_LETTERED = "callsync_dead_lettered_total"
RESYNC_RUNS = "callsync_resync_runs_total"  # by mode: bound, full
RESYNC_OUTCOMES = "callsync_resync_outcomes_total"  # by outcome (core.resync.OUTCOMES)

Labels = tuple[tuple[str, str], ...]


def encode(metric: str, labels: dict[str, str]) -> str:
    return json.dumps([metric, sorted(labels.items())], separators=(",", ":"))


def decode(field: bytes | str) -> tuple[str, Labels] | None:
    """(metric, labels) of a stored field; None for anything malformed."""
    try:
        metric, labels = json.loads(field)
        return str(metric), tuple((str(k), str(v)) for k, v in labels)
    except (ValueError, TypeError):
        return None


def bucket_label(value: float, buckets: tuple[float, ...]) -> str:
    """The `le` of the smallest bucket that holds `value` ("+Inf" past the last)."""
    index = bisect.bisect_left(buckets, value)
    return repr(buckets[index]) if index < len(buckets) else "+Inf"


FLUSH_SECONDS = 1.0


class Tally:
    """Increments buffered in this process until `flush`; safe to share between threads."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    def flush_every(self, client: redis.Redis, seconds: float = FLUSH_SECONDS) -> None:
        """Flush from a background thread every `seconds` until `stop` (started once)."""
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(
                target=self._flush_forever, args=(client, seconds), name="callsync-tally", daemon=True
            )
        self._flusher.start()

    def _flush_forever(self, client: redis.Redis, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.flush(client)
            except Exception:  # a bug must not stop the counting for good
                logging.getLogger("callsync.counters").exception("flushing the worker counters failed")

    def stop(self, client: redis.Redis) -> None:
        """Stop the background flushes and write what is buffered."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(5)
        self.flush(client)

    def inc(self, metric: str, labels: dict[str, str], amount: float = 1.0) -> None:
        key = encode(metric, labels)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0.0) + amount

    def observe(self, metric: str, labels: dict[str, str], value: float, buckets: tuple[float, ...] = TASK_BUCKETS) -> None:
        self.inc(f"{metric}_bucket", {**labels, "le": bucket_label(value, buckets)})
        self.inc(f"{metric}_sum", labels, value)
        self.inc(f"{metric}_count", labels)

    def take(self) -> dict[str, float]:
        with self._lock:
            pending, self._pending = self._pending, {}
        return pending

    def flush(self, client: redis.Redis) -> None:
        """Write what is buffered in one round trip. Best effort: on a Redis error the
        increments are dropped (a retried partial pipeline could count twice)."""
        pending = self.take()
        if not pending:
            return
        pipe = client.pipeline(transaction=False)
        for key, amount in pending.items():
            if float(amount).is_integer():
                pipe.hincrby(METRICS, key, int(amount))
            else:
                pipe.hincrbyfloat(METRICS, key, amount)
        try:
            pipe.execute()
        except redis.RedisError:
            return


class CountCall(Protocol):
    """worker.clients.http's OnUpstreamCall, spelled here (ops does not import the clients)."""

    def __call__(self, api: str, method: str, endpoint: str, status: str) -> None: ...


def upstream_counter(tally: Tally) -> CountCall:
    """An OnUpstreamCall that counts each call into `tally` as UPSTREAM_CALLS{api, method,
    endpoint, status}: the workers' calls and the calls API's alike."""

    def count_call(api: str, method: str, endpoint: str, status: str) -> None:
        tally.inc(UPSTREAM_CALLS, {"api": api, "method": method, "endpoint": endpoint, "status": status})

    return count_call


def parse_all(raw: dict[Any, Any]) -> dict[tuple[str, Labels], float]:
    """The HGETALL of METRICS as (metric, labels) → value."""
    out: dict[tuple[str, Labels], float] = {}
    for field, value in raw.items():
        decoded = decode(field)
        if decoded is not None:
            out[decoded] = float(value)
    return out
