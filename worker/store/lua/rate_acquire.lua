-- One grant of the shared update ceiling (worker/store/ratelimit.py), on the Redis clock.
-- Returns '0' (granted) or the seconds to wait. KEYS: the log. ARGV: count, period, token, hold.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local count, period, hold = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
if redis.call('ZCARD', KEYS[1]) < count then
  redis.call('ZADD', KEYS[1], now + hold, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil((period + hold) * 1000))
  return '0'
end
local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
if oldest > now then return '0.05' end -- the window is full of requests in flight: ask again soon
return tostring(oldest + period - now)
