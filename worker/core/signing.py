"""Webhook authentication for both platforms, over raw bytes, in constant time."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable


class AuthenticationError(Exception):
    """The delivery did not prove it came from the platform (HTTP 401)."""


def sign_stream(body: bytes, api_secret: str) -> str:
    """Stream's `X-Signature`: lower-case hex HMAC-SHA256 of the (uncompressed) body."""
    return hmac.new(api_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_stream(body: bytes, signature: str | None, api_secret: str) -> None:
    """Raise AuthenticationError unless `signature` is Stream's signature of `body`.

    Stream's own Python SDK compares with `==`; we compare in constant time.
    """
    if not signature:
        raise AuthenticationError("missing X-Signature")
    expected = sign_stream(body, api_secret)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise AuthenticationError("bad X-Signature")


def verify_hms(header_value: str | None, secrets: Iterable[str], header_name: str) -> None:
    """Raise AuthenticationError unless the custom header carries one of `secrets`.

    100ms webhooks are not signed: the dashboard sends a fixed header value. Every
    secret is compared (no early exit), so timing says nothing about which matched.
    """
    if not header_value:
        raise AuthenticationError(f"missing {header_name}")
    given = header_value.encode()
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(given, secret.encode())
    if not matched:
        raise AuthenticationError(f"bad {header_name}")
