"""kombu's Redis transport with one client per connection pool (worker/broker.py), on real Redis."""

from __future__ import annotations

import pytest

from tests.conftest import REAL_URL, real_redis_or_skip
from worker import broker
from worker.celery_app import create_celery
from worker.settings import load_settings


def test_plain_redis_urls_get_the_transport_and_tls_urls_keep_kombus():
    assert broker.transport_for("redis://127.0.0.1:6379/0") == "worker.broker:Transport"
    assert broker.transport_for("rediss://example:6380/0") is None  # kombu sets up TLS from the scheme
    assert broker.transport_for(None) is None


@pytest.mark.redis
def test_a_channel_hands_out_one_client_until_its_pool_changes():
    real_redis_or_skip()
    app = create_celery(load_settings({"REDIS_URL": REAL_URL}))
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
    real_redis_or_skip()
    app = create_celery(load_settings({"REDIS_URL": REAL_URL}))
    with app.connection_for_write() as connection:
        queue = connection.SimpleQueue("cs-test-broker")
        queue.put({"n": 1})
        message = queue.get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        queue.close()
