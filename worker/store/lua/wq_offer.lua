-- Offer a key that needs a write (worker/store/writequeue.py `offer`). KEYS: queue, pace, turn,
-- scheduled. ARGV: key, score (first wrong), count, period, now, direct (1: may write now),
-- scheduled flag ms. Returns {1, 0}: write now (slot taken, the queue was empty); {0, publish}:
-- queued (once: ZADD NX keeps the first score); publish 1: no turn is live and no drain is
-- scheduled, so the caller publishes one (the flag is set).
local now = tonumber(ARGV[5])
if ARGV[6] == '1' and redis.call('ZCARD', KEYS[1]) == 0 then
  if pace_admit(KEYS[2], pace_read(KEYS[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), now) == 0 then return {1, 0} end
end
redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[7]) then return {0, 1} end
return {0, 0}
