import pytest

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
