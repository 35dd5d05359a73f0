"""callsync's configuration: read once from the environment into one typed object."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Role = Literal["web", "worker", "beat"]
_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """A setting a role needs is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Rate:
    count: int
    period: float  # seconds

    def __str__(self) -> str:
        return f"{self.count}/{int(self.period)}s"


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    stream_api_key: str = field(default="", repr=False)
    stream_api_secret: str = field(default="", repr=False)
    stream_base_url: str = "https://chat.stream-io-api.com"
    hms_access_key: str = field(default="", repr=False)
    hms_app_secret: str = field(default="", repr=False)
    hms_base_url: str = "https://api.100ms.live/v2"
    hms_webhook_header: str = "X-Callsync-Secret"
    hms_webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    field_prefix: str = "data."
    max_session_seconds: int = 43200
    sweep_interval_seconds: int = 60
    stale_flag_grace_seconds: int = 60
    end_room_on_call_end: bool = True
    session_checks_per_minute: int = 60
    stream_update_rate: Rate = Rate(300, 60.0)
    max_body_bytes: int = 1048576
    max_queue_depth: int = 100_000
    dry_run: bool = False
    task_max_retries: int = 10
    max_redeliveries: int = 5
    visibility_timeout_seconds: int = 1200
    task_events: bool = False

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for scrubbing logs."""
        return tuple(s for s in (self.stream_api_secret, self.hms_app_secret, *self.hms_webhook_secrets) if s)

    @property
    def longest_countdown_seconds(self) -> float:
        """The longest countdown callsync gives a task: half the visibility timeout, so a
        waiting task is never handed out twice (worker/tasks.py RETRY_WAIT); longer waits hop."""
        return self.visibility_timeout_seconds / 2

    @property
    def field_path(self) -> tuple[str, ...]:
        """The prefix as path parts: "data." → ("data",); "" → ()."""
        return tuple(part for part in self.field_prefix.split(".") if part)

    def require(self, role: Role) -> Settings:
        """Raise ConfigError naming the first variable `role` needs and lacks, or whose secret
        anyone could know (a public development value, or shorter than MIN_SECRET_LENGTH)."""
        needed = {"REDIS_URL": self.redis_url}
        secrets: dict[str, str] = {}
        if role == "web":
            secrets = {"STREAM_API_SECRET": self.stream_api_secret, "HMS_WEBHOOK_SECRET": ",".join(self.hms_webhook_secrets)}
        if role == "worker" and not self.dry_run:
            needed |= {"STREAM_API_KEY": self.stream_api_key, "HMS_ACCESS_KEY": self.hms_access_key}
            secrets = {"STREAM_API_SECRET": self.stream_api_secret, "HMS_APP_SECRET": self.hms_app_secret}
        for name, value in (needed | secrets).items():
            if not value:
                raise ConfigError(f"{name} is required for the {role} role")
        for name, value in secrets.items():
            if not self.dry_run:
                _guessable(name, value)
        return self


# The values `callsync run` fills in on a laptop (README): public, so they authenticate nothing.
DEV_STREAM_SECRET = "dev-stream-secret"  # noqa: S105 - a public development value, see README
DEV_HMS_SECRET = "dev-hms-secret"  # noqa: S105 - a public development value, see README
DEVELOPMENT_SECRETS = frozenset({DEV_STREAM_SECRET, DEV_HMS_SECRET})
MIN_SECRET_LENGTH = 16


def _guessable(name: str, value: str) -> None:
    """Refuse a secret (or any value of a comma-separated list) that anyone could know or guess."""
    for part in (part.strip() for part in value.split(",")):
        if part in DEVELOPMENT_SECRETS:
            raise ConfigError(
                f"{name} is a public development value; set your own secret (or CALLSYNC_DRY_RUN=true for development)"
            )
        if part and len(part) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"{name} must be at least {MIN_SECRET_LENGTH} characters, got a value of {len(part)} "
                "(or CALLSYNC_DRY_RUN=true for development)"
            )


def _int(env: Mapping[str, str], name: str, default: int, low: int = 1, high: int = 10**12) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _rate(env: Mapping[str, str], name: str, default: Rate) -> Rate:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = re.fullmatch(r"(\d+)\s*/\s*([smh])", raw)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"{name} must look like 300/m (count per s, m or h), got {raw!r}")
    return Rate(int(match.group(1)), _PERIODS[match.group(2)])


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    """A platform's base URL: https, or http to a loopback host (the stand-ins, a local proxy),
    so credentials and answers never cross a network in the clear."""
    raw = env.get(name, "").strip() or default
    try:
        host = urlsplit(raw).hostname or ""
    except ValueError:
        host = ""
    if not re.match(r"^https?://[^\s/]+", raw) or not host:
        raise ConfigError(f"{name} must be an http(s) URL")
    if raw.startswith("http://") and not _is_loopback(host):
        raise ConfigError(f"{name} must use https (http only to a loopback host such as 127.0.0.1)")
    return raw.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default)
    if raw and not re.fullmatch(r"([A-Za-z0-9_]+\.)+", raw):
        raise ConfigError(f"{name} must be empty or dotted field names ending in '.', e.g. data.")
    return raw


# A wait longer than a countdown may be is served in hops (Settings.longest_countdown_seconds),
# each one a task run; a wait of more hops than this would mostly keep workers hopping. The
# longest fixed wait, a retry's (301 s: worker/core/upstream.py MAX_WAIT_SECONDS and its jitter),
# takes 61 hops of the shortest timeout allowed (10 s); the waits that settings choose are
# checked here.
MAX_HOPS = 64


def _countdowns_fit(settings: Settings) -> Settings:
    """Refuse waits the visibility timeout cannot serve in at most MAX_HOPS hops."""
    hop = settings.longest_countdown_seconds
    waits = {
        "CALLSYNC_STREAM_UPDATE_RATE's period": settings.stream_update_rate.period,
        "CALLSYNC_STALE_FLAG_GRACE_SECONDS": float(settings.stale_flag_grace_seconds),
    }
    for name, seconds in waits.items():
        if seconds > MAX_HOPS * hop:
            needed = math.ceil(2 * seconds / MAX_HOPS)
            raise ConfigError(
                f"{name} ({seconds:.0f} s) is too long for CALLSYNC_VISIBILITY_TIMEOUT_SECONDS "
                f"({settings.visibility_timeout_seconds} s): set the timeout to at least {needed}"
            )
    return settings


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse every CONTRACT §2 variable; raise ConfigError on the first malformed one."""
    header = env.get("HMS_WEBHOOK_HEADER", "").strip() or "X-Callsync-Secret"
    if not re.fullmatch(r"[A-Za-z0-9\-]+", header):
        raise ConfigError("HMS_WEBHOOK_HEADER must be an HTTP header name")
    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url and not re.match(r"^(rediss?|unix)://", redis_url):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    return _countdowns_fit(
        Settings(
            redis_url=redis_url,
            stream_api_key=env.get("STREAM_API_KEY", "").strip(),
            stream_api_secret=env.get("STREAM_API_SECRET", "").strip(),
            stream_base_url=_url(env, "STREAM_BASE_URL", Settings.stream_base_url),
            hms_access_key=env.get("HMS_ACCESS_KEY", "").strip(),
            hms_app_secret=env.get("HMS_APP_SECRET", "").strip(),
            hms_base_url=_url(env, "HMS_BASE_URL", Settings.hms_base_url),
            hms_webhook_header=header,
            hms_webhook_secrets=tuple(s.strip() for s in env.get("HMS_WEBHOOK_SECRET", "").split(",") if s.strip()),
            field_prefix=_prefix(env, "CALLSYNC_FIELD_PREFIX", Settings.field_prefix),
            max_session_seconds=_int(env, "CALLSYNC_MAX_SESSION_SECONDS", 43200),
            sweep_interval_seconds=_int(env, "CALLSYNC_SWEEP_INTERVAL_SECONDS", 60),
            stale_flag_grace_seconds=_int(env, "CALLSYNC_STALE_FLAG_GRACE_SECONDS", 60, low=0),
            end_room_on_call_end=_bool(env, "CALLSYNC_END_ROOM_ON_CALL_END", True),
            session_checks_per_minute=_int(env, "CALLSYNC_SESSION_CHECKS_PER_MINUTE", 60),
            stream_update_rate=_rate(env, "CALLSYNC_STREAM_UPDATE_RATE", Rate(300, 60.0)),
            max_body_bytes=_int(env, "CALLSYNC_MAX_BODY_BYTES", 1048576, low=64),
            max_queue_depth=_int(env, "CALLSYNC_MAX_QUEUE_DEPTH", 100_000),
            dry_run=_bool(env, "CALLSYNC_DRY_RUN", False),
            task_max_retries=_int(env, "CALLSYNC_TASK_MAX_RETRIES", 10, low=0, high=100),
            max_redeliveries=_int(env, "CALLSYNC_MAX_REDELIVERIES", 5, low=0, high=100),
            visibility_timeout_seconds=_int(env, "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS", 1200, low=10),
            task_events=_bool(env, "CALLSYNC_TASK_EVENTS", False),
        )
    )
