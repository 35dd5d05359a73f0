"""Structured logs: one JSON object per line, secrets scrubbed, set up by the entry points.

Nothing here runs at import: `configure_logging` is called by `callsync web|worker|beat`.
A record's structured fields travel in `extra={"cs": {...}}` (see `fields`); the formatter
writes only those and the message, never `record.args` of third-party loggers blindly.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

# Whatever looks like a token is scrubbed from every line, on top of the configured secrets:
# a JWT (header and payload are base64url JSON, so they start with "eyJ"), a bearer value,
# an api_key query parameter.
_TOKENISH = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*|(?i:bearer\s+)[\w.~+/=-]+|(?<=api_key=)[^&\s\"']+")
REDACTED = "[redacted]"
MIN_SECRET = 4  # shorter values would scrub ordinary words


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret value and anything token-shaped replaced."""
    for secret in secrets:
        if len(secret) >= MIN_SECRET:
            text = text.replace(secret, REDACTED)
    # The regex costs ~10 µs a line; plain substring checks let ordinary lines skip it.
    if "eyJ" in text or "api_key=" in text or "earer" in text or "EARER" in text:
        text = _TOKENISH.sub(REDACTED, text)
    return text


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a structured line; None values are left out."""
    return {"cs": {key: value for key, value in values.items() if value is not None}}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", ...structured fields}` on one line."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "cs", None)
        if isinstance(extra, dict):
            line.update({key: value for key, value in extra.items() if key not in line})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(line, default=str), self._secrets)


def configure_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Route every logger through one JSON handler on stderr (the entry points call this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Stream's carries `api_key`: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Celery's "Task ... received" and "... succeeded" lines: the worker's own line per task
    # outcome (callsync.tasks) says more, and two more lines per task cost CPU at load.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)


def dict_config(secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The same set-up as a logging dictConfig, for gunicorn's `logconfig_dict` (its own lines in JSON too)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "secrets": list(secrets)}},
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
