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


def verify_stream(body: bytes, signature: str | None, api_secrets: Iterable[str]) -> None:
    """Raise AuthenticationError unless `signature` is Stream's signature of `body` under one
    of `api_secrets` (more than one while a key is rotated).

    Stream's own Python SDK compares with `==`; we compare in constant time, against every
    secret (no early exit), so timing says nothing about which matched.
    """
    if not signature:
        raise AuthenticationError("missing X-Signature")
    given = signature.strip().lower().encode()
    matched = False
    for secret in _each(api_secrets):
        matched |= hmac.compare_digest(sign_stream(body, secret).encode(), given)
    if not matched:
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
    for secret in _each(secrets):
        matched |= hmac.compare_digest(given, secret.encode())
    if not matched:
        raise AuthenticationError(f"bad {header_name}")


def _each(secrets: Iterable[str]) -> tuple[str, ...]:
    """The non-empty secrets: a bare string is one secret (iterating it would make each of its
    characters one), and an empty secret would let anyone sign."""
    return tuple(secret for secret in ((secrets,) if isinstance(secrets, str) else secrets) if secret)
