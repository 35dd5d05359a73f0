-- The sweep's second claim: sessions marked "ending" at or before the cutoff whose end has not
-- completed (no close recorded: the end task was lost, failed for good, or 100ms's close never
-- came). Each still ending is stamped `now` in the index, so it is sent to be ended again once
-- per bound, and returned; entries whose call is no longer ending (closed, replaced, expired)
-- leave the index. Fields: worker/store/keys.py (CALL_*).
-- Returns {entries looked at, then call id, session id pairs}.
-- KEYS: the index of ending sessions. ARGV: cutoff, limit, now, call key prefix.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {#due}
for _, member in ipairs(due) do
  local st, sid, name = unpack(redis.call('HMGET', ARGV[4] .. member, 'st', 's', 'n'))
  if st == 'ending' and sid then
    redis.call('ZADD', KEYS[1], ARGV[3], member)
    claimed[#claimed + 1] = name or member
    claimed[#claimed + 1] = sid
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return claimed
