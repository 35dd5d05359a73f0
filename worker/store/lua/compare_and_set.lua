-- Compare-and-set of a record (a hash): write it only if it still holds exactly the fields
-- read, together with the commands that go with the write (index moves, bindings). The store's
-- one way to read-modify-write (docs/design.md): read, let the core decide, write with this.
-- Returns {1, each command's reply} when done, {0} when the hash changed meanwhile (the caller
-- reads again and decides anew). Keys in the commands are built by the caller: this needs one
-- Redis, not a cluster.
-- KEYS: the hash. ARGV: n, the n field/value pairs read, m (-1: leave the hash as it is), the
-- m field/value pairs to hold instead, the TTL (0: leave it, -1: none), then the commands,
-- each as its argument count followed by its arguments.
local n = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[1]) ~= n then return {0} end
for i = 2, 2 * n, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return {0} end
end
local at = 2 * n + 2
local m = tonumber(ARGV[at])
if m >= 0 then
  local kept = {}
  for i = at + 1, at + 2 * m, 2 do kept[ARGV[i]] = true end
  for i = 2, 2 * n, 2 do
    if not kept[ARGV[i]] then redis.call('HDEL', KEYS[1], ARGV[i]) end
  end
  if m > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, at + 1, at + 2 * m)) end
  at = at + 2 * m
end
local ttl = tonumber(ARGV[at + 1])
if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) elseif ttl == -1 then redis.call('PERSIST', KEYS[1]) end
local out, i = {1}, at + 2
while i <= #ARGV do
  local argc = tonumber(ARGV[i])
  out[#out + 1] = redis.call(unpack(ARGV, i + 1, i + argc))
  i = i + argc + 1
end
return out
