"""An overall deadline for one upstream call, enforced on every socket operation.

httpx's timeouts bound each connect, write and read on its own: a server that answers one
byte every few seconds keeps a call alive for as long as it likes, headers included. The
channel lock (worker/steps/sync.py) and the write queue's turn lease (worker/store/writequeue.py) assume
a call ends sooner. Here every socket operation of the calling thread waits at most until
the deadline that `until` set, so a call ends by then whatever the server does (DNS lookup
aside: `socket.create_connection` gives it no timeout).
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Iterable, Iterator

import httpcore
import httpx

_current = threading.local()  # .ends: time.monotonic() by which this thread's call must end


class DeadlinePassed(Exception):
    """The call's deadline passed between two reads (seen by the reader itself)."""


@contextlib.contextmanager
def until(ends: float) -> Iterator[None]:
    """Bound every socket operation this thread starts inside the block by `ends` (monotonic)."""
    outer = getattr(_current, "ends", None)
    _current.ends = ends if outer is None else min(outer, ends)
    try:
        yield
    finally:
        _current.ends = outer


def _bounded(timeout: float | None, expired: type[Exception]) -> float | None:
    ends: float | None = getattr(_current, "ends", None)
    if ends is None:
        return timeout
    left = ends - time.monotonic()
    if left <= 0:
        raise expired("the call's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, bounded, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport over sockets that honour `until`.

    HTTPTransport takes no network backend, so its connection pool is built again with one,
    with httpx's default limits (httpx/_transports/default.py, httpx 0.28). Proxies from the
    environment are mounted by httpx.Client with transports of their own, without this bound.
    """

    def __init__(self) -> None:
        super().__init__()
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )
