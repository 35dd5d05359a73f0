import json
import logging

import jwt

from worker.logs import REDACTED, JsonFormatter, fields, scrub


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("callsync.test", logging.INFO, __file__, 1, message, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_line_is_one_json_object_with_the_structured_fields():
    line = JsonFormatter().format(record("webhook %s", "accepted", **fields(source="hms", cid="messaging:general", room_id=None)))
    parsed = json.loads(line)
    assert parsed["msg"] == "webhook accepted" and parsed["level"] == "info" and parsed["logger"] == "callsync.test"
    assert parsed["source"] == "hms" and parsed["cid"] == "messaging:general" and "room_id" not in parsed
    assert "\n" not in line


def test_secrets_and_token_shaped_values_are_scrubbed():
    token = jwt.encode({"server": True}, "x" * 32, algorithm="HS256")
    text = f"secret=the-app-secret auth={token} Bearer abc.def url=/x?api_key=k123&y=1"
    cleaned = scrub(text, ["the-app-secret", "ab"])  # too short a value is not scrubbed
    assert "the-app-secret" not in cleaned and token not in cleaned and "abc.def" not in cleaned and "k123" not in cleaned
    assert cleaned.count(REDACTED) == 4 and "y=1" in cleaned
    line = JsonFormatter(["the-app-secret"]).format(record("failed: %s", text))
    assert "the-app-secret" not in line and token not in line


def test_task_log_lines_name_the_call_and_session_of_session_tasks():
    from worker import sync
    from worker.tasks import ids_of

    assert ids_of(sync.END_SESSION, ("call-messaging:general", "s1", "why")) == {
        "call_id": "call-messaging:general",
        "session_id": "s1",
        "cid": "messaging:general",
    }
    assert ids_of(sync.CHECK_SESSION, ("room-a", "s2")) == {"call_id": "room-a", "session_id": "s2", "cid": None}
