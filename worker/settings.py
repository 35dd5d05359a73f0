"""callsync's configuration: read once from the environment into one typed object."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

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
    stream_api_secret: str = field(default="", repr=False)  # signs API calls and server tokens
    # During a key rotation: more secrets a webhook's signature may be made with (the rest of
    # STREAM_API_SECRET's comma-separated list); never used to sign.
    stream_rotation_secrets: tuple[str, ...] = field(default=(), repr=False)
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
    dry_run: bool = False
    task_max_retries: int = 10
    visibility_timeout_seconds: int = 1200
    task_events: bool = False

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for scrubbing logs."""
        return tuple(s for s in (*self.stream_webhook_secrets, self.hms_app_secret, *self.hms_webhook_secrets) if s)

    @property
    def stream_webhook_secrets(self) -> tuple[str, ...]:
        """The secrets a Stream webhook's `X-Signature` may be made with: any of them verifies."""
        return tuple(s for s in (self.stream_api_secret, *self.stream_rotation_secrets) if s)

    @property
    def field_path(self) -> tuple[str, ...]:
        """The prefix as path parts: "data." → ("data",); "" → ()."""
        return tuple(part for part in self.field_prefix.split(".") if part)

    def require(self, role: Role) -> Settings:
        """Raise ConfigError naming the first variable `role` needs and lacks."""
        needed = {"REDIS_URL": self.redis_url}
        if role == "web":
            needed |= {"STREAM_API_SECRET": self.stream_api_secret, "HMS_WEBHOOK_SECRET": ",".join(self.hms_webhook_secrets)}
        if role == "worker" and not self.dry_run:
            needed |= {
                "STREAM_API_KEY": self.stream_api_key,
                "STREAM_API_SECRET": self.stream_api_secret,
                "HMS_ACCESS_KEY": self.hms_access_key,
                "HMS_APP_SECRET": self.hms_app_secret,
            }
        for name, value in needed.items():
            if not value:
                raise ConfigError(f"{name} is required for the {role} role")
        return self


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
    raw = env.get(name, "").strip() or default
    if not re.match(r"^https?://[^\s/]+", raw):
        raise ConfigError(f"{name} must be an http(s) URL")
    return raw.rstrip("/")


def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default)
    if raw and not re.fullmatch(r"([A-Za-z0-9_]+\.)+", raw):
        raise ConfigError(f"{name} must be empty or dotted field names ending in '.', e.g. data.")
    return raw


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse every CONTRACT §2 variable; raise ConfigError on the first malformed one."""
    header = env.get("HMS_WEBHOOK_HEADER", "").strip() or "X-Callsync-Secret"
    if not re.fullmatch(r"[A-Za-z0-9\-]+", header):
        raise ConfigError("HMS_WEBHOOK_HEADER must be an HTTP header name")
    redis_url = env.get("REDIS_URL", "").strip() or None
    if redis_url and not re.match(r"^(rediss?|unix)://", redis_url):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    stream_secrets = [s.strip() for s in env.get("STREAM_API_SECRET", "").split(",") if s.strip()] or [""]
    return Settings(
        redis_url=redis_url,
        stream_api_key=env.get("STREAM_API_KEY", "").strip(),
        stream_api_secret=stream_secrets[0],
        stream_rotation_secrets=tuple(stream_secrets[1:]),
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
        dry_run=_bool(env, "CALLSYNC_DRY_RUN", False),
        task_max_retries=_int(env, "CALLSYNC_TASK_MAX_RETRIES", 10, low=0, high=100),
        visibility_timeout_seconds=_int(env, "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS", 1200, low=10),
        task_events=_bool(env, "CALLSYNC_TASK_EVENTS", False),
    )
