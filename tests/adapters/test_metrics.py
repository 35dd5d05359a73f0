"""`/metrics`: the receiver's counters, the workers' counters from Redis and the state gauges."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import fakeredis
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from standins.credentials import HMS_SECRET
from standins.credentials import STREAM_SECRET as SECRET
from tests.samples import load, samples_clock, stream_headers
from tests.support.roles import wait_for
from tests.support.servers import real_redis, real_url
from tests.support.state import record_hms_event
from webhooks.app import create_app
from worker.cli.main import redated
from worker.core.events import parse_hms_event
from worker.ops import counters
from worker.ops.heartbeat import record_heartbeat
from worker.settings import Settings
from worker.steps.sweep import LAST_SWEEP
from worker.store.deadletters import DeadLetters
from worker.store.state import State

SETTINGS = Settings(redis_url="redis://unused", stream_api_secret=SECRET, hms_webhook_secrets=(HMS_SECRET,), max_body_bytes=4096)


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics as (name, sorted labels) → value."""
    answer = client.get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def webhooks(samples: dict[Any, float], **labels: str) -> float:
    wanted = {"reason": "", **labels}
    return sum(
        value
        for (name, got), value in samples.items()
        if name == "callsync_webhooks_received_total" and all(dict(got).get(k) == v for k, v in wanted.items())
    )


def post_stream(client: Any, payload: Any, webhook_id: str = "wh-1", secret: str = SECRET) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post("/webhooks/stream", data=body, headers=stream_headers(body, secret, webhook_id))


def post_hms(client: Any, payload: Any, secret: str = HMS_SECRET) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return client.post("/webhooks/hms", data=body, headers={"X-Callsync-Secret": secret})


def test_webhook_counters_move_with_each_outcome(redis_client):
    client = create_app(SETTINGS, redis_client, clock=samples_clock).test_client()
    before = scrape(client)
    assert webhooks(before, source="stream") == 0
    post_stream(client, load("stream_channel_updated"), "a")
    post_stream(client, load("stream_channel_updated"), "a")  # duplicate
    post_stream(client, {**load("stream_channel_updated"), "created_at": "2026-11-20T10:00:00.2Z"}, "b")  # another event
    post_stream(client, {"type": "message.new", "cid": "messaging:general"}, "c")  # ignored
    post_stream(client, load("stream_channel_updated"), "d", secret="wrong")
    post_stream(client, b"not json", "e")
    post_stream(client, gzip.compress(b" " * 10_000), "f")  # inflates past the limit
    post_hms(client, load("hms_session_open"))
    post_hms(client, load("hms_session_open"), secret="wrong")
    after = scrape(client)
    assert webhooks(after, source="stream", event_type="channel.updated", outcome="accepted") == 2
    assert webhooks(after, source="stream", event_type="channel.updated", outcome="duplicate") == 1
    assert webhooks(after, source="stream", event_type="other", outcome="ignored") == 1
    assert webhooks(after, source="stream", outcome="rejected", reason="unauthorized") == 1
    assert webhooks(after, source="stream", event_type="unknown", outcome="rejected", reason="bad_request") == 1
    assert webhooks(after, source="stream", outcome="rejected", reason="too_large") == 1
    assert webhooks(after, source="hms", event_type="session.open.success", outcome="accepted") == 1
    assert webhooks(after, source="hms", outcome="rejected", reason="unauthorized") == 1
    assert after[("callsync_queue_depth", (("queue", "callsync"),))] == 3


def test_a_store_that_cannot_take_it_is_counted_unavailable():
    server = fakeredis.FakeServer()
    client = create_app(SETTINGS, fakeredis.FakeRedis(server=server), clock=samples_clock).test_client()
    server.connected = False
    assert post_stream(client, load("stream_channel_updated")).status_code == 503
    samples = scrape(client)  # Redis is still down: the scrape answers, without the Redis numbers
    assert webhooks(samples, source="stream", outcome="rejected", reason="unavailable") == 1
    assert samples[("callsync_redis_up", ())] == 0
    assert ("callsync_open_sessions", ()) not in samples


def test_state_gauges_are_read_from_redis_at_scrape(redis_client):
    now = time.time()
    state = State(redis_client)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 600))
    data = {"room_id": "r1", "room_name": "call-messaging:general", "session_id": "s1", "session_started_at": started}
    event = parse_hms_event({"id": "e1", "type": "session.open.success", "timestamp": started, "data": data})
    assert event is not None
    record_hms_event(state, event, now)
    state.bind("messaging:other", "team-call", now)
    DeadLetters(redis_client).add("callsync.reconcile_channel", ["messaging:general"], "stream 400: bad", 1, now)
    redis_client.set(LAST_SWEEP, repr(now - 5))
    record_heartbeat(redis_client, "celery@host-1", {"pid": 1, "concurrency": 4}, now)
    samples = scrape(create_app(SETTINGS, redis_client, clock=samples_clock).test_client())
    assert samples[("callsync_redis_up", ())] == 1
    assert samples[("callsync_open_sessions", ())] == 1
    assert 600 <= samples[("callsync_oldest_open_session_age_seconds", ())] < 700
    assert samples[("callsync_bound_channels", ())] == 2  # by callId, and by the room name's form
    assert samples[("callsync_dead_letters", ())] == 1
    assert samples[("callsync_last_sweep_timestamp_seconds", ())] == now - 5
    assert samples[("callsync_workers_seen", ())] == 1


