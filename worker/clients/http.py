"""The one place an httpx answer becomes a value or a typed UpstreamError.

Every call is bounded in time (a deadline over the whole call, not only between bytes:
worker/clients/deadline.py) and in size (the body is streamed and dropped past a cap), so
a hostile or broken upstream costs a worker at most CALL_DEADLINE_SECONDS and a few MiB.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from worker.clients.deadline import DeadlinePassed, DeadlineTransport, until
from worker.core.pacing import reported_limit
from worker.core.upstream import classify, transport_failure

# Below the channel lock (worker/steps/sync.py LOCK_SECONDS, 60 s, over at most 8 calls) and the
# write queue's turn lease (worker/store/writequeue.py LEASE_SECONDS, 10 s, over one call); tests check both.
CALL_DEADLINE_SECONDS = 7.0
DEFAULT_TIMEOUT = httpx.Timeout(CALL_DEADLINE_SECONDS, connect=5.0)
MAX_RESPONSE_BYTES = 4 * 1024 * 1024  # the platforms' answers are a few KiB
MAX_ERROR_BODY_BYTES = 64 * 1024  # enough for any error's JSON `message`
# Encodings decoded here with the cap applied to the inflated size (httpx's decoders inflate
# a whole chunk at once); asking for these only keeps brotli or zstd from being sent.
ACCEPT_ENCODING = "gzip, deflate"
_READ = 64 * 1024


def upstream_client(base_url: str, auth: httpx.Auth | None, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """An httpx client for one platform: the deadline-honouring transport unless given one."""
    return httpx.Client(
        base_url=base_url,
        auth=auth,
        timeout=DEFAULT_TIMEOUT,
        transport=transport or DeadlineTransport(),
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )


def segment(value: str) -> str:
    """`value` as one URL path segment: an id from a webhook cannot reach another endpoint
    through `/`, `?`, `#` or a `..` segment (which httpx would resolve against the base URL)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if not quoted.strip(".") else quoted


class OnUpstreamCall(Protocol):
    """Told of every upstream call: `endpoint` is a template such as "/channels/{type}/{id}",
    never the URL (it carries ids and, for Stream, the api_key); `status` is the HTTP status
    or "timeout" / "transport_error"."""

    def __call__(self, api: str, method: str, endpoint: str, status: str) -> None: ...


def ignore_call(api: str, method: str, endpoint: str, status: str) -> None:
    return None


@dataclass(frozen=True)
class Answer:
    """A 2xx answer, its body read whole (within MAX_RESPONSE_BYTES)."""

    status: int
    body: bytes
    reported_limit: int | None = None  # X-RateLimit-Limit (core.pacing): Stream's on every answer

    def json(self) -> Any:
        return json.loads(self.body)


class _TooLarge(Exception):
    pass


def upstream_request(
    client: httpx.Client,
    api: str,
    method: str,
    url: str,
    *,
    endpoint: str,
    on_call: OnUpstreamCall = ignore_call,
    deadline: float = CALL_DEADLINE_SECONDS,
    **kwargs: Any,
) -> Answer:
    """Send one request, all of it done within `deadline` seconds; return a 2xx answer or raise UpstreamError."""
    ends = time.monotonic() + deadline
    try:
        with until(ends), client.stream(method, url, **kwargs) as response:
            cap = MAX_RESPONSE_BYTES if response.is_success else MAX_ERROR_BODY_BYTES
            try:
                body: bytes | None = read_capped(response, cap, ends)
            except _TooLarge:
                body = None
    except (httpx.TimeoutException, DeadlinePassed) as exc:
        on_call(api, method, endpoint, "timeout")
        raise transport_failure(api, f"timeout ({type(exc).__name__})") from None
    except (httpx.TransportError, zlib.error) as exc:
        on_call(api, method, endpoint, "transport_error")
        raise transport_failure(api, f"transport error ({type(exc).__name__})") from None
    on_call(api, method, endpoint, str(response.status_code))
    if response.is_success:
        if body is None:
            raise transport_failure(api, f"{response.status_code} answer over {MAX_RESPONSE_BYTES} bytes")
        return Answer(response.status_code, body, reported_limit(response.headers))
    message = error_message(body, response.reason_phrase)
    raise classify(api, response.status_code, response.headers, message, time.time())


def read_capped(response: httpx.Response, cap: int, ends: float) -> bytes:
    """The response body, inflated; _TooLarge past `cap` bytes, DeadlinePassed past `ends`.

    Memory stays within about twice `cap` (the buffer as it grows) whatever the server sends."""
    if response.is_stream_consumed:  # built in memory (a test's or the dry run's transport)
        if len(response.content) > cap:
            raise _TooLarge
        return response.content
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    elif encoding in ("", "identity"):
        inflate = None
    else:
        raise zlib.error(f"unrequested content-encoding {encoding[:20]!r}")
    body = bytearray()
    for chunk in response.iter_raw():
        if inflate is None:
            body += chunk
        while inflate is not None and chunk and len(body) <= cap:
            # A read at a time, never more than a read's worth inflated: a bomb stays compressed.
            body += inflate.decompress(chunk, _READ)
            chunk = inflate.unconsumed_tail
        if len(body) > cap:
            raise _TooLarge
        if time.monotonic() > ends:
            raise DeadlinePassed
    return bytes(body)


def error_message(body: bytes | None, reason: str) -> str:
    """The platform's error message, short; both platforms answer JSON with `message`."""
    try:
        parsed = json.loads(body) if body is not None else None
    except (ValueError, RecursionError):
        parsed = None
    message = parsed.get("message") if isinstance(parsed, dict) else None
    return _shortened(str(message), 200) if message else (reason or "error")


def _shortened(text: str, limit: int) -> str:
    """`text` cut to `limit` characters between words: a secret or token the platform quoted
    is kept whole, for the scrubbers to find, or left out, never cut into a fragment."""
    if len(text) <= limit:
        return text
    head = text[: limit + 1]
    cut = max(head.rfind(" "), head.rfind("\t"), head.rfind("\n"))
    return text[:cut].rstrip() + " …" if cut > 0 else "…"
