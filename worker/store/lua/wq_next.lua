-- The turn holder's next step. KEYS: turn, queue, pace, not-before, processing, attempts.
-- ARGV: token, lease ms, now, how many of the oldest keys to look at.
-- Returns {'lost'} (the turn is not ours), {'empty'} (turn released: nothing queued), {'wait',
-- seconds} (the pace, a pause, or every key looked at waiting out a backoff or a busy lock), or
-- {'key', key, score, attempts}: the oldest key that may be written, moved to `processing`.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {'lost'} end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1])
  return {'empty'}
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local now = tonumber(ARGV[3])
local w = pace_wait(pace_read(KEYS[3]), now)
if w > 0 then return {'wait', fmt(w)} end
local head = redis.call('ZRANGE', KEYS[2], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
local soonest = nil
for i = 1, #head, 2 do
  local key = head[i]
  local nb = tonumber(redis.call('HGET', KEYS[4], key) or '0')
  if nb <= now then
    redis.call('ZREM', KEYS[2], key)
    redis.call('HDEL', KEYS[4], key)
    redis.call('HSET', KEYS[5], key, head[i + 1])
    return {'key', key, head[i + 1], redis.call('HGET', KEYS[6], key) or '0'}
  end
  if not soonest or nb < soonest then soonest = nb end
end
return {'wait', fmt(soonest - now)}
