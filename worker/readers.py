"""Readers of environment values: each parses one variable into a typed value.

On an `_Environment` a reader records its problem and returns the default instead of
raising (`_collected`), so reading goes on and a start names every problem at once.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from worker.sentinel_url import FORM, is_sentinel_url, parse_sentinel_url

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class ConfigError(Exception):
    """Settings that are missing or malformed: one message per problem, each naming its variable."""

    def __init__(self, *problems: str):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Rate:
    count: int
    period: float  # seconds

    def __str__(self) -> str:
        return f"{self.count}/{int(self.period)}s"


class _Environment(dict[str, str]):
    """The environment being read, and the problems found in it so far."""

    def __init__(self, env: Mapping[str, str]):
        super().__init__(env)
        self.problems: list[str] = []


Parsed = TypeVar("Parsed")


def _collected(read: Callable[..., Parsed]) -> Callable[..., Parsed]:
    """A reader that, on an `_Environment`, records its problem and returns the default
    (its third argument) instead of raising, so that reading goes on to the next variable."""

    @functools.wraps(read)
    def reader(env: Mapping[str, str], name: str, default: Any, *args: Any, **kwargs: Any) -> Parsed:
        try:
            return read(env, name, default, *args, **kwargs)
        except ConfigError as exc:
            if not isinstance(env, _Environment):
                raise
            env.problems.extend(exc.problems)
            return default  # type: ignore[no-any-return]

    return reader


@_collected
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


@_collected
def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@_collected
def _rate(env: Mapping[str, str], name: str, default: Rate) -> Rate:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    match = re.fullmatch(r"(\d+)\s*/\s*([smh])", raw)
    if not match or int(match.group(1)) < 1:
        raise ConfigError(f"{name} must look like 300/m (count per s, m or h), got {raw!r}")
    return Rate(int(match.group(1)), _PERIODS[match.group(2)])


@_collected
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


@_collected
def _prefix(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, default)
    if raw and not re.fullmatch(r"([A-Za-z0-9_]+\.)+", raw):
        raise ConfigError(f"{name} must be empty or dotted field names ending in '.', e.g. data.")
    return raw


@_collected
def _origins(env: Mapping[str, str], name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Browser origins as a browser sends them (scheme://host[:port], no path); no wildcard."""
    origins = []
    for raw in env.get(name, "").split(","):
        origin = raw.strip().rstrip("/")
        if not origin:
            continue
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?", origin):
            raise ConfigError(f"{name} must be comma-separated origins such as https://app.example.com, got {origin!r}")
        origins.append(origin.lower())
    return tuple(dict.fromkeys(origins))


@_collected
def _name(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if raw and not re.fullmatch(r"[A-Za-z0-9_\-]{1,100}", raw):
        raise ConfigError(f"{name} must be letters, digits, '-' or '_', got {raw!r}")
    return raw


@_collected
def _header(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    if not re.fullmatch(r"[A-Za-z0-9\-]+", raw):
        raise ConfigError(f"{name} must be an HTTP header name")
    return raw


@_collected
def _redis_url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """A Redis URL: one server (redis://, rediss://, unix://) or Sentinels naming a primary
    (worker/sentinel_url.py), checked here so that a malformed one stops the start."""
    raw = env.get(name, "").strip() or default
    if raw and is_sentinel_url(raw):
        try:
            parse_sentinel_url(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} {exc} (the Sentinel form is {FORM})") from None
    elif raw and not re.match(r"^(rediss?|unix)://", raw):
        raise ConfigError(f"{name} must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://")
    return raw


@_collected
def _choice(env: Mapping[str, str], name: str, default: str, choices: Iterable[str]) -> str:
    raw = env.get(name, "").strip() or default
    if raw not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(sorted(choices))}, got {raw!r}")
    return raw
