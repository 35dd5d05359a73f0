-- The channel that created a call owns it: the first claim wins, a claim by the owner
-- refreshes it. KEYS: owner key. ARGV: cid, TTL. Returns the owner.
local owner = redis.call('GET', KEYS[1])
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
if owner == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return owner
