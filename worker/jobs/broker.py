"""kombu's Redis transports with one client object per channel for its synchronous calls.

kombu builds a new `redis.Redis` for every delivery's bookkeeping and every
acknowledgement (`Channel.conn_or_acquire`), and with redis-py 5+ building one costs
about as much CPU as the round trip it is for (its response-callback table): a tenth
of a busy worker's CPU here. A `redis.Redis` is only a thread-safe handle on the
channel's connection pool, so these channels keep one per pool and hand it out again.

With REDIS_URL's Sentinel form the broker is kombu's Sentinel transport
(`kombu.transport.redis.SentinelChannel`), whose pool is redis-py's `SentinelConnectionPool`
(worker/connect.py says how it follows a failover), given the same client reuse.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.url import parse_ssl_cert_reqs

from worker.connect import SENTINEL_TIMEOUT_SECONDS
from worker.sentinel_url import SentinelAddress, is_sentinel_url, parse_sentinel_url


class _OneClient:
    """A channel's `_create_client` that hands out one synchronous client per pool.

    A channel whose connection kombu already closed (`Connection._close` sets the transport's
    `client` to None) and whose pools it dropped cannot build a pool again: kombu's
    `_connparams` would fail on `None.hostname` with an AttributeError, which no caller
    expects. That happens when Celery's consumer closes a connection lost to the broker a
    second time (its restore of unacknowledged messages, its hub's rejects): the AttributeError
    was fatal to the worker. It is a lost connection, so it is raised as one
    (`redis.ConnectionError`, among kombu's `connection_errors`): the closers ignore it, the
    consumer reconnects, and the unacknowledged messages come back after the visibility timeout."""

    _callsync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if getattr(self.connection, "client", None) is None:  # type: ignore[attr-defined]
            raise redis.ConnectionError("the broker connection is closed")
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        client = self._callsync_client
        if client is None or client.connection_pool is not pool:  # a new pool after a reconnect
            client = self._callsync_client = super()._create_client()  # type: ignore[misc]
        return client


class Channel(_OneClient, kombu_redis.Channel):  # type: ignore[misc]
    pass


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


class SentinelChannel(_OneClient, kombu_redis.SentinelChannel):  # type: ignore[misc]
    pass


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    Channel = SentinelChannel


def broker_url(url: str | None) -> str | None:
    """Celery's `broker_url` for REDIS_URL: itself for one server; for Sentinels, kombu's form
    (`sentinel://[user:password@]h1:26379/db;sentinel://h2:26379/db`, the primary's credentials
    on the first, as kombu reads them: `Connection` takes them from the first URL of a
    `;` list), with the service and the Sentinels' own credentials in `sentinel_transport_options`."""
    if not url or not is_sentinel_url(url):
        return url
    address = parse_sentinel_url(url)
    credentials = ""
    if address.username or address.password:
        credentials = f"{quote(address.username or '', safe='')}:{quote(address.password or '', safe='')}@"
    hosts = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in address.sentinels]
    return ";".join(f"sentinel://{credentials if i == 0 else ''}{host}/{address.db}" for i, host in enumerate(hosts))


def sentinel_transport_options(address: SentinelAddress) -> dict[str, Any]:
    """kombu's Sentinel transport options: which primary to ask for, and how to log in to the
    Sentinels (kombu hands `sentinel_kwargs` to `redis.sentinel.Sentinel` as is)."""
    timeouts = {"socket_timeout": SENTINEL_TIMEOUT_SECONDS, "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS}
    return {"master_name": address.service_name, "sentinel_kwargs": {**timeouts, **address.sentinel_kwargs()}}


def transport_for(url: str | None) -> str | None:
    """The transport for REDIS_URL: this module's for `redis://` and `rediss://` (TLS comes
    from `ssl_options`) and for the Sentinel form, kombu's own choice otherwise (`unix://`)."""
    if is_sentinel_url(url):
        return f"{__name__}:SentinelTransport"
    return f"{__name__}:Transport" if url and url.startswith(("redis://", "rediss://")) else None


_TLS_QUERY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def ssl_options(url: str | None) -> dict[str, Any] | None:
    """TLS for a `rediss://` (or `rediss+sentinel://`) broker (Celery's `broker_use_ssl`), read from the URL's query as
    redis-py reads it for the state store: the certificate is verified unless the URL says
    otherwise (`?ssl_cert_reqs=none`, what Heroku Redis's self-signed certificates need).
    kombu alone would not verify when the URL names no `ssl_cert_reqs`, nor use TLS at all
    under a transport it did not pick from the scheme."""
    if is_sentinel_url(url):
        address = parse_sentinel_url(url or "")
        if not address.tls:
            return None
        query = dict(address.tls_options)
    elif not url or not url.startswith("rediss://"):
        return None
    else:
        query = {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    reqs = parse_ssl_cert_reqs(query["ssl_cert_reqs"]) if "ssl_cert_reqs" in query else ssl.CERT_REQUIRED
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_NONE if reqs is None else reqs}
    options.update({key: query[key] for key in _TLS_QUERY if key in query})
    return options
