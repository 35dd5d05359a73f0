"""The one place an httpx answer becomes a value or a typed UpstreamError."""

from __future__ import annotations

import time
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from ..core.upstream import classify, transport_failure

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def segment(value: str) -> str:
    """`value` as one URL path segment: an id from a webhook cannot reach another endpoint
    through `/`, `?`, `#` or a `..` segment (which httpx would resolve against the base URL)."""
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if not quoted.strip(".") else quoted


class Observe(Protocol):
    """Told of every upstream call: `endpoint` is a template such as "/channels/{type}/{id}",
    never the URL (it carries ids and, for Stream, the api_key); `status` is the HTTP status
    or "timeout" / "transport_error"."""

    def __call__(self, api: str, method: str, endpoint: str, status: str) -> None: ...


def unobserved(api: str, method: str, endpoint: str, status: str) -> None:
    return None


def call(
    client: httpx.Client, api: str, method: str, url: str, *, endpoint: str, observe: Observe = unobserved, **kwargs: Any
) -> httpx.Response:
    """Send one request; return a 2xx response or raise UpstreamError."""
    try:
        response = client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        observe(api, method, endpoint, "timeout")
        raise transport_failure(api, f"timeout ({type(exc).__name__})") from None
    except httpx.TransportError as exc:
        observe(api, method, endpoint, "transport_error")
        raise transport_failure(api, f"transport error ({type(exc).__name__})") from None
    observe(api, method, endpoint, str(response.status_code))
    if response.is_success:
        return response
    raise classify(api, response.status_code, response.headers, error_message(response), time.time())


def error_message(response: httpx.Response) -> str:
    """The platform's error message, short; both platforms answer JSON with `message`."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or "error"
    message = body.get("message") if isinstance(body, dict) else None
    return str(message)[:200] if message else (response.reason_phrase or "error")
