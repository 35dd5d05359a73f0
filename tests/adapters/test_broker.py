"""kombu's Redis transport with one client per connection pool (worker/jobs/broker.py), on real Redis."""

from __future__ import annotations

import json
import ssl

import pytest

from tests.support.servers import real_redis, real_url
from worker.jobs import broker
from worker.jobs.app import beat_settings, create_celery
from worker.settings import load_settings


def test_redis_and_tls_urls_get_the_transport_with_tls_from_the_url():
    assert broker.transport_for("redis://127.0.0.1:6379/0") == "worker.jobs.broker:Transport"
    assert broker.transport_for("rediss://example:6380/0") == "worker.jobs.broker:Transport"
    assert broker.transport_for("unix:///tmp/redis.sock") is None
    assert broker.transport_for(None) is None
    assert broker.ssl_options("redis://127.0.0.1:6379/0") is None
    # Verified unless the URL says otherwise, as redis-py does for the state store.
    assert broker.ssl_options("rediss://example:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert broker.ssl_options("rediss://:pw@example:6380/0?ssl_cert_reqs=none") == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert broker.ssl_options("rediss://example/0?ssl_cert_reqs=CERT_OPTIONAL&ssl_ca_certs=/ca.pem") == {
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
        "ssl_ca_certs": "/ca.pem",
    }
    app = create_celery(load_settings({"REDIS_URL": "rediss://:pw@example:6380/0?ssl_cert_reqs=none"}))
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_NONE}


def test_no_redis_password_in_what_celery_inspect_conf_shows():
    """`celery inspect conf` (and Flower's config tab) answer with `app.conf.table()`
    (celery/worker/control.py, `conf`), which masks the broker URL's password only."""
    url = "rediss://:hunter2-password@redis.example:6380/0?ssl_cert_reqs=none"
    app = create_celery(load_settings({"REDIS_URL": url}))
    for with_defaults in (False, True):
        shown = json.dumps(app.conf.table(with_defaults=with_defaults), default=repr)
        assert "hunter2" not in shown
    beat_settings(app, load_settings({"REDIS_URL": url}))  # what the beat role alone adds
    assert app.conf.redbeat_redis_url == url


@pytest.mark.redis
def test_a_channel_hands_out_one_client_until_its_pool_changes():
    real_redis()
    app = create_celery(load_settings({"REDIS_URL": real_url()}))
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, broker.Channel)
        first = channel._create_client()
        assert channel._create_client() is first and first.ping()
        with channel.conn_or_acquire() as client:  # what kombu's acknowledgements use
            assert client is first
        channel._pool = None  # kombu drops its pools when the connection is lost
        fresh = channel._create_client()
        assert fresh is not first and fresh.connection_pool is channel.pool and fresh.ping()
        assert channel._create_client(asynchronous=True) is not fresh  # BRPOP keeps its own


@pytest.mark.redis
def test_messages_go_through_the_transport():
    real_redis()
    app = create_celery(load_settings({"REDIS_URL": real_url()}))
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue("cs-test-broker")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()


@pytest.mark.redis
def test_a_channel_closed_again_after_its_connection_raises_a_connection_error_not_an_attribute_error():
    """What Celery's consumer does after the broker's connection is lost (the failover test found
    it: the worker died with AttributeError 'NoneType' object has no attribute 'hostname'): kombu
    closed the connection (its transport's `client` None, the channel's pools dropped) and then
    closes the channel again, which restores the unacknowledged messages through a new pool."""
    import redis
    from kombu.common import ignore_errors

    real_redis()
    app = create_celery(load_settings({"REDIS_URL": real_url()}))
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue("cs-test-broker-closed")
        queue.put({"n": 1})
        message = queue.get(timeout=5)  # delivered, not acknowledged: the close restores it
        channel = message.channel
        assert channel.qos._delivered
        channel._disconnect_pools()  # as kombu's Channel.close does, before its restore
        channel.connection.client = None  # as kombu's Connection._close does to its transport
        with pytest.raises(redis.ConnectionError):
            channel._create_client()
        with pytest.raises(redis.ConnectionError):
            channel._create_client(asynchronous=True)
        assert redis.ConnectionError in connection.connection_errors  # so the closers ignore it:
        ignore_errors(connection, channel.close)  # no AttributeError out of the consumer's close
        with pytest.raises(redis.ConnectionError):
            message.reject(requeue=True)  # the hub's reject on its way down: Celery logs it
        tag = message.delivery_tag
    with redis.Redis.from_url(real_url()) as store:  # kept for the visibility timeout's restore
        assert store.hexists("unacked", tag)


