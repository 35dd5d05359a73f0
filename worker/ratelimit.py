"""One ceiling on Stream channel updates shared by every worker (CONTRACT §4 rule 8)."""

from __future__ import annotations

import redis

from .settings import Rate

# A sliding log of grant times in a sorted set, on the Redis clock so every host agrees.
# Exact: never more than `count` grants in any window of `period` seconds (plus a margin, below).
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local count, period = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < count then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(period * 1000))
  return '0'
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + period - now)
"""


def window_seconds(rate: Rate) -> float:
    """The window grants are counted in: the rate's period plus a margin.

    Stream counts requests as they arrive, and a grant becomes a request a varying few
    milliseconds later (the worker's load, the network), so `count` grants in one period
    could arrive within a little less than one. bench/chaos.py measured 21 updates in
    1.002 s under a 20/s ceiling without a margin; 5% of the period (at most 1 s)
    absorbs that for a cost of under 5% of the throughput.
    """
    return rate.period + min(0.05 * rate.period, 1.0)


class RateLimiter:
    def __init__(self, client: redis.Redis, key: str, rate: Rate):
        self._script = client.register_script(_ACQUIRE)
        self._key, self._rate, self._window = key, rate, window_seconds(rate)

    def acquire(self, token: str) -> float:
        """Take one grant now and return 0, or return the seconds to wait before asking again."""
        wait = self._script(keys=[self._key], args=[self._rate.count, self._window, token])
        return max(float(wait), 0.0)
