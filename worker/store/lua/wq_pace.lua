-- What an answer said of the endpoint (core.pacing `paused`, `reported`). KEYS: pace.
-- ARGV: pause until ('' for none), X-RateLimit-Limit ('' for none), now, seconds a report holds.
local pace = pace_read(KEYS[1])
if ARGV[1] ~= '' and tonumber(ARGV[1]) > pace.p then redis.call('HSET', KEYS[1], 'p', ARGV[1]) end
local limit = tonumber(ARGV[2])
if limit and limit > 0 then
  redis.call('HSET', KEYS[1], 'r', ARGV[2], 'ru', fmt(tonumber(ARGV[3]) + tonumber(ARGV[4])))
end
redis.call('PEXPIRE', KEYS[1], PACE_KEEP_MS)
return 1
