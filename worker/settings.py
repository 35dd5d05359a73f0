"""callsync's configuration: read once from the environment into one typed object.

Every problem is found in one pass: each reader (worker/readers.py) records what is wrong
with its variable and goes on, so a start that fails names everything to fix,
one line per variable (docs/configuration.md), instead of one per attempt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from worker.readers import (
    ConfigError,
    Rate,
    _bool,
    _choice,
    _Environment,
    _header,
    _int,
    _name,
    _origins,
    _prefix,
    _rate,
    _redis_url,
    _url,
)
from worker.sentinel_url import SentinelAddress, is_sentinel_url, parse_sentinel_url

__all__ = ["ConfigError", "Rate", "Role", "Settings", "load_settings"]  # the readers' types, re-exported

Role = Literal["web", "worker", "beat"]


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = field(default=None, repr=False)  # may carry the Redis password
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
    # The resync (docs/behaviour.md, rule 12; docs/operations.md, "Resync").
    resync_interval_seconds: int = 300
    full_resync_interval_seconds: int = 3600
    resync_query_percent: int = 20  # of Stream's QueryChannels quota (10,000 a minute per app)
    resync_hms_rate: Rate = Rate(600, 60.0)  # 100ms list and active-room calls of a resync
    stream_update_rate: Rate = Rate(300, 60.0)
    max_body_bytes: int = 1048576
    max_queue_depth: int = 100_000
    dry_run: bool = False
    task_max_retries: int = 10
    max_redeliveries: int = 5
    visibility_timeout_seconds: int = 1200
    task_events: bool = False
    port: int = 8000
    web_concurrency: int = 2
    worker_pool: str = "threads"
    worker_concurrency: int | None = None  # None: as the pool's default (worker/cli/main.py)
    # The calls API (docs/calls-api.md): optional; see `calls_api_unavailable`.
    hms_default_role: str = "guest"
    hms_template_id: str = ""
    call_token_ttl_seconds: int = 3600
    cors_origins: tuple[str, ...] = ()
    calls_per_user: Rate = Rate(30, 60.0)
    # 401 answers one client address may get from the calls API in a window; then 429 until it ends.
    unauthenticated_per_address: Rate = Rate(30, 60.0)
    # Proxies in front of the web role that add to X-Forwarded-For (0: clients connect directly).
    trusted_proxies: int = 0
    # Call messages (docs/behaviour.md, rule 13): off unless asked for.
    call_messages: bool = False
    call_message_user: str = "callsync"
    stream_message_rate: Rate = Rate(300, 60.0)

    @property
    def calls_api_unavailable(self) -> str | None:
        """Why the web role cannot serve the calls API (it then answers 503), or None.

        The calls API is optional: a web role for webhooks alone starts without its settings.
        """
        if self.dry_run:
            return "the calls API is off in dry run (CALLSYNC_DRY_RUN)"
        for name, value in (
            ("STREAM_API_KEY", self.stream_api_key),
            ("HMS_ACCESS_KEY", self.hms_access_key),
            ("HMS_APP_SECRET", self.hms_app_secret),
        ):
            if not value:
                return f"the calls API is not configured: {name} is unset"
        return None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value, for scrubbing logs."""
        return tuple(s for s in (*self.stream_secrets, self.hms_app_secret, *self.hms_webhook_secrets) if s)

    @property
    def sentinel(self) -> SentinelAddress | None:
        """The Sentinels and primary REDIS_URL names in its Sentinel form, else None (one server)."""
        return parse_sentinel_url(self.redis_url) if self.redis_url and is_sentinel_url(self.redis_url) else None

    @property
    def stream_secrets(self) -> tuple[str, ...]:
        """Every secret of STREAM_API_SECRET: the first signs, any of them verifies (a webhook's
        `X-Signature`, a user token of the calls API)."""
        return tuple(s for s in (self.stream_api_secret, *self.stream_rotation_secrets) if s)

    @property
    def longest_countdown_seconds(self) -> float:
        """The longest countdown callsync gives a task: half the visibility timeout, so a
        waiting task is never handed out twice (worker/jobs/tasks.py `_retry`); longer waits hop."""
        return self.visibility_timeout_seconds / 2

    @property
    def field_path(self) -> tuple[str, ...]:
        """The prefix as path parts: "data." → ("data",); "" → ()."""
        return tuple(part for part in self.field_prefix.split(".") if part)

    def require(self, role: Role) -> Settings:
        """Raise ConfigError naming every variable `role` needs and lacks, or whose secret
        anyone could know (a public development value, or shorter than MIN_SECRET_LENGTH)."""
        problems = [_required(name, [role]) for name in self.missing(role)] + self.guessable_secrets(role)
        if problems:
            raise ConfigError(*problems)
        return self

    def _secrets_of(self, role: Role) -> dict[str, str]:
        if role == "web":
            return {"STREAM_API_SECRET": ",".join(self.stream_secrets), "HMS_WEBHOOK_SECRET": ",".join(self.hms_webhook_secrets)}
        if role == "worker" and not self.dry_run:
            return {"STREAM_API_SECRET": ",".join(self.stream_secrets), "HMS_APP_SECRET": self.hms_app_secret}
        return {}

    def missing(self, role: Role) -> list[str]:
        """The variables `role` needs and lacks."""
        needed: dict[str, str | None] = {"REDIS_URL": self.redis_url}
        if role == "worker" and not self.dry_run:
            needed |= {"STREAM_API_KEY": self.stream_api_key, "STREAM_API_SECRET": self.stream_api_secret}
            needed |= {"HMS_ACCESS_KEY": self.hms_access_key, "HMS_APP_SECRET": self.hms_app_secret}
        return [name for name, value in (needed | self._secrets_of(role)).items() if not value]

    def guessable_secrets(self, role: Role) -> list[str]:
        """A problem line for each secret of `role` that anyone could know or guess (outside dry run)."""
        if self.dry_run:
            return []
        return [problem for name, value in self._secrets_of(role).items() if (problem := _guessable(name, value))]


