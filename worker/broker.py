"""kombu's Redis transport with one client object per channel for its synchronous calls.

kombu builds a new `redis.Redis` for every delivery's bookkeeping and every
acknowledgement (`Channel.conn_or_acquire`), and with redis-py 5+ building one costs
about as much CPU as the round trip it is for (its response-callback table): a tenth
of a busy worker's CPU here. A `redis.Redis` is only a thread-safe handle on the
channel's connection pool, so this channel keeps one per pool and hands it out again.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


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
    """The transport for a broker URL: this one for plain `redis://`, kombu's own otherwise
    (kombu sets up TLS for `rediss://` only when it picks the transport from the URL)."""
    return f"{__name__}:Transport" if url and url.startswith("redis://") else None
