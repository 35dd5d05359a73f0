"""The README's main command, `callsync run`, as a newcomer runs it: real processes, no setup."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.servers import real_redis, real_url
from worker.cli import launch
from worker.cli.main import redated
from worker.core.signing import sign_stream
from worker.settings import DEV_HMS_SECRET, DEV_STREAM_SECRET

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
PATCH_LINE = '"dry_run": true, "method": "PATCH"'


def callsync(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*launch.CALLSYNC, *args], cwd=cwd, env=env or launch.clean_environment(), capture_output=True, text=True, timeout=60
    )


def run_and_send(tmp_path: Path, env: dict[str, str]) -> float:
    """Start `callsync run` in `tmp_path` (its checkout), wait until every role serves, POST one
    signed sample; return the seconds from the POST to the dry-run PATCH line in its log."""
    port = launch.free_port()
    argv = launch.role_argv("run", "--port", port, "--data-dir", tmp_path / "valkey")
    child = launch.start("run", argv, env, tmp_path, cwd=tmp_path)
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
        # The README's next steps, in the same checkout and without any setting: they find
        # the run's Redis (on a port of its choosing) and its receiver.
        sent_hms = callsync("send", "hms", str(SAMPLES / "hms_session_close.json"), cwd=tmp_path)
        assert sent_hms.returncode == 0 and sent_hms.stdout.startswith("202 "), sent_hms.stdout + sent_hms.stderr
        status = callsync("status", "--json", cwd=tmp_path)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["bound_channels"] >= 1
        letters = callsync("dead-letters", "list", cwd=tmp_path)
        assert letters.returncode == 0 and letters.stderr == "", letters.stderr
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
    # Every role writes JSON lines only, from start to shutdown: the run's own notices,
    # gunicorn's, Celery's (no banner, warnings as records, the shutdown notice).
    lines = text.splitlines()
    not_json = [line for line in lines if not _json_object(line)]
    assert not not_json, not_json[:5]
    loggers = {json.loads(line)["logger"] for line in lines}
    assert {"callsync.run", "gunicorn.error", "celery.beat", "celery.apps.worker", "callsync.worker"} <= loggers, loggers
    assert not (tmp_path / ".callsync" / "run.json").exists()  # the run forgets itself when it stops


def _json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def test_run_checks_every_setting_before_it_serves(tmp_path: Path) -> None:
    env = {**launch.clean_environment(), "CALLSYNC_MAX_SESSION_SECONDS": "abc", "CALLSYNC_STREAM_UPDATE_RATE": "fast"}
    done = callsync("run", "--port", str(launch.free_port()), "--data-dir", str(tmp_path / "valkey"), cwd=tmp_path, env=env)
    assert done.returncode == 2
    problems = done.stderr.strip().splitlines()
    assert len(problems) == 2, done.stderr
    assert "CALLSYNC_MAX_SESSION_SECONDS" in problems[0] and "CALLSYNC_STREAM_UPDATE_RATE" in problems[1]
    assert all(line.startswith("callsync: configuration error: ") for line in problems)
    assert "receiver on" not in done.stdout + done.stderr
    assert not (tmp_path / "valkey").exists()  # nothing was started


@pytest.mark.redis
def test_run_with_redis_url_uses_that_redis(tmp_path: Path) -> None:
    store: redis.Redis = real_redis()
    try:
        run_and_send(tmp_path, {**launch.clean_environment(), "REDIS_URL": real_url()})
        assert "embedded Valkey" not in (tmp_path / "run.log").read_text()
        assert store.keys("cs:dd:stream:*") and store.keys("cs:dd:hms:*")  # its deliveries were recorded here
        assert not (tmp_path / "valkey").exists()
    finally:
        store.flushdb()
