-- Record one peer report of a session (core.peers.merge: earliest join, latest leave, any user id).
-- KEYS[1]: the session's peers hash (keys.peers_key)
-- ARGV: peer id, user id ("" unknown), joined ms ("" unknown), left ms ("" none), bound, ttl seconds, overflow field
-- Returns 1 when the record changed, 0 when the report told nothing new.
local key, peer, user, joined, left = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local old = redis.call('HGET', key, peer)
local value
if not old then
  local kept = redis.call('HLEN', key) - redis.call('HEXISTS', key, ARGV[7])
  if kept >= tonumber(ARGV[5]) then
    if left == '' then redis.call('HINCRBY', key, ARGV[7], 1) else return 0 end
    redis.call('EXPIRE', key, ARGV[6])
    return 1
  end
  value = joined .. ',' .. left .. ',' .. user
else
  local j, l, u = string.match(old, '^([^,]*),([^,]*),(.*)$')
  if joined ~= '' and (j == '' or tonumber(joined) < tonumber(j)) then j = joined end
  if left ~= '' and (l == '' or tonumber(left) > tonumber(l)) then l = left end
  if u == '' then u = user end
  value = j .. ',' .. l .. ',' .. u
  if value == old then return 0 end
end
redis.call('HSET', key, peer, value)
redis.call('EXPIRE', key, ARGV[6])
return 1
