"""The README's main command, `callsync run`, as a newcomer runs it: real processes, no setup."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REAL_URL, real_redis_or_skip
from worker import launch
from worker.cli import redated
from worker.core.signing import sign_stream
from worker.embedded import DEV_HMS_SECRET, DEV_STREAM_SECRET

SAMPLES = Path(__file__).resolve().parent / "samples"
PATCH_LINE = '"dry_run": true, "method": "PATCH"'


def run_and_send(tmp_path: Path, env: dict[str, str]) -> float:
    """Start `callsync run`, wait until every role serves, POST one signed sample; return
    the seconds from the POST to the dry-run PATCH line in its log."""
    port = launch.free_port()
    argv = launch.role_argv("run", "--port", port, "--data-dir", tmp_path / "valkey")
    child = launch.start("run", argv, env, tmp_path)
    assert child.log is not None
    log = child.log
    try:
        launch.wait_for(lambda: launch.http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "the receiver")
        launch.wait_for(lambda: " ready." in log.read_text(errors="replace"), 60, "the worker")
        opened = json.dumps(redated(json.loads((SAMPLES / "hms_session_open.json").read_bytes()), time.time())).encode()
        sent = time.monotonic()
        hms = httpx.post(f"http://127.0.0.1:{port}/webhooks/hms", content=opened, headers={"X-Callsync-Secret": DEV_HMS_SECRET})
        assert hms.status_code == 202, hms.text
        launch.wait_for(lambda: PATCH_LINE in log.read_text(errors="replace"), 10, "the dry-run PATCH", every=0.005)
        elapsed = time.monotonic() - sent
        body = json.dumps(redated(json.loads((SAMPLES / "stream_channel_updated.json").read_bytes()), time.time())).encode()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/webhooks/stream",
            content=body,
            headers={"X-Signature": sign_stream(body, DEV_STREAM_SECRET), "X-Webhook-Id": os.urandom(8).hex()},
        )
        assert answer.status_code == 202, answer.text
        assert child.alive()
        return elapsed
    finally:
        launch.stop([child])


def test_run_on_a_bare_machine_processes_a_webhook_within_a_second(tmp_path: Path) -> None:
    elapsed = run_and_send(tmp_path, launch.clean_environment())
    text = (tmp_path / "run.log").read_text()
    assert "embedded Valkey on 127.0.0.1:" in text and "dry run" in text
    assert '"url": "https://chat.stream-io-api.com/channels/messaging/general"' in text
    assert elapsed < 1.0, f"{elapsed:.3f} s from POST to the PATCH"


@pytest.mark.redis
def test_run_with_redis_url_uses_that_redis(tmp_path: Path) -> None:
    store: redis.Redis = real_redis_or_skip()
    try:
        run_and_send(tmp_path, {**launch.clean_environment(), "REDIS_URL": REAL_URL})
        assert "embedded Valkey" not in (tmp_path / "run.log").read_text()
        assert store.keys("cs:dd:stream:*") and store.keys("cs:dd:hms:*")  # its deliveries were recorded here
        assert not (tmp_path / "valkey").exists()
    finally:
        store.flushdb()
