"""REDIS_URL's Sentinel form (worker/sentinel_url.py): parsed without I/O, every mistake one line."""

from __future__ import annotations

import pytest

from worker.sentinel_url import SentinelAddress, is_sentinel_url, parse_sentinel_url
from worker.settings import ConfigError, load_settings, redacted_url


def test_the_sentinels_the_service_and_the_database():
    address = parse_sentinel_url("redis+sentinel://h1:26379,h2:26380,10.0.0.3/mymaster/2")
    sentinels = (("h1", 26379), ("h2", 26380), ("10.0.0.3", 26379))
    assert address == SentinelAddress(sentinels=sentinels, service_name="mymaster", db=2)
    assert parse_sentinel_url("redis+sentinel://[::1]:5000/cache").sentinels == (("::1", 5000),)
    assert parse_sentinel_url("redis+sentinel://h1/mymaster/").db == 0
    assert parse_sentinel_url("redis+sentinel://h1,h1:26379/m").sentinels == (("h1", 26379),)  # named twice, asked once


def test_the_sentinels_and_the_primary_have_their_own_credentials():
    url = "redis+sentinel://watcher:s%40ntinel-pass@h1,h2/mymaster/0?password=prim%26ary-pass&username=app"
    address = parse_sentinel_url(url)
    assert (address.sentinel_username, address.sentinel_password) == ("watcher", "s@ntinel-pass")
    assert (address.username, address.password) == ("app", "prim&ary-pass")
    assert address.sentinel_kwargs() == {"username": "watcher", "password": "s@ntinel-pass"}
    assert address.primary_kwargs() == {"db": 0, "username": "app", "password": "prim&ary-pass"}
    bare = parse_sentinel_url("redis+sentinel://h1/mymaster")
    assert bare.sentinel_kwargs() == {} and bare.primary_kwargs() == {"db": 0} and bare.passwords == ()
    only_primary = parse_sentinel_url("redis+sentinel://h1/mymaster?password=p")
    assert only_primary.sentinel_password is None and only_primary.passwords == ("p",)


def test_rediss_sentinel_is_tls_to_the_sentinels_and_the_primary_verified_unless_told():
    address = parse_sentinel_url("rediss+sentinel://:sp@h1/m?ssl_ca_certs=/ca.pem&password=pp")
    assert address.tls and address.tls_options == (("ssl_ca_certs", "/ca.pem"),)
    tls = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": "/ca.pem"}
    assert address.sentinel_kwargs() == {**tls, "password": "sp"}
    assert address.primary_kwargs() == {"db": 0, **tls, "password": "pp"}
    assert parse_sentinel_url("rediss+sentinel://h1/m?ssl_cert_reqs=none").primary_kwargs()["ssl_cert_reqs"] == "none"
    assert not parse_sentinel_url("redis+sentinel://h1/m").tls


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel:///mymaster", "must name its Sentinels"),
        ("redis+sentinel://h1:26379;h2:26379/mymaster", "must name its Sentinels"),
        ("redis+sentinel://h1:99999/mymaster", "port out of range"),
        ("redis+sentinel://h1:26379", "must name the primary's service"),
        ("redis+sentinel://h1/my master", "must name the primary's service"),
        ("redis+sentinel://h1/mymaster/zero", "database number"),
        ("redis+sentinel://h1/mymaster?pasword=x", "unknown query key 'pasword'"),
        ("redis+sentinel://h1/mymaster?ssl_cert_reqs=none", "TLS options need rediss+sentinel://"),
        ("rediss+sentinel://h1/mymaster?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    ],
)
def test_a_malformed_sentinel_url_is_one_line_naming_redis_url_and_no_password(url: str, says: str):
    url_with_secrets = url.replace("://", "://:sentinel-secret-1@") + ("&" if "?" in url else "?") + "password=primary-secret-2"
    for candidate in (url, url_with_secrets):
        with pytest.raises(ConfigError) as raised:
            load_settings({"REDIS_URL": candidate})
        [problem] = raised.value.problems
        assert problem.startswith("REDIS_URL ") and says in problem, problem
        assert "redis+sentinel://[:sentinel-password@]host:26379" in problem  # the form, to copy
        assert "secret" not in problem


def test_the_forms_are_told_apart_by_scheme():
    assert is_sentinel_url("redis+sentinel://h/m") and is_sentinel_url("rediss+sentinel://h/m")
    assert not is_sentinel_url("redis://h:6379/0") and not is_sentinel_url(None) and not is_sentinel_url("")
    assert load_settings({"REDIS_URL": "redis://h:6379/0"}).sentinel is None
    settings = load_settings({"REDIS_URL": "redis+sentinel://h1,h2/mymaster/3"})
    assert settings.sentinel is not None and settings.sentinel.db == 3
    with pytest.raises(ConfigError, match="REDIS_URL must start with redis://, rediss://, unix://, redis\\+sentinel://"):
        load_settings({"REDIS_URL": "sentinel://h1:26379"})


def test_redacted_url_hides_both_passwords():
    url = "redis+sentinel://watcher:sentinel-pw@h1:26379,h2:26379/mymaster/0?username=app&password=primary-pw&x=1"
    shown = redacted_url(url)
    assert shown == "redis+sentinel://watcher:***@h1:26379,h2:26379/mymaster/0?username=app&password=***&x=1"
    assert redacted_url("redis+sentinel://h1/m?password=primary-pw") == "redis+sentinel://h1/m?password=***"
    assert redacted_url("redis://h:1/0?password=pw") == "redis://h:1/0?password=***"  # redis-py reads this too
    assert "pw" not in repr(load_settings({"REDIS_URL": url.removesuffix("&x=1")}))
