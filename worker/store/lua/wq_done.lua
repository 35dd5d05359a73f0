-- A key the drainer took is done with. KEYS: queue, processing, not-before, attempts.
-- ARGV: key, again (1: back in line in its place, not before ARGV[3], after ARGV[4] attempts).
local score = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] == '1' and score then
  local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if not current or tonumber(current) > tonumber(score) then redis.call('ZADD', KEYS[1], score, ARGV[1]) end
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
else
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return 1
