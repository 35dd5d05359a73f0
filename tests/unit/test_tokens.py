"""worker/core/tokens.py: the Stream user token checked, the 100ms app token issued.

User tokens are made here as the official server SDK makes them (GetStream/stream-chat-python,
stream_chat/base/client.py `create_token`: HS256 over {"user_id", "exp"?, "iat"?}).
"""

from __future__ import annotations

import base64
import json
import warnings

import jwt
import pytest

from worker.core.tokens import Unauthenticated, call_token_claims, sign_call_token, token_of, verify_user_token

KEY, SECRET, OLD = "stream-key", "stream-secret-long-enough-for-hs256-keys", "old-stream-secret-long-enough-for-hs256"
NOW = 1_800_000_000.0


def user_token(user_id: object = "alice", secret: str = SECRET, **claims: object) -> str:
    payload = {"user_id": user_id, **claims} if user_id is not None else dict(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def verify(token: str | None, *, auth_type: str | None = "jwt", user_id: str | None = "alice", api_key: str | None = KEY) -> str:
    return verify_user_token(token, auth_type, user_id, api_key, KEY, (SECRET, OLD), NOW)


def test_the_request_the_stream_chat_client_sends_proves_its_user() -> None:
    assert verify(user_token()) == "alice"


def test_bearer_and_no_query_user_are_accepted() -> None:
    assert verify(f"Bearer {user_token()}", auth_type=None, user_id=None) == "alice"
    assert token_of("  bearer  abc ") == "abc" and token_of("abc") == "abc" and token_of("Bearer ") is None


def test_any_secret_of_a_rotation_verifies() -> None:
    assert verify(user_token(secret=OLD)) == "alice"


def test_a_current_token_with_times_passes() -> None:
    assert verify(user_token(exp=int(NOW) + 60, iat=int(NOW) - 60, nbf=int(NOW) - 60)) == "alice"


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (user_token(secret="not-this-apps-secret-long-enough-for-hs256"), "signature"),  # forged
        (user_token(exp=int(NOW)), "expired"),  # expires at this very second: no longer valid
        (user_token(exp=int(NOW) - 1), "expired"),
        (user_token(nbf=int(NOW) + 60), "not valid yet"),
        (user_token(iat=int(NOW) + 60), "future"),
        (user_token(exp="tomorrow"), "exp is not a number"),
        (user_token(None, server=True), "no user_id"),  # a server token names no user
        (user_token(""), "no user_id"),
        (user_token(42), "no user_id"),
        (user_token("al ice"), "no user_id"),
        ("not-a-jwt", "not an HS256 JWT"),
        (None, "missing Authorization"),
        ("", "missing Authorization"),
    ],
)
def test_refused_tokens_say_why_and_never_echo_the_token(token: str | None, why: str) -> None:
    with pytest.raises(Unauthenticated, match=why) as refused:
        verify(token)
    assert not token or token not in str(refused.value)


def test_an_unsigned_or_other_algorithm_token_is_refused() -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps({"user_id": "alice"}).encode()).rstrip(b"=").decode()
    with pytest.raises(Unauthenticated):
        verify(f"{header}.{body}.")
    with warnings.catch_warnings(action="ignore"):  # PyJWT finds the key short for HS512
        other_algorithm = jwt.encode({"user_id": "alice"}, SECRET, algorithm="HS512")
    with pytest.raises(Unauthenticated):
        verify(other_algorithm)


def test_the_query_user_must_be_the_token_user() -> None:
    with pytest.raises(Unauthenticated, match="does not match"):
        verify(user_token("mallory"), user_id="alice")


@pytest.mark.parametrize("api_key", [None, "", "someone-elses-key"])
def test_the_api_key_must_be_ours(api_key: str | None) -> None:
    with pytest.raises(Unauthenticated, match="api_key"):
        verify(user_token(), api_key=api_key)


def test_only_jwt_auth_is_accepted() -> None:
    with pytest.raises(Unauthenticated, match="stream-auth-type"):
        verify(user_token(), auth_type="anonymous")


def test_the_100ms_app_token_has_the_documented_claims_and_verifies_under_the_app_secret() -> None:
    # 100mslive/100ms-docs, docs/get-started/v2/get-started/security-and-tokens.mdx
    app_secret = "hms-app-secret-long-enough-for-hs256-keys"
    claims = call_token_claims("hms-access-key", "room-1", "alice", "guest", NOW + 0.7, 3600, "jti-1")
    token = sign_call_token(claims, app_secret)
    decoded = jwt.decode(
        token, app_secret, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    )
    assert decoded == {
        "access_key": "hms-access-key",
        "room_id": "room-1",
        "user_id": "alice",
        "role": "guest",
        "type": "app",
        "version": 2,
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 3600,
        "jti": "jti-1",
    }
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another-secret-long-enough-for-hs256-keys", algorithms=["HS256"])