# The values `callsync run` fills in on a laptop (README): public, so they authenticate nothing.
DEV_STREAM_SECRET = "dev-stream-secret"  # noqa: S105 - a public development value, see README
DEV_HMS_SECRET = "dev-hms-secret"  # noqa: S105 - a public development value, see README
DEVELOPMENT_SECRETS = frozenset({DEV_STREAM_SECRET, DEV_HMS_SECRET})
MIN_SECRET_LENGTH = 16


def _guessable(name: str, value: str) -> str | None:
    """Why a secret (or any value of a comma-separated list) is one anyone could know or guess, or None."""
    for part in (part.strip() for part in value.split(",")):
        if part in DEVELOPMENT_SECRETS:
            return f"{name} is a public development value; set your own secret (or CALLSYNC_DRY_RUN=true for development)"
        if part and len(part) < MIN_SECRET_LENGTH:
            return (
                f"{name} must be at least {MIN_SECRET_LENGTH} characters, got a value of {len(part)} "
                "(or CALLSYNC_DRY_RUN=true for development)"
            )
    return None


def _required(name: str, roles: list[Role]) -> str:
    named = " and ".join(roles) if len(roles) < 3 else f"{', '.join(roles[:-1])} and {roles[-1]}"
    return f"{name} is required for the {named} role{'s' if len(roles) > 1 else ''}"


def redacted_url(url: str) -> str:
    """`url` without its passwords, for anything shown: the userinfo's (`redis://:secret@host` →
    `redis://:***@host`) and a query's `password=` (the Sentinel form's primary password)."""
    scheme, sep, rest = url.partition("://")
    rest, question, query = rest.partition("?")
    if question:
        query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", query)
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")  # the last "@": where a URL parser splits too
    if not sep or not at:
        return f"{scheme}{sep}{rest}{question}{query}"
    user, colon, _ = userinfo.partition(":")  # without a colon the one value may be a password
    return f"{scheme}://{user + ':' if colon else ''}***@{host}{slash}{path}{question}{query}"


# A wait longer than a countdown may be is served in hops (Settings.longest_countdown_seconds),
# each one a task run; a wait of more hops than this would mostly keep workers hopping. The
# longest fixed wait, a retry's (301 s: worker/core/upstream.py MAX_WAIT_SECONDS and its jitter),
# takes 61 hops of the shortest timeout allowed (10 s); the waits that settings choose are
# checked here.
MAX_HOPS = 64


def _countdowns_unfit(settings: Settings) -> list[str]:
    """A problem line for each wait the visibility timeout cannot serve in at most MAX_HOPS hops."""
    hop = settings.longest_countdown_seconds
    waits = {
        "CALLSYNC_STREAM_UPDATE_RATE's period": settings.stream_update_rate.period,
        "CALLSYNC_STREAM_MESSAGE_RATE's period": settings.stream_message_rate.period,
        "CALLSYNC_STALE_FLAG_GRACE_SECONDS": float(settings.stale_flag_grace_seconds),
    }
    return [
        f"{name} ({seconds:.0f} s) is too long for CALLSYNC_VISIBILITY_TIMEOUT_SECONDS "
        f"({settings.visibility_timeout_seconds} s): set the timeout to at least {math.ceil(2 * seconds / MAX_HOPS)}"
        for name, seconds in waits.items()
        if seconds > MAX_HOPS * hop
    ]


WORKER_POOLS = ("prefork", "solo", "threads")


def load_settings(env: Mapping[str, str], *roles: Role) -> Settings:
    """Parse every variable of docs/configuration.md, and check that each of `roles` has
    what it needs; raise one ConfigError listing every problem found."""
    env = _Environment(env)
    settings = _parse(env)
    needed_by: dict[str, list[Role]] = {}
    for role in roles:
        for name in settings.missing(role):
            needed_by.setdefault(name, []).append(role)
    malformed = {problem.split()[0] for problem in env.problems}  # each line starts with its variable
    problems = env.problems + [_required(name, who) for name, who in needed_by.items() if name not in malformed]
    weak = dict.fromkeys(problem for role in roles for problem in settings.guessable_secrets(role))
    problems += [problem for problem in weak if problem.split()[0] not in malformed]
    problems += _countdowns_unfit(settings)
    if problems:
        raise ConfigError(*problems)
    return settings


