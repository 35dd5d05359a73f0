import hmac

import pytest

from tests.support.tripwire import ComparedByValue, SecretText
from worker.core.signing import AuthenticationError, sign_stream, verify_hms, verify_stream

BODY = b'{"type":"channel.updated"}'


def test_stream_signature_roundtrip():
    verify_stream(BODY, sign_stream(BODY, "s3cret"), "s3cret")
    verify_stream(BODY, sign_stream(BODY, "s3cret").upper(), "s3cret")  # hex case does not matter


@pytest.mark.parametrize("signature", [None, "", "00" * 32, "not-hex"])
def test_stream_signature_rejected(signature):
    with pytest.raises(AuthenticationError):
        verify_stream(BODY, signature, "s3cret")


def test_stream_signature_of_other_body_or_key_rejected():
    with pytest.raises(AuthenticationError):
        verify_stream(BODY + b" ", sign_stream(BODY, "s3cret"), "s3cret")
    with pytest.raises(AuthenticationError):
        verify_stream(BODY, sign_stream(BODY, "other"), "s3cret")


def test_stream_signature_under_any_secret_of_a_rotation_is_accepted():
    verify_stream(BODY, sign_stream(BODY, "new-secret"), ("new-secret", "old-secret"))
    verify_stream(BODY, sign_stream(BODY, "old-secret"), ("new-secret", "old-secret"))
    with pytest.raises(AuthenticationError) as err:
        verify_stream(BODY, sign_stream(BODY, "other"), ("new-secret", "old-secret"))
    assert "secret" not in str(err.value)  # names the header, never a secret


def test_a_bare_string_is_one_secret_and_an_empty_secret_verifies_nothing():
    with pytest.raises(AuthenticationError):
        verify_stream(BODY, sign_stream(BODY, "s"), "s3cret")  # not the secrets "s", "3", "c", ...
    with pytest.raises(AuthenticationError):
        verify_stream(BODY, sign_stream(BODY, ""), ("", "s3cret"))
    with pytest.raises(AuthenticationError):
        verify_hms("o", "old", "X-Callsync-Secret")
    with pytest.raises(AuthenticationError):
        verify_hms("", ("",), "X-Callsync-Secret")


def test_hms_secret_accepts_any_configured_secret_for_rotation():
    verify_hms("new", ("old", "new"), "X-Callsync-Secret")
    verify_hms("old", ("old", "new"), "X-Callsync-Secret")


@pytest.mark.parametrize("value", [None, "", "nope", "old "])
def test_hms_secret_rejected(value):
    with pytest.raises(AuthenticationError) as err:
        verify_hms(value, ("old",), "X-Callsync-Secret")
    assert "old" not in str(err.value)  # the error names the header, never the secret


# --- constant time: a tripwire secret or signature fails the test if compared by value -------
ROTATION = ("first-secret", "second-secret", "third-secret")


def tripwires(*values: str) -> tuple[list[SecretText], list[str]]:
    """The secrets as tripwires sharing one record of their encodings (one per use)."""
    encoded: list[str] = []
    return [SecretText(value, encoded) for value in values], encoded


@pytest.mark.parametrize("signed_with", [0, 2, None], ids=["first", "last", "none"])
def test_a_stream_signature_is_compared_in_constant_time_against_every_secret(signed_with):
    secrets, encoded = tripwires(*ROTATION)
    signature = sign_stream(BODY, ROTATION[signed_with]) if signed_with is not None else "0" * 64
    given = SecretText(f" {signature.upper()} ")
    if signed_with is None:
        with pytest.raises(AuthenticationError):
            verify_stream(BODY, given, secrets)
    else:
        verify_stream(BODY, given, secrets)
    assert encoded == list(ROTATION)  # every secret tried once, also after a match: no early exit
    assert given.encoded == [signature]


@pytest.mark.parametrize("given_secret", [0, 2, None], ids=["first", "last", "none"])
def test_a_100ms_secret_is_compared_in_constant_time_against_every_secret(given_secret):
    secrets, encoded = tripwires(*ROTATION)
    given = SecretText(ROTATION[given_secret] if given_secret is not None else "guess")
    if given_secret is None:
        with pytest.raises(AuthenticationError):
            verify_hms(given, secrets, "X-Callsync-Secret")
    else:
        verify_hms(given, secrets, "X-Callsync-Secret")
    assert encoded == list(ROTATION)
    assert given.encoded == [str(given)]


def test_the_tripwire_catches_a_comparison_by_value():
    signature = SecretText(sign_stream(BODY, "s3cret"))
    with pytest.raises(ComparedByValue):
        assert signature.strip().lower() == sign_stream(BODY, "s3cret")
    with pytest.raises(ComparedByValue):
        assert signature.encode() in (sign_stream(BODY, "s3cret").encode(),)
    with pytest.raises(ComparedByValue):
        assert SecretText("s3cret").startswith("s3")
    assert hmac.compare_digest(signature.encode(), sign_stream(BODY, "s3cret").encode())
