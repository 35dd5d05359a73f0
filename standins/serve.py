"""Serve a stand-in on a real socket in a background thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from wsgiref.types import WSGIApplication

from werkzeug.serving import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    # Keep-alive, as the platforms serve: HTTP/1.0 would cost callsync a TCP handshake per
    # call, which the benches would measure as callsync's time.
    protocol_version = "HTTP/1.1"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Keep test output free of access logs."""


def serve(app: WSGIApplication, host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Run a WSGI app on a real socket in a background thread; returns (base_url, stop)."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://{host}:{server.port}", stop