def _parse(env: _Environment) -> Settings:
    concurrency = _int(env, "CALLSYNC_WORKER_CONCURRENCY", 0)
    stream_secrets = [s.strip() for s in env.get("STREAM_API_SECRET", "").split(",") if s.strip()] or [""]
    return Settings(
        redis_url=_redis_url(env, "REDIS_URL", Settings.redis_url),
        stream_api_key=env.get("STREAM_API_KEY", "").strip(),
        stream_api_secret=stream_secrets[0],
        stream_rotation_secrets=tuple(stream_secrets[1:]),
        stream_base_url=_url(env, "STREAM_BASE_URL", Settings.stream_base_url),
        hms_access_key=env.get("HMS_ACCESS_KEY", "").strip(),
        hms_app_secret=env.get("HMS_APP_SECRET", "").strip(),
        hms_base_url=_url(env, "HMS_BASE_URL", Settings.hms_base_url),
        hms_webhook_header=_header(env, "HMS_WEBHOOK_HEADER", Settings.hms_webhook_header),
        hms_webhook_secrets=tuple(s.strip() for s in env.get("HMS_WEBHOOK_SECRET", "").split(",") if s.strip()),
        field_prefix=_prefix(env, "CALLSYNC_FIELD_PREFIX", Settings.field_prefix),
        max_session_seconds=_int(env, "CALLSYNC_MAX_SESSION_SECONDS", Settings.max_session_seconds),
        sweep_interval_seconds=_int(env, "CALLSYNC_SWEEP_INTERVAL_SECONDS", Settings.sweep_interval_seconds),
        stale_flag_grace_seconds=_int(env, "CALLSYNC_STALE_FLAG_GRACE_SECONDS", Settings.stale_flag_grace_seconds, low=0),
        end_room_on_call_end=_bool(env, "CALLSYNC_END_ROOM_ON_CALL_END", Settings.end_room_on_call_end),
        session_checks_per_minute=_int(env, "CALLSYNC_SESSION_CHECKS_PER_MINUTE", Settings.session_checks_per_minute),
        resync_interval_seconds=_int(env, "CALLSYNC_RESYNC_INTERVAL_SECONDS", Settings.resync_interval_seconds),
        full_resync_interval_seconds=_int(env, "CALLSYNC_FULL_RESYNC_INTERVAL_SECONDS", Settings.full_resync_interval_seconds),
        resync_query_percent=_int(env, "CALLSYNC_RESYNC_QUERY_PERCENT", Settings.resync_query_percent, low=1, high=100),
        resync_hms_rate=_rate(env, "CALLSYNC_RESYNC_HMS_RATE", Settings.resync_hms_rate),
        stream_update_rate=_rate(env, "CALLSYNC_STREAM_UPDATE_RATE", Settings.stream_update_rate),
        max_body_bytes=_int(env, "CALLSYNC_MAX_BODY_BYTES", Settings.max_body_bytes, low=64),
        max_queue_depth=_int(env, "CALLSYNC_MAX_QUEUE_DEPTH", Settings.max_queue_depth),
        dry_run=_bool(env, "CALLSYNC_DRY_RUN", Settings.dry_run),
        task_max_retries=_int(env, "CALLSYNC_TASK_MAX_RETRIES", Settings.task_max_retries, low=0, high=100),
        max_redeliveries=_int(env, "CALLSYNC_MAX_REDELIVERIES", Settings.max_redeliveries, low=0, high=100),
        visibility_timeout_seconds=_int(env, "CALLSYNC_VISIBILITY_TIMEOUT_SECONDS", Settings.visibility_timeout_seconds, low=10),
        task_events=_bool(env, "CALLSYNC_TASK_EVENTS", Settings.task_events),
        port=_int(env, "PORT", Settings.port, high=65535),
        web_concurrency=_int(env, "WEB_CONCURRENCY", Settings.web_concurrency, high=1024),
        worker_pool=_choice(env, "CALLSYNC_WORKER_POOL", Settings.worker_pool, WORKER_POOLS),
        worker_concurrency=concurrency or None,
        hms_default_role=_name(env, "HMS_DEFAULT_ROLE", Settings.hms_default_role),
        hms_template_id=_name(env, "HMS_TEMPLATE_ID", Settings.hms_template_id),
        call_token_ttl_seconds=_int(env, "CALLSYNC_CALL_TOKEN_TTL_SECONDS", Settings.call_token_ttl_seconds, low=60, high=86400),
        cors_origins=_origins(env, "CALLSYNC_CORS_ORIGINS", Settings.cors_origins),
        calls_per_user=_rate(env, "CALLSYNC_CALLS_PER_USER", Settings.calls_per_user),
        unauthenticated_per_address=_rate(env, "CALLSYNC_UNAUTHENTICATED_PER_ADDRESS", Settings.unauthenticated_per_address),
        trusted_proxies=_int(env, "CALLSYNC_TRUSTED_PROXIES", Settings.trusted_proxies, low=0, high=10),
        call_messages=_bool(env, "CALLSYNC_CALL_MESSAGES", Settings.call_messages),
        call_message_user=_name(env, "CALLSYNC_CALL_MESSAGE_USER", Settings.call_message_user),
        stream_message_rate=_rate(env, "CALLSYNC_STREAM_MESSAGE_RATE", Settings.stream_message_rate),
    )
