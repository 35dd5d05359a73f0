import json
import logging

import jwt
import pytest

from worker.core import actions
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
    cleaned = scrub(text, ["the-app-secret"])
    assert "the-app-secret" not in cleaned and token not in cleaned and "abc.def" not in cleaned and "k123" not in cleaned
    assert cleaned.count(REDACTED) == 4 and "y=1" in cleaned
    line = JsonFormatter(["the-app-secret"]).format(record("failed: %s", text))
    assert "the-app-secret" not in line and token not in line


def test_task_log_lines_name_the_call_and_session_of_session_tasks():
    from worker.jobs.tasks import ids_of

    assert ids_of(actions.END_SESSION, ("call-messaging:general", "s1", "why")) == {
        "call_id": "call-messaging:general",
        "session_id": "s1",
        "cid": "messaging:general",
    }
    assert ids_of(actions.CHECK_SESSION, ("room-a", "s2")) == {"call_id": "room-a", "session_id": "s2", "cid": None}


@pytest.mark.parametrize(
    "secret",
    ['quo"ted-secret-value', "back\\slash-secret", "secret-with-ümlaut-ß", "control\x01char\x7fsecret", "a1", "\u2028line-sep"],
)
def test_a_secret_is_scrubbed_whatever_its_characters_or_length(secret):
    """Scrubbing the encoded line missed secrets that JSON escapes (`"`, `\\`, non-ASCII,
    control characters) and skipped short ones: the values are scrubbed before encoding."""
    rec = record("upstream said %s", f"<{secret}>", **fields(error=f"body: {secret}", nested={"list": [secret, 7]}))
    rec.exc_info = None
    line = JsonFormatter([secret, "unrelated-secret"]).format(rec)
    parsed = json.loads(line)
    assert parsed["msg"] == f"upstream said <{REDACTED}>"
    assert parsed["error"] == f"body: {REDACTED}" and parsed["nested"] == {"list": [REDACTED, 7]}
    assert (
        secret not in line and json.dumps(secret)[1:-1] not in line and json.dumps(secret, ensure_ascii=False)[1:-1] not in line
    )


def test_a_number_that_is_a_secret_is_scrubbed_too():
    line = JsonFormatter(["424242"]).format(record("n", **fields(count=424242, other=5)))
    assert json.loads(line)["count"] == REDACTED and json.loads(line)["other"] == 5


def test_a_traceback_is_scrubbed():
    import sys

    secret = 'quo"ted\\secret'
    try:
        raise RuntimeError(f"failed with {secret} inside")
    except RuntimeError:
        rec = record("boom")
        rec.exc_info = sys.exc_info()
    line = JsonFormatter([secret]).format(rec)
    exc = json.loads(line)["exc"]
    assert secret not in exc and f"failed with {REDACTED} inside" in exc
