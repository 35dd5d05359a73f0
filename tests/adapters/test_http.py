"""Upstream calls bounded in time and size (worker/clients/http.py, worker/clients/deadline.py),
against a hostile upstream served on loopback (tests/support/hostile.py HostileUpstream)."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support.hostile import HostileUpstream
from worker.clients.http import (
    CALL_DEADLINE_SECONDS,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    error_message,
    upstream_client,
)
from worker.clients.stream import StreamClient
from worker.core.upstream import Retry, UpstreamError
from worker.steps.sync import LOCK_SECONDS, MAX_STEPS
from worker.store.writequeue import LEASE_SECONDS


@pytest.fixture
def upstream() -> Iterator[HostileUpstream]:
    server = HostileUpstream()
    yield server
    server.close()


def stream_client(base_url: str, deadline: float = CALL_DEADLINE_SECONDS) -> StreamClient:
    return StreamClient(upstream_client(base_url, None), ("data",), deadline=deadline)


def peak_bytes_while(action: Callable[[], object]) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        action()
        error = None
    except Exception as exc:
        error = exc
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return error, peak


@pytest.mark.parametrize("path", ["/endless", "/endless-error"])
def test_an_endless_body_is_dropped_at_the_cap(upstream: HostileUpstream, path: str) -> None:
    # The 1.5 GB error body took a worker to 6 GB RSS: the body is read whole.
    client = stream_client(upstream.url + path)
    error, peak = peak_bytes_while(lambda: client.read_call_fields("messaging:general"))
    assert isinstance(error, UpstreamError), error
    assert error.retry is Retry.BACKOFF
    if path == "/endless":
        assert error.status is None and f"over {MAX_RESPONSE_BYTES} bytes" in error.message
    else:
        assert error.status == 500  # the status still decides, without the body
    assert peak < 3 * MAX_RESPONSE_BYTES, peak  # the body sent is 48 MiB
    assert upstream.closed_by_client.wait(5)  # the client hung up...
    assert upstream.sent < upstream.give_up_bytes // 2  # ...long before the server would have stopped


def test_a_compressed_bomb_never_inflates_past_the_cap(upstream: HostileUpstream) -> None:
    client = stream_client(upstream.url + "/gzip-bomb")
    error, peak = peak_bytes_while(lambda: client.read_call_fields("messaging:general"))
    assert isinstance(error, UpstreamError) and "over" in error.message, error
    assert peak < 3 * MAX_RESPONSE_BYTES, peak  # the body sent is 48 MiB


@pytest.mark.parametrize("path", ["/drip", "/drip-body"])
def test_a_dripping_answer_ends_at_the_deadline(upstream: HostileUpstream, path: str) -> None:
    # One byte every 0.25 s never trips the gap timeout (7 s): only the deadline ends it.
    client = stream_client(upstream.url + path, deadline=1.0)
    started = time.monotonic()
    with pytest.raises(UpstreamError) as raised:
        client.read_call_fields("messaging:general")
    took = time.monotonic() - started
    assert raised.value.retry is Retry.BACKOFF and "timeout" in raised.value.message
    assert 0.9 <= took < 1.6, took
    assert upstream.drip_every < DEFAULT_TIMEOUT.read  # type: ignore[operator]


class Streamed(httpx.SyncByteStream):
    """A body the client reads as it would from a socket (httpx reads `content=` at once)."""

    def __init__(self, content: bytes):
        self._content = content

    def __iter__(self) -> Iterator[bytes]:
        yield from (self._content[i : i + 7] for i in range(0, len(self._content), 7))


def test_gzip_and_deflate_answers_are_read() -> None:
    body = b'{"channels": [{"channel": {"cid": "messaging:a", "data": {"callActive": true, "callId": "c"}}}]}'
    for encoding, content in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):

        def answer(request: httpx.Request, content: bytes = content, encoding: str = encoding) -> httpx.Response:
            assert request.headers["Accept-Encoding"] == "gzip, deflate"
            return httpx.Response(200, stream=Streamed(content), headers={"Content-Encoding": encoding})

        client = StreamClient(upstream_client("http://stream.test", None, httpx.MockTransport(answer)), ("data",))
        fields = client.read_call_fields("messaging:a")
        assert fields is not None and fields.active and fields.call_id == "c"


def test_an_unrequested_encoding_is_a_transport_error() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, stream=Streamed(b"\x00"), headers={"Content-Encoding": "br"}))
    client = StreamClient(upstream_client("http://stream.test", None, transport), ("data",))
    with pytest.raises(UpstreamError, match="transport error"):
        client.read_call_fields("messaging:a")


def test_the_deadline_ends_calls_before_the_holds_that_assume_they_end():
    # A reconcile holds the channel lock over at most MAX_STEPS steps of at most two calls.
    assert MAX_STEPS * 2 * CALL_DEADLINE_SECONDS < LOCK_SECONDS
    assert CALL_DEADLINE_SECONDS < LEASE_SECONDS  # one Stream update under one turn lease
    assert DEFAULT_TIMEOUT.read == DEFAULT_TIMEOUT.write == CALL_DEADLINE_SECONDS


def test_a_long_platform_message_is_cut_between_words_never_inside_a_secret():
    secret = "s3cr3t-" + "k" * 30
    for pad in range(170, 205):
        message = error_message(json.dumps({"message": "x" * pad + " " + secret + " tail"}).encode(), "Bad Request")
        assert len(message) <= 202 and (secret in message or secret[:4] not in message), (pad, message)
    assert error_message(json.dumps({"message": "y" * 500}).encode(), "Bad Request") == "…"
    assert error_message(b"not json", "Bad Request") == "Bad Request"