def test_worker_counters_flushed_to_redis_appear_as_counters_and_histograms(redis_client):
    tally = counters.Tally()
    for seconds, outcome in [(0.003, "success"), (0.2, "success"), (40.0, "retry")]:
        labels = {"task": "callsync.reconcile_channel", "outcome": outcome}
        tally.inc(counters.TASK_RUNS, labels)
        tally.observe(counters.TASK_DURATION, labels, seconds)
    tally.inc(counters.UPSTREAM_CALLS, {"api": "stream", "method": "PATCH", "endpoint": "/channels/{type}/{id}", "status": "200"})
    tally.inc(counters.RATE_LIMIT_WAITS, {"api": "stream", "source": "ceiling"})
    tally.inc(counters.RATE_LIMIT_WAIT_SECONDS, {"api": "stream", "source": "ceiling"}, 1.5)
    tally.flush(redis_client)
    tally.flush(redis_client)  # nothing buffered: nothing written twice
    samples = scrape(create_app(SETTINGS, redis_client, clock=samples_clock).test_client())
    task = (("outcome", "success"), ("task", "callsync.reconcile_channel"))
    assert samples[("callsync_task_runs_total", task)] == 2
    assert samples[("callsync_task_duration_seconds_count", task)] == 2
    assert abs(samples[("callsync_task_duration_seconds_sum", task)] - 0.203) < 1e-9
    assert samples[("callsync_task_duration_seconds_bucket", (("le", "0.005"), *task))] == 1
    assert samples[("callsync_task_duration_seconds_bucket", (("le", "0.1"), *task))] == 1
    assert samples[("callsync_task_duration_seconds_bucket", (("le", "0.25"), *task))] == 2
    retry = (("le", "+Inf"), ("outcome", "retry"), ("task", "callsync.reconcile_channel"))
    assert samples[("callsync_task_duration_seconds_bucket", retry)] == 1
    call = (("api", "stream"), ("endpoint", "/channels/{type}/{id}"), ("method", "PATCH"), ("status", "200"))
    assert samples[("callsync_upstream_calls_total", call)] == 1
    assert samples[("callsync_rate_limit_wait_seconds_total", (("api", "stream"), ("source", "ceiling")))] == 1.5


def test_worker_counters_are_flushed_in_the_background_and_at_stop(redis_client):
    def flushers() -> int:
        return [t.name for t in threading.enumerate()].count("callsync-tally")

    before = flushers()  # other tests' workers may run in this process
    tally = counters.Tally()
    labels = {"task": "callsync.sweep", "outcome": "success"}
    key = counters.encode(counters.TASK_RUNS, labels)
    tally.flush_every(redis_client, seconds=0.05)
    tally.flush_every(redis_client, seconds=0.05)  # one flusher however often asked
    tally.inc(counters.TASK_RUNS, labels)
    assert wait_for(lambda: redis_client.hget(counters.METRICS, key), 5, "the flusher's write") == b"1"
    assert flushers() == before + 1
    tally.stop(redis_client)
    tally.inc(counters.TASK_RUNS, labels)  # after the flusher stopped: written by the next stop
    tally.stop(redis_client)
    assert redis_client.hget(counters.METRICS, key) == b"2"
    assert flushers() == before


def test_bucket_labels_match_prometheus_le():
    assert counters.bucket_label(0.005, counters.TASK_BUCKETS) == "0.005"  # le is inclusive
    assert counters.bucket_label(0.0051, counters.TASK_BUCKETS) == "0.01"
    assert counters.bucket_label(31.0, counters.TASK_BUCKETS) == "+Inf"
    assert counters.decode("not json") is None


@pytest.mark.redis
def test_callsync_web_sums_every_gunicorn_process_in_each_scrape(tmp_path):
    """Two gunicorn processes answer; whichever answers a scrape shows every webhook (multiprocess mode)."""
    real_redis()
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": real_url(),
        "STREAM_API_SECRET": SECRET,
        "HMS_WEBHOOK_SECRET": HMS_SECRET,
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
    }
    with (tmp_path / "web.log").open("w+") as log_file:
        web = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "web", "--port", str(port), "--host", "127.0.0.1"], env=env, stderr=log_file
        )
        serve_and_scrape(web, f"http://127.0.0.1:{port}", tmp_path)
        log_file.seek(0)
        text = log_file.read()
    assert SECRET not in text and HMS_SECRET not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    hooks = [line for line in lines if line.get("logger") == "callsync.webhooks"]
    assert {line["delivery_id"] for line in hooks if line["outcome"] == "accepted"} == {f"mp-{n}" for n in range(40)}
    assert all(line["cid"] == "messaging:general" for line in hooks if line["outcome"] == "accepted")


def serve_and_scrape(web: subprocess.Popen[bytes], base: str, tmp_path: Any) -> None:
    try:
        wait_until_serving(base)
        now = time.time()
        for n in range(40):  # a fresh connection each: the kernel spreads them over both processes
            # Current, each its own: a millisecond apart (microseconds of a float near 1.7e9 can round together).
            body = json.dumps(redated(load("stream_channel_updated"), now + n / 1e3)).encode()
            answer = httpx.post(f"{base}/webhooks/stream", content=body, headers=stream_headers(body, SECRET, f"mp-{n}"))
            assert answer.status_code == 202
        httpx.post(f"{base}/webhooks/stream", content=body, headers=stream_headers(body, "wrong", "mp-x"))
        for _ in range(6):
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
                for s in family.samples
            }
            assert webhooks(samples, source="stream", outcome="accepted") == 40
            assert webhooks(samples, source="stream", outcome="rejected", reason="unauthorized") == 1
            assert samples[("callsync_queue_depth", (("queue", "callsync"),))] == 40
        assert len(list((tmp_path / "prom").glob("counter_*.db"))) == 2  # both processes counted
    finally:
        web.terminate()
        web.wait(15)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_serving(base: str, timeout: float = 20.0) -> None:
    def ready() -> bool:
        try:
            return httpx.get(f"{base}/readyz").status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, timeout, f"{base} to become ready")
