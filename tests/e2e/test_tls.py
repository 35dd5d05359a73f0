"""Deploying on a managed Redis: `rediss://` with a self-signed certificate (the Heroku Redis
shape, `?ssl_cert_reqs=none`) carries the broker, the state, the schedule and the commands.

The Procfile's roles run as real processes against a Redis that speaks only TLS (tests/support/tls.py)
and the stand-ins over HTTP; a 100ms session opens and the Stream stand-in receives its PATCH.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from standins import Platforms
from tests.support.roles import environment, start_roles
from tests.support.tls import PASSWORD, tls_redis
from worker.cli import launch

CID, CALL = "messaging:general", "call-messaging:general"


def test_a_webhook_reaches_its_patch_through_a_tls_only_redis(tmp_path: Path, platforms: Platforms) -> None:
    stream, hms = platforms.stream, platforms.hms
    with tls_redis(tmp_path) as url:
        port = launch.free_port()
        web = f"http://127.0.0.1:{port}"
        platforms.send_webhooks_to(web)
        env = environment(platforms, url, CALLSYNC_SWEEP_INTERVAL_SECONDS=1, WEB_CONCURRENCY=1)
        children = start_roles(env, tmp_path, port, "--concurrency", 2)
        try:
            launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver on the TLS Redis")
            launch.wait_for(lambda: " ready." in (tmp_path / "worker.log").read_text(errors="replace"), 60, "the worker")
            stream.create_channel(CID)
            room = hms.create_room(CALL)
            hms.open_session(room["id"])  # its webhook goes to the receiver, the task through the TLS broker
            launch.wait_for(lambda: stream.call_fields(CID).get("callActive") is True, 20, "the PATCH at the Stream stand-in")
            [patch] = [body for method, path, body in stream.calls if method == "PATCH"]
            assert patch == {"set": {"data.callActive": True, "data.callId": CALL}}

            def swept() -> dict[str, object] | None:  # the beat schedules through RedBeat on TLS, a worker sweeps
                status = subprocess.run(
                    [*launch.CALLSYNC, "status", "--json"], env=env, capture_output=True, text=True, timeout=30, check=True
                )
                shown = json.loads(status.stdout)
                return shown if shown.get("last_sweep_age_seconds") is not None else None

            shown = launch.wait_for(swept, 30, "a sweep scheduled by beat")
            assert shown["open_sessions"] == 1 and shown["workers"]
            assert all(child.alive() for child in children)
        finally:
            launch.stop(children)
        for child in children:
            assert child.log is not None
            text = child.log.read_text()
            assert PASSWORD not in text, child.name
            assert all(line.startswith("{") for line in text.splitlines()), child.name
