"""The one place callsync's own Redis clients are made, for either form of REDIS_URL.

One server (`redis://`, `rediss://`, `unix://`): `redis.Redis.from_url`, as ever. Sentinels
(`redis+sentinel://`, worker/sentinel_url.py): a client of redis-py's `Sentinel.master_for`,
whose pool asks the Sentinels for the primary's address on every new connection and drops its
connections to a primary that went away or was demoted (redis/sentinel.py,
`SentinelConnectionPool`), so each role follows a failover without a restart. Commands that
failed on the old primary are retried by redis-py's default `Retry` (3 tries, backoff), and
what still fails is the caller's RedisError as with one server (a 503, a task's retry).
"""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import Sentinel

from worker.sentinel_url import SentinelAddress, is_sentinel_url, parse_sentinel_url
from worker.settings import Settings

# How long asking a Sentinel may take: one that is down or partitioned is skipped for the next
# (redis-py's `discover_master` tries each in turn), so this bounds a failover's added wait.
SENTINEL_TIMEOUT_SECONDS = 1.0


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A client of the Redis `url` names; `options` are redis-py's connection keywords
    (timeouts, `health_check_interval`, `decode_responses`), applied to the primary."""
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    return primary_client(parse_sentinel_url(url), **options)


def settings_client(settings: Settings, **options: Any) -> redis.Redis:
    """`redis_client` for REDIS_URL as the settings read it."""
    return redis_client(settings.redis_url or "", **options)


def sentinels(address: SentinelAddress) -> Sentinel:
    """redis-py's view of the Sentinels `address` names, with their credentials and TLS."""
    timeouts = {"socket_timeout": SENTINEL_TIMEOUT_SECONDS, "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS}
    return Sentinel(list(address.sentinels), sentinel_kwargs={**timeouts, **address.sentinel_kwargs()})


def primary_client(address: SentinelAddress, **options: Any) -> redis.Redis:
    """A client of the primary the Sentinels name now, and of the next one after a failover."""
    client: redis.Redis = sentinels(address).master_for(address.service_name, **address.primary_kwargs(), **options)
    return client
