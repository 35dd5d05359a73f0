"""Structured logs: one JSON object per line, secrets scrubbed, set up by the entry points.

Nothing here runs at import: `configure_logging` is called by `callsync web|worker|beat|run`.
A record's structured fields travel in `extra={"cs": {...}}` (see `fields`); the formatter
writes only those and the message, never `record.args` of third-party loggers blindly.

Once set up, a role writes nothing but these lines: warnings become records, an uncaught
exception is one record, and whatever a library prints (Celery's shutdown notices go to
`sys.__stdout__`) is turned into a record per line by `LineLog`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import IO, Any

# Whatever looks like a token is scrubbed from every value, on top of the configured secrets:
# a JWT (header and payload are base64url JSON, so they start with "eyJ"), a bearer value,
# an api_key query parameter.
_TOKENISH = re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*|(?i:bearer\s+)[\w.~+/=-]+|(?<=api_key=)[^&\s\"']+")
REDACTED = "[redacted]"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret value and anything token-shaped replaced.

    Applied to the values before they are encoded: a secret holding `"`, `\\`, non-ASCII or
    control characters would no longer appear as such in the JSON text. Every configured
    secret counts, however short (the settings refuse short ones outside dry run).
    """
    for secret in secrets:
        if secret:
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
        # Longest first: a secret that contains another is replaced whole.
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
        return json.dumps(self._scrubbed(line), default=str)

    def _scrubbed(self, value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value, self._secrets)
        if isinstance(value, dict):
            return {key: self._scrubbed(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._scrubbed(item) for item in value]
        if value is None or isinstance(value, bool | int | float):
            text = str(value)
            return value if scrub(text, self._secrets) == text else REDACTED
        return scrub(str(value), self._secrets)  # what json.dumps(default=str) would have written


def original(stream: IO[str]) -> IO[str]:
    """The stream beneath any `LineLog` put in its place."""
    while isinstance(stream, LineLog):
        stream = stream.beneath
    return stream


class JsonHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """JSON lines on this process's real stderr, whatever stands in for `sys.stderr` later."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__(original(sys.stderr))
        self.setFormatter(JsonFormatter(secrets))


class LineLog:
    """A text stream that turns each line written to it into a log record (a line that is
    already a JSON object passes through as it is).

    With `descriptor=False` it has no file descriptor (`fileno()` is None): Celery's
    `safe_say` writes its notices ("Warm shutdown") to `sys.__stdout__`'s descriptor
    directly, and writes nothing when there is none (the worker logs its shutdown itself).
    """

    def __init__(self, logger: str, level: int, beneath: IO[str], descriptor: bool = True):
        self._log, self._level, self.beneath = logging.getLogger(logger), level, beneath
        self._descriptor = descriptor
        self._pending, self._lock, self._inside = "", threading.Lock(), threading.local()

    def write(self, text: str) -> int:
        with self._lock:
            *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._emit(line)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            line, self._pending = self._pending, ""
        self._emit(line)

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        if (line.startswith("{") and line.endswith("}")) or getattr(self._inside, "yes", False):
            # Already a JSON line, or written while logging one (a handler that writes to
            # sys.stderr would otherwise loop): straight to the real stream.
            original(self.beneath).write(line + "\n")
            return
        self._inside.yes = True
        try:
            self._log.log(self._level, line.rstrip())
        finally:
            self._inside.yes = False

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int | None:
        return original(self.beneath).fileno() if self._descriptor else None

    @property
    def encoding(self) -> str:
        return "utf-8"


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    logging.getLogger("callsync").critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not SystemExit and args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def configure_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Route every logger through one JSON handler on stderr (the entry points call this), and
    everything else a role would print through it too."""
    root = logging.getLogger()
    root.handlers[:] = [JsonHandler(secrets)]
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings.warn → the `py.warnings` logger, as JSON
    sys.excepthook, threading.excepthook = _log_uncaught, _log_uncaught_in_thread
    for name, stream_level in (("stdout", logging.INFO), ("stderr", logging.WARNING)):
        beneath = getattr(sys, name)
        if not isinstance(beneath, LineLog):
            setattr(sys, name, LineLog(f"callsync.{name}", stream_level, beneath))
            setattr(sys, f"__{name}__", LineLog(f"callsync.{name}", stream_level, beneath, descriptor=False))
    # httpx logs every request URL at INFO, and Stream's carries `api_key`: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # Celery's "Task ... received" and "... succeeded" lines: the worker's own line per task
    # outcome (callsync.tasks) says more, and two more lines per task cost CPU at load.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)


def dict_config(secrets: Iterable[str] = ()) -> dict[str, Any]:
    """The same set-up as a logging dictConfig, for gunicorn's `logconfig_dict` (its own lines in JSON too)."""
    handler = {"()": JsonHandler, "secrets": list(secrets)}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"console": handler, "error_console": handler},
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }
