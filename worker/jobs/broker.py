"""kombu's Redis transport with one client object per channel for its synchronous calls.

kombu builds a new `redis.Redis` for every delivery's bookkeeping and every
acknowledgement (`Channel.conn_or_acquire`), and with redis-py 5+ building one costs
about as much CPU as the round trip it is for (its response-callback table): a tenth
of a busy worker's CPU here. A `redis.Redis` is only a thread-safe handle on the
channel's connection pool, so this channel keeps one per pool and hands it out again.
"""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import parse_qs, urlsplit

from kombu.transport import redis as kombu_redis
from kombu.utils.url import parse_ssl_cert_reqs


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _callsync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        client = self._callsync_client
        if client is None or client.connection_pool is not pool:  # a new pool after a reconnect
            client = self._callsync_client = super()._create_client()  # type: ignore[no-untyped-call]
        return client


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


def transport_for(url: str | None) -> str | None:
    """The transport for a broker URL: this one for `redis://` and `rediss://` (TLS comes
    from `ssl_options`), kombu's own choice otherwise (`unix://`)."""
    return f"{__name__}:Transport" if url and url.startswith(("redis://", "rediss://")) else None


_TLS_QUERY = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def ssl_options(url: str | None) -> dict[str, Any] | None:
    """TLS for a `rediss://` broker (Celery's `broker_use_ssl`), read from the URL's query as
    redis-py reads it for the state store: the certificate is verified unless the URL says
    otherwise (`?ssl_cert_reqs=none`, what Heroku Redis's self-signed certificates need).
    kombu alone would not verify when the URL names no `ssl_cert_reqs`, nor use TLS at all
    under a transport it did not pick from the scheme."""
    if not url or not url.startswith("rediss://"):
        return None
    query = {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}
    reqs = parse_ssl_cert_reqs(query["ssl_cert_reqs"]) if "ssl_cert_reqs" in query else ssl.CERT_REQUIRED
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_NONE if reqs is None else reqs}
    options.update({key: query[key] for key in _TLS_QUERY if key in query})
    return options
