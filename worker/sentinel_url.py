"""REDIS_URL's Sentinel form, read without I/O: which Sentinels to ask for which primary, and
with which credentials and TLS to talk to each (docs/configuration.md, "A Redis with Sentinel").

    redis+sentinel://[[user]:sentinel-password@]host[:port][,host[:port]...]/service[/db][?query]
    rediss+sentinel://...    the same over TLS, to the Sentinels and to the primary

The hosts are the Sentinels (port 26379 unless given), so the userinfo is the Sentinels'
(`requirepass` in sentinel.conf); the primary's credentials (`requirepass` of the Redis
servers, which often differs) are the query's `password=` and `username=`. The other query
keys are rediss://'s TLS options. kombu names the same things as
`sentinel://h1:26379;sentinel://h2:26379` with the transport options `master_name` and
`sentinel_kwargs`, redis-py as `Sentinel([(h1, 26379), ...], sentinel_kwargs=...)
.master_for(service, password=...)`: `worker/connect.py` and `worker/jobs/broker.py` build
those from a `SentinelAddress`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_PORT = 26379
TLS_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
CERT_REQS = ("none", "optional", "required")
FORM = "redis+sentinel://[:sentinel-password@]host:26379,host:26379/service[/db][?password=primary-password]"

_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.\-_]+))(?::(?P<port>\d{1,5}))?")
_SERVICE = re.compile(r"[A-Za-z0-9.\-_]{1,100}")


@dataclass(frozen=True)
class SentinelAddress:
    """A primary as Sentinels name it: where to ask, what to ask for, how to log in to each."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = field(default=None, repr=False)  # the primary's (and its replicas')
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: tuple[tuple[str, str], ...] = ()  # rediss://'s query options, e.g. ssl_cert_reqs

    @property
    def passwords(self) -> tuple[str, ...]:
        return tuple(p for p in (self.password, self.sentinel_password) if p)

    def _tls_kwargs(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_cert_reqs": "required", **dict(self.tls_options)}

    def primary_kwargs(self) -> dict[str, Any]:
        """redis-py's connection arguments for the primary (`Sentinel.master_for`'s keywords)."""
        kwargs: dict[str, Any] = {"db": self.db, **self._tls_kwargs()}
        kwargs.update({k: v for k, v in (("username", self.username), ("password", self.password)) if v})
        return kwargs

    def sentinel_kwargs(self) -> dict[str, Any]:
        """redis-py's connection arguments for the Sentinels (`Sentinel(sentinel_kwargs=...)`)."""
        kwargs: dict[str, Any] = self._tls_kwargs()
        pairs = (("username", self.sentinel_username), ("password", self.sentinel_password))
        kwargs.update({k: v for k, v in pairs if v})
        return kwargs


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(SCHEMES)


def parse_sentinel_url(url: str) -> SentinelAddress:
    """The address a Sentinel form names; ValueError saying what is wrong (never a password)."""
    scheme, _, rest = url.partition("://")
    if scheme + "://" not in SCHEMES:
        raise ValueError("must start with redis+sentinel:// or rediss+sentinel://")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    sentinel_user, _, sentinel_password = userinfo.partition(":") if at else ("", "", "")
    service, db = _service_and_db(path)
    options = _query(query, tls=scheme == "rediss+sentinel")
    return SentinelAddress(
        sentinels=_hosts(hosts),
        service_name=service,
        db=db,
        username=options.pop("username", None),
        password=options.pop("password", None),
        sentinel_username=unquote(sentinel_user) or None,
        sentinel_password=unquote(sentinel_password) or None,
        tls=scheme == "rediss+sentinel",
        tls_options=tuple(sorted(options.items())),
    )


def _hosts(hosts: str) -> tuple[tuple[str, int], ...]:
    found = []
    for part in hosts.split(","):
        match = _HOST.fullmatch(part.strip())
        if not match:
            raise ValueError(f"must name its Sentinels as host:port separated by commas, got {part.strip()!r}")
        port = int(match.group("port") or DEFAULT_PORT)
        if not 1 <= port <= 65535:
            raise ValueError(f"names a Sentinel port out of range: {port}")
        found.append((match.group("v6") or match.group("name"), port))
    return tuple(dict.fromkeys(found))


def _service_and_db(path: str) -> tuple[str, int]:
    service, _, db = path.strip("/").partition("/")
    if not _SERVICE.fullmatch(service):
        raise ValueError("must name the primary's service after the Sentinels, as Sentinel knows it (e.g. /mymaster)")
    if db and not (db.isdigit() and int(db) < 1_000_000):
        raise ValueError(f"must end with a database number after the service (e.g. /mymaster/0), got {db!r}")
    return service, int(db or 0)


def _query(query: str, *, tls: bool) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError("has a malformed query (after '?')") from None
    allowed = ("password", "username", *(TLS_KEYS if tls else ()))
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in allowed:
            where = "" if tls or key not in TLS_KEYS else " (TLS options need rediss+sentinel://)"
            raise ValueError(f"has an unknown query key {key!r}{where}; known: {', '.join(allowed)}")
        if value:
            options[key] = value
    if options.get("ssl_cert_reqs", "required") not in CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(CERT_REQS)}")
    return options
