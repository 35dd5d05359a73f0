"""The calls API's tokens: a Stream user token checked, a 100ms app token issued (no I/O).

Wire facts: a Stream user token is an HS256 JWT under the app's API secret with claim
`user_id` (GetStream/stream-chat-python, stream_chat/base/client.py `create_token`); the
stream-chat JS client sends it bare in `Authorization` with `stream-auth-type: jwt`. A 100ms
app token carries `access_key, room_id, user_id, role, type: "app", version: 2, iat, nbf,
exp, jti`, HS256 under the app secret (100mslive/100ms-docs,
docs/get-started/v2/get-started/security-and-tokens.mdx).
"""

from __future__ import annotations

import hmac
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
import jwt.warnings

# The platforms choose their secrets' length; a warning per token helps nobody.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

CLOCK_SKEW = 10  # seconds an `iat`/`nbf` may lie ahead of our clock (another host's clock)
# Stream user ids are short printable strings; whitespace would split the cache keys built from them.
USER_ID_RE = re.compile(r"[^\s\x00-\x1f]{1,255}")
_ONLY_SIGNATURE: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False, "verify_iss": False}


class Unauthenticated(Exception):
    """The request does not prove who its user is (HTTP 401); the message never holds the token."""


def token_of(authorization: str | None) -> str | None:
    """The JWT in an `Authorization` value: bare (as stream-chat sends it) or `Bearer <jwt>`."""
    scheme, _, rest = (authorization or "").strip().partition(" ")
    value = rest.strip() if scheme.lower() == "bearer" else scheme if not rest else f"{scheme} {rest}"
    return value or None


@dataclass(frozen=True)
class UserToken:
    """A verified Stream user token: whom it proves, and its claims (for core.access: `iat`)."""

    user_id: str
    claims: Mapping[str, Any] = field(repr=False)


def verify_user_token(
    authorization: str | None,
    auth_type: str | None,
    query_user_id: str | None,
    query_api_key: str | None,
    api_key: str,
    secrets: Iterable[str],
    now: float,
) -> str:
    """The Stream user id a request proves, or Unauthenticated (as `verified_user`)."""
    return verified_user(authorization, auth_type, query_user_id, query_api_key, api_key, secrets, now).user_id


def verified_user(
    authorization: str | None,
    auth_type: str | None,
    query_user_id: str | None,
    query_api_key: str | None,
    api_key: str,
    secrets: Iterable[str],
    now: float,
) -> UserToken:
    """The Stream user a request proves, with its token's claims, or Unauthenticated.

    `api_key` must be this app's; the token must verify (HS256) under one of `secrets`, be
    current (`exp`, `nbf`, `iat` against `now`) and name a `user_id`, the query's if it has one.
    Whether Stream has since revoked it is core.access's question.
    """
    if not query_api_key or not api_key or not hmac.compare_digest(query_api_key.encode(), api_key.encode()):
        raise Unauthenticated("api_key is missing or not this app's")
    if auth_type is not None and auth_type.strip().lower() != "jwt":
        raise Unauthenticated("stream-auth-type must be jwt")
    token = token_of(authorization)
    if token is None:
        raise Unauthenticated("missing Authorization: the user's Stream token")
    claims = _verified_claims(token, secrets)
    _check_times(claims, now)
    user_id = claims.get("user_id")
    if not isinstance(user_id, str) or not USER_ID_RE.fullmatch(user_id):
        raise Unauthenticated("the token names no user_id")
    if query_user_id and query_user_id != user_id:
        raise Unauthenticated("user_id does not match the token")
    return UserToken(user_id, claims)


def _verified_claims(token: str, secrets: Iterable[str]) -> dict[str, Any]:
    for secret in secrets:
        try:
            claims = jwt.decode(token, secret, algorithms=["HS256"], options=_ONLY_SIGNATURE)
        except jwt.InvalidSignatureError:
            continue  # maybe the next secret of a rotation
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not an HS256 JWT") from None
        if isinstance(claims, dict):
            return claims
    raise Unauthenticated("the token's signature does not verify")


def _check_times(claims: dict[str, Any], now: float) -> None:
    for name in ("exp", "nbf", "iat"):
        if name in claims and (not isinstance(claims[name], int | float) or isinstance(claims[name], bool)):
            raise Unauthenticated(f"the token's {name} is not a number")
    if "exp" in claims and now >= claims["exp"]:
        raise Unauthenticated("the token has expired")
    if "nbf" in claims and now + CLOCK_SKEW < claims["nbf"]:
        raise Unauthenticated("the token is not valid yet")
    if "iat" in claims and now + CLOCK_SKEW < claims["iat"]:
        raise Unauthenticated("the token was issued in the future")


def call_token_claims(access_key: str, room_id: str, user_id: str, role: str, now: float, ttl: int, jti: str) -> dict[str, Any]:
    """The claims of a 100ms app token letting `user_id` join `room_id` as `role` for `ttl` seconds."""
    issued = int(now)
    return {
        "access_key": access_key,
        "room_id": room_id,
        "user_id": user_id,
        "role": role,
        "type": "app",
        "version": 2,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": jti,
    }


def sign_call_token(claims: dict[str, Any], app_secret: str) -> str:
    """The 100ms app token for `claims`: HS256 under the app secret."""
    return jwt.encode(claims, app_secret, algorithm="HS256")