SENTINEL_URL = "redis+sentinel://:hunter2-sentinels@s1:26379,[::1]:26380/mymaster/3?password=hunter2%2Fprimary&username=app"


def test_the_sentinel_form_gets_kombus_sentinel_transport_with_both_passwords_in_their_place():
    assert broker.transport_for(SENTINEL_URL) == "worker.jobs.broker:SentinelTransport"
    # kombu reads the primary's credentials and the database from the first URL of its list.
    assert broker.broker_url(SENTINEL_URL) == "sentinel://app:hunter2%2Fprimary@s1:26379/3;sentinel://[::1]:26380/3"
    assert broker.broker_url("redis://h:6379/0") == "redis://h:6379/0"
    settings = load_settings({"REDIS_URL": SENTINEL_URL})
    options = create_celery(settings).conf.broker_transport_options
    assert options["master_name"] == "mymaster"
    assert options["sentinel_kwargs"] == {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "password": "hunter2-sentinels"}
    assert options["visibility_timeout"] == settings.visibility_timeout_seconds  # the redelivery options stay
    assert broker.ssl_options(SENTINEL_URL) is None
    tls = "rediss+sentinel://s1/mymaster?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem"
    assert broker.ssl_options(tls) == {"ssl_cert_reqs": ssl.CERT_NONE, "ssl_ca_certs": "/ca.pem"}
    address = load_settings({"REDIS_URL": tls}).sentinel
    assert address is not None and broker.sentinel_transport_options(address)["sentinel_kwargs"]["ssl"] is True


def test_no_sentinel_password_in_what_celery_inspect_conf_shows():
    app = create_celery(load_settings({"REDIS_URL": SENTINEL_URL}))
    for with_defaults in (False, True):
        shown = json.dumps(app.conf.table(with_defaults=with_defaults), default=repr)
        assert "hunter2" not in shown


@pytest.mark.redis
def test_on_sentinels_the_broker_the_store_and_redbeat_reach_the_primary(tmp_path):
    from kombu.utils.url import maybe_sanitize_url
    from redbeat.schedulers import get_redis

    from tests.support.sentinels import PRIMARY_PASSWORD, SENTINEL_PASSWORD, sentinel_group
    from worker.connect import settings_client

    with sentinel_group(tmp_path) as group:
        settings = load_settings({"REDIS_URL": group.url})
        app = create_celery(settings)
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            assert isinstance(channel, broker.SentinelChannel)
            first = channel._create_client()
            assert channel._create_client() is first and first.ping()
            queue = connection.SimpleQueue("cs-test-broker")
            queue.put({"n": 1})
            message = queue.get(timeout=5)
            assert message.payload == {"n": 1}
            message.ack()
            queue.close()
        store = settings_client(settings)
        assert store.connection_pool.get_master_address() == ("127.0.0.1", group.primary_port)
        store.set("cs-test-key", "v")
        assert group.server(group.primary_port).get("cs-test-key") == "v"
        beat_settings(app, settings)
        assert get_redis(app).get("cs-test-key") == "v"  # RedBeat's client: str replies, as its own
        shown = maybe_sanitize_url(app.conf.redbeat_redis_url)  # what beat's banner shows
        assert PRIMARY_PASSWORD not in shown and SENTINEL_PASSWORD not in shown
