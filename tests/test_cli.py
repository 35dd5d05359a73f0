"""The `callsync` command against stand-ins served over HTTP and a Redis."""

from __future__ import annotations

import json

import pytest

from standins import FakeHms, serve
from tests.world import HMS_KEY, HMS_SECRET
from worker.cli import main


@pytest.fixture
def hms(monkeypatch):
    fake = FakeHms(HMS_KEY, HMS_SECRET, webhook_secret="hook")
    url, stop = serve(fake.app)
    monkeypatch.setenv("HMS_ACCESS_KEY", HMS_KEY)
    monkeypatch.setenv("HMS_APP_SECRET", HMS_SECRET)
    monkeypatch.setenv("HMS_BASE_URL", url)
    yield fake
    stop()


def test_hms_replay_resends_failed_deliveries_in_the_window(hms, capsys):
    room = hms.create_room("call-messaging:general")
    hms.lose_next_webhooks(1)
    hms.open_session(room["id"])
    assert hms.outbox == [] and len(hms.failed) == 1
    assert main(["hms-replay", "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-10T00:00:00Z"]) == 0
    assert hms.outbox == []  # outside the window
    assert main(["hms-replay", "--since", "2026-11-01T00:00:00Z", "--until", "2099-01-01T00:00:00Z"]) == 2  # > 14 days
    assert main(["hms-replay", "--since", hms_now_minus_hours(1)]) == 0
    [(_, body)] = hms.outbox
    assert json.loads(body)["is_replay"] is True and json.loads(body)["type"] == "session.open.success"
    assert "replays failed deliveries" in capsys.readouterr().out


def hms_now_minus_hours(hours: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_hms_replay_rejects_bad_times_and_missing_credentials(hms, monkeypatch, capsys):
    assert main(["hms-replay", "--since", "yesterday"]) == 2
    monkeypatch.delenv("HMS_APP_SECRET")
    assert main(["hms-replay", "--since", "2026-11-20T10:00:00Z"]) == 2
    assert "HMS_APP_SECRET" in capsys.readouterr().err


def test_config_errors_stop_a_role_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["worker"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["callsync: configuration error: REDIS_URL is required for the worker role"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("CALLSYNC_WORKER_POOL", "gevent"), ("CALLSYNC_WORKER_CONCURRENCY", "many"), ("CALLSYNC_WORKER_CONCURRENCY", "0")],
)
def test_a_bad_worker_pool_setting_stops_the_worker_with_one_line(monkeypatch, capsys, name, value):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv(name, value)
    assert main(["worker"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("callsync: configuration error: ") and name in line


def test_send_moves_a_samples_times_to_now_keeping_their_distances():
    from tests.samples import load
    from worker.cli import redated
    from worker.core.events import parse_time

    closed = load("hms_session_close")
    moved = redated(closed, 2_000_000_000.0)
    assert parse_time(moved["timestamp"]) == 2_000_000_000.0
    started, stopped = (parse_time(moved["data"][key]) for key in ("session_started_at", "session_stopped_at"))
    assert stopped - started == pytest.approx(1800.38, abs=0.01) and moved["data"]["room_name"] == closed["data"]["room_name"]
    zero = redated({"created_at": "2026-11-20T10:00:00Z", "joined_at": "0001-01-01T00:00:00Z"}, 2e9)
    assert zero["joined_at"] == "0001-01-01T00:00:00Z"  # "no time" stays so
