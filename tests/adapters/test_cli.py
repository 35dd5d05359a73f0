"""The `callsync` command against stand-ins served over HTTP and a Redis."""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from standins import FakeHms, serve
from tests.support.hostile import HostileUpstream
from tests.support.world import HMS_KEY, HMS_SECRET
from worker.cli.launch import free_port
from worker.cli.main import main, parser, render_letters
from worker.store.deadletters import DeadLetter, DeadLetters

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


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


def test_every_configuration_problem_is_one_line_then_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("REDIS_URL", raising=False)
    for name in ("STREAM_API_KEY", "STREAM_API_SECRET", "HMS_ACCESS_KEY", "HMS_APP_SECRET", "CALLSYNC_DRY_RUN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLSYNC_MAX_SESSION_SECONDS", "abc")
    monkeypatch.setenv("CALLSYNC_WORKER_POOL", "gevent")
    with pytest.raises(SystemExit) as stop:
        main(["worker"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("callsync: configuration error: ") for line in err)
    named = [line.split(": ", 2)[2].split()[0] for line in err]
    assert named == [
        "CALLSYNC_MAX_SESSION_SECONDS",
        "CALLSYNC_WORKER_POOL",
        "REDIS_URL",
        "STREAM_API_KEY",
        "STREAM_API_SECRET",
        "HMS_ACCESS_KEY",
        "HMS_APP_SECRET",
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CALLSYNC_WORKER_POOL", "gevent"),
        ("CALLSYNC_WORKER_CONCURRENCY", "many"),
        ("CALLSYNC_WORKER_CONCURRENCY", "0"),
        ("PORT", "http"),
        ("WEB_CONCURRENCY", "two"),
    ],
)
def test_a_bad_process_setting_stops_the_role_with_one_line(monkeypatch, capsys, name, value):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv("CALLSYNC_DRY_RUN", "true")
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stop:
        main(["worker"])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("callsync: configuration error: ") and name in line


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """A folder with no `callsync run` in it or above, and no REDIS_URL."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    return tmp_path


@pytest.mark.parametrize("argv", [["status"], ["dead-letters", "list"], ["dead-letters", "purge"]])
def test_without_a_redis_the_commands_say_in_one_line_where_they_looked(nowhere, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("callsync: no Redis: REDIS_URL is not set and no `callsync run` is going here")
    assert f"looked for .callsync/run.json in {nowhere} and the folders above" in line


def test_a_stopped_run_is_named_as_stopped(nowhere, capsys):
    record = nowhere / ".callsync" / "run.json"
    record.parent.mkdir()
    record.write_text(json.dumps({"pid": _dead_pid(), "redis_url": "redis://127.0.0.1:1/0", "receiver_url": "http://x"}))
    with pytest.raises(SystemExit):
        main(["status"])
    assert f"{record} is from a run that has stopped" in capsys.readouterr().err


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", "--json"], ["dead-letters", "list"], ["dead-letters", "replay", "--all"], ["dead-letters", "purge"]],
)
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2-password@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0 does not answer (ConnectionError: "),
        (  # the Sentinel form: neither the Sentinels' nor the primary's password
            "redis+sentinel://:hunter2-sentinels@127.0.0.1:1,127.0.0.1:2/mymaster/0?password=hunter2-primary",
            "redis+sentinel://:***@127.0.0.1:1,127.0.0.1:2/mymaster/0?password=*** does not answer (MasterNotFoundError: ",
        ),
    ],
)
def test_an_unreachable_redis_is_one_line_and_exit_1(monkeypatch, capsys, argv, url, shown):
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"callsync: Redis at {shown}"), line
    assert "hunter2" not in captured.out + captured.err and "Traceback" not in captured.err


def test_send_without_a_receiver_is_one_line(nowhere, monkeypatch, capsys):
    monkeypatch.setenv("PORT", str(free_port()))
    with pytest.raises(SystemExit) as stop:
        main(["send", "hms", str(SAMPLES / "hms_session_open.json")])
    assert stop.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("callsync: no receiver answers at http://127.0.0.1:")
    assert "no --url and no `callsync run` going here" in line


def test_version_and_help_for_every_option(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    from importlib.metadata import version

    assert capsys.readouterr().out.strip() == f"callsync {version('callsync')}"
    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"callsync {name} {action.dest}: no help text"
    assert {c.dest for c in commands._choices_actions} == set(commands.choices)
    assert all(c.help for c in commands._choices_actions)


def test_a_platform_url_in_the_clear_stops_a_role_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    for name in ("STREAM_API_KEY", "STREAM_API_SECRET", "HMS_ACCESS_KEY", "HMS_APP_SECRET"):
        monkeypatch.setenv(name, f"{name.lower()}-long-enough-value")  # only the URL is wrong
    monkeypatch.setenv("STREAM_BASE_URL", "http://chat.stream-io-api.com")
    with pytest.raises(SystemExit) as stop:
        main(["worker"])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "callsync: configuration error: STREAM_BASE_URL must use https (http only to a loopback host such as 127.0.0.1)"
    )


# --- printing what platforms and tasks wrote (issue 12, item 5) ------------------------------
CONTROL = "\x1b]0;owned\x07\x1b[2J\x1b[31mred\u202e\ud800\r\n"


def letter(**overrides: object) -> DeadLetter:
    fields: dict[str, Any] = {
        "id": "id-1",
        "task": "callsync.apply_hms_event",
        "args": [{"room_name": f"call-{CONTROL}"}],
        "error": f"hms 400: {CONTROL} key hms-app-secret-value-1234",
        "attempts": 1,
        "failed_at": 1_800_000_000.0,
        "task_id": "t-1",
    }
    return DeadLetter(**{**fields, **overrides})


def test_dead_letters_print_escaped_and_scrubbed():
    text = render_letters([letter(), letter(id="id-2")], as_json=False, secrets=("hms-app-secret-value-1234",))
    lines = text.split("\n")
    assert len(lines) == 2 and all(line.isprintable() for line in lines)
    assert "\\x1b]0;owned\\x07" in lines[0] and "\\u202e" in lines[0] and "\\ud800" in lines[0]
    assert "hms-app-secret-value-1234" not in text and "[redacted]" in text


def test_dead_letters_json_is_valid_ascii_json_with_the_values_intact():
    text = render_letters([letter()], as_json=True, secrets=("hms-app-secret-value-1234",))
    assert text.isascii() and all(char.isprintable() or char == "\n" for char in text)
    [parsed] = json.loads(text)
    assert parsed["args"] == [{"room_name": f"call-{CONTROL}"}]
    assert parsed["error"] == f"hms 400: {CONTROL} key [redacted]"


def test_hms_replay_prints_a_platform_message_escaped(monkeypatch, capsys):
    upstream = HostileUpstream()
    try:
        monkeypatch.setenv("HMS_ACCESS_KEY", HMS_KEY)
        monkeypatch.setenv("HMS_APP_SECRET", HMS_SECRET)
        monkeypatch.setenv("HMS_BASE_URL", f"{upstream.url}/hostile-message")
        assert main(["hms-replay", "--since", hms_now_minus_hours(1)]) == 1
    finally:
        upstream.close()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\u202e" not in err
    assert "100ms refused the replay: hms 400: \\x1b]0;owned\\x07" in err


def test_the_web_role_refuses_a_development_secret_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv("STREAM_API_SECRET", "a-stream-secret-long-enough")
    monkeypatch.setenv("HMS_WEBHOOK_SECRET", "dev-hms-secret")
    monkeypatch.delenv("CALLSYNC_DRY_RUN", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["web"])
    assert stop.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "callsync: configuration error: HMS_WEBHOOK_SECRET is a public development value; "
        "set your own secret (or CALLSYNC_DRY_RUN=true for development)"
    )


def test_run_with_real_credentials_and_no_webhook_secret_stops_before_starting(monkeypatch, capsys, tmp_path):
    # It filled in dev-hms-secret and, credentials being real, left dry run off: deliveries
    # signed with a public value were accepted and acted on.
    real = {"STREAM_API_KEY": "key", "STREAM_API_SECRET": "a-real-stream-secret", "HMS_ACCESS_KEY": "ak"}
    for name, value in {**real, "HMS_APP_SECRET": "a-real-hms-app-secret-value"}.items():
        monkeypatch.setenv(name, value)
    for name in ("HMS_WEBHOOK_SECRET", "CALLSYNC_DRY_RUN", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    assert main(["run", "--data-dir", str(tmp_path / "valkey")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("callsync: configuration error: HMS_WEBHOOK_SECRET is a public development value")
    assert not (tmp_path / "valkey").exists()  # nothing was started


@pytest.mark.parametrize("limit", ["0", "-3", "few"])
def test_dead_letters_list_refuses_a_limit_below_one(monkeypatch, capsys, limit):
    # `--limit 0` listed every dead letter (ZRANGE 0 -1; issue 12, item 12).
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    with pytest.raises(SystemExit) as stop:
        main(["dead-letters", "list", "--limit", limit])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --limit: must be" in err and ("at least 1" in err or "whole number" in err)


def test_dead_letters_list_is_bounded_by_its_limit():
    letters = DeadLetters(fakeredis.FakeRedis())
    for n in range(3):
        letters.add("callsync.reconcile_channel", [f"messaging:{n}"], "stream 400: no", 1, 1000.0 + n)
    assert [letter.args for letter in letters.list(2)] == [["messaging:0"], ["messaging:1"]]
    with pytest.raises(ValueError, match="at least 1"):
        letters.list(0)


def test_send_moves_a_samples_times_to_now_keeping_their_distances():
    from tests.samples import load
    from worker.cli.main import redated
    from worker.core.events import parse_time

    closed = load("hms_session_close")
    moved = redated(closed, 2_000_000_000.0)
    assert parse_time(moved["timestamp"]) == 2_000_000_000.0
    started, stopped = (parse_time(moved["data"][key]) for key in ("session_started_at", "session_stopped_at"))
    assert stopped - started == pytest.approx(1800.38, abs=0.01) and moved["data"]["room_name"] == closed["data"]["room_name"]
    zero = redated({"created_at": "2026-11-20T10:00:00Z", "joined_at": "0001-01-01T00:00:00Z"}, 2e9)
    assert zero["joined_at"] == "0001-01-01T00:00:00Z"  # "no time" stays so


def test_free_port_never_hands_out_a_port_twice() -> None:
    # Binding port 0 two thousand times, the kernel offers some ports again (123 of 2000 here):
    # two servers of one test would then share one.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
