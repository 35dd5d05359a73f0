"""The dead-letter cycle end to end: a real worker exhausts its retries, an operator lists and
replays, the task succeeds; with what /metrics, `status` and the logs show on the way."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.roles import wait_for
from tests.support.servers import real_url
from tests.support.stack import CALL, CID, SECRETS, Stack, running_stack
from worker.cli.main import main
from worker.logs import JsonFormatter
from worker.store.deadletters import DeadLetters

pytestmark = pytest.mark.redis
APPLY = "callsync.apply_hms_event"  # the webhook's task reconciles its channels itself


class Capture(logging.Handler):
    """Every record, rendered without any scrubbing and as the JSON line callsync writes."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []
        self._plain, self._json = logging.Formatter(), JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(f"{self._plain.format(record)} {getattr(record, 'cs', '')}")
        self.lines.append(self._json.format(record))


@pytest.fixture
def logs() -> Iterator[Capture]:
    capture, root = Capture(), logging.getLogger()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    yield capture
    root.removeHandler(capture)
    root.setLevel(level)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("REDIS_URL", real_url())  # for the `callsync` commands
    with running_stack(task_max_retries=2) as running:
        yield running


def metrics(stack: Stack) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{stack.web}/metrics").text
    assert not any(secret in text for secret in SECRETS)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def runs(samples: dict[Any, float], task: str, outcome: str) -> float:
    return samples.get(("callsync_task_runs_total", frozenset({("task", task), ("outcome", outcome)})), 0.0)


def test_exhausted_retries_become_a_dead_letter_that_replay_brings_back(stack, logs, capsys):
    stream, hms = stack.stream, stack.hms
    stream.create_channel(CID)
    stream.fail_next(3, 503)  # task_max_retries=2: the first try and both retries fail
    room = hms.create_room(CALL)
    session = hms.open_session(room["id"])

    letters = DeadLetters(stack.redis)
    [letter] = wait_for(letters.list, timeout=20)
    assert (letter.task, letter.attempts) == (APPLY, 3)
    assert letter.args[0]["room_name"] == CALL and letter.args[0]["session_id"] == session["id"]
    assert letter.error.startswith("stream 503") and letter.task_id and letter.failed_at > 0
    assert stream.call_fields(CID).get("callActive") is not True

    def counted() -> dict[Any, float] | None:  # workers write their counters to Redis once a second
        samples = metrics(stack)
        return samples if runs(samples, APPLY, "dead_letter") else None

    samples = wait_for(counted, timeout=10)
    assert runs(samples, APPLY, "retry") == 2 and runs(samples, APPLY, "dead_letter") == 1
    assert samples[("callsync_dead_letters", frozenset())] == 1
    assert samples[("callsync_dead_lettered_total", frozenset({("task", APPLY)}))] == 1
    failed = {("api", "stream"), ("status", "503")}
    assert sum(v for (name, labels), v in samples.items() if name == "callsync_upstream_calls_total" and failed <= labels) == 3
    assert all("general" not in dict(labels).get("endpoint", "") for _, labels in samples)  # templated, no ids

    assert main(["dead-letters", "list", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["id"] == letter.id and listed["error"] == letter.error
    assert main(["dead-letters", "replay", letter.id, "no-such-id"]) == 1  # the known one is replayed all the same
    assert "no dead letter no-such-id" in capsys.readouterr().err
    wait_for(lambda: stream.call_fields(CID).get("callActive") is True)
    assert stream.call_fields(CID)["callId"] == CALL and letters.count() == 0
    wait_for(lambda: runs(metrics(stack), APPLY, "success") >= 1)
    assert metrics(stack)[("callsync_dead_letters", frozenset())] == 0

    assert main(["status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["open_sessions"] == 1 and status["bound_channels"] == 1 and status["dead_letters"] == 0
    assert status["oldest_session_age_seconds"] >= 0 and status["queues"]["callsync"]["waiting"] == 0
    assert [w["hostname"] for w in status["workers"]] and status["workers"][0]["concurrency"] == 2
    assert main(["status"]) == 0
    table = capsys.readouterr().out
    rows = {" ".join(line.split()[:2]): line.split()[2:] for line in table.splitlines()}
    assert rows["open sessions"][0] == "1" and "1 seen" in table

    hms.close_session(session["id"])
    wait_for(lambda: stream.call_fields(CID).get("callActive") is False)
    assert_logs_tell_the_story_without_secrets(logs, letter.id, session["id"], room["id"])


def assert_logs_tell_the_story_without_secrets(logs: Capture, letter_id: str, session_id: str, room_id: str) -> None:
    text = "\n".join(logs.lines)
    for secret in SECRETS:
        assert secret not in text
    assert "eyJ" not in text  # no JWT (a server token or a management token)
    hooks = [r.cs for r in logs.records if r.name == "callsync.webhooks"]  # type: ignore[attr-defined]
    opened = [h for h in hooks if h.get("event_type") == "session.open.success"]
    assert opened and opened[0]["outcome"] == "accepted" and opened[0]["session_id"] == session_id
    assert opened[0]["room_id"] == room_id and opened[0]["cid"] == CID and opened[0]["delivery_id"]
    assert any(h.get("event_type") == "channel.updated" and h.get("cid") == CID for h in hooks)
    tasks = [r.cs for r in logs.records if r.name == "callsync.tasks" and "outcome" in getattr(r, "cs", {})]  # type: ignore[attr-defined]
    assert [t["outcome"] for t in tasks if t["task"] == APPLY][:3] == ["retry", "retry", "dead_letter"]
    assert any(t["task"] == "callsync.apply_hms_event" and t.get("session_id") == session_id for t in tasks)
    assert any(getattr(r, "cs", {}).get("dead_letter_id") == letter_id for r in logs.records)
