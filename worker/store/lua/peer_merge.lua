-- record_peer(key, peer, user, joined, left, bound, ttl, overflow): record one peer report of a
-- session (core.peers.merge: earliest join, latest leave, any user id) in its peers hash
-- (keys.peers_key); user "" unknown, joined "" unknown, left "" none (milliseconds); at most
-- `bound` peers kept, more counted in the `overflow` field. Returns 1 when the record changed.
-- A library: prepended to the programs that use it (scripts.Script.named).
local function record_peer(key, peer, user, joined, left, bound, ttl, overflow)
  local old = redis.call('HGET', key, peer)
  local value
  if not old then
    local kept = redis.call('HLEN', key) - redis.call('HEXISTS', key, overflow)
    if kept >= tonumber(bound) then
      if left == '' then redis.call('HINCRBY', key, overflow, 1) else return 0 end
      redis.call('EXPIRE', key, ttl)
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
  redis.call('EXPIRE', key, ttl)
  return 1
end
