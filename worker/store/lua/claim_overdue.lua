-- The sweep's claim, a page at a time in one atomic step: every open session that started
-- at or before the cutoff moves to "ending" (core.sessions.advance's forward-only move, which
-- only ever takes "open" to "ending"; tests/store/test_store_lua.py holds the two together) and
-- leaves the index; emptied buckets go too. Returns {call id, session id} pairs this caller
-- moved, so concurrent sweeps never both end a room. Fields: worker/store/keys.py (CALL_*).
-- KEYS: the bucket index, the index of ending sessions (each moved session joins it at `now`).
-- ARGV: cutoff, limit, now, closed TTL, call key prefix, bucket key prefix.
local cutoff, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local moved = {}
for _, bucket in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  local bkey = ARGV[6] .. bucket
  for _, member in ipairs(redis.call('SMEMBERS', bkey)) do
    if #moved >= 2 * limit then return moved end
    local key = ARGV[5] .. member
    local st, t0, sid = unpack(redis.call('HMGET', key, 'st', 't0', 's'))
    if st ~= 'open' or not t0 then
      redis.call('SREM', bkey, member)
    elseif tonumber(t0) <= cutoff * 1000 then
      redis.call('HSET', key, 'st', 'ending', 't1', ARGV[3])
      redis.call('EXPIRE', key, tonumber(ARGV[4]))
      redis.call('SREM', bkey, member)
      redis.call('ZADD', KEYS[2], ARGV[3], member)
      moved[#moved + 1] = member
      moved[#moved + 1] = sid
    end
  end
  if redis.call('EXISTS', bkey) == 0 then redis.call('ZREM', KEYS[1], bucket) end
end
return moved
