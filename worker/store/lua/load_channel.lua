-- What a reconcile reads, in one round trip: the channel's record, the calls bound to it
-- (with the default call id of core.binding added) and each call's record; first taking the
-- channel's lock when a token is given (false: someone else holds it). Call ids key their
-- records exactly, as keys.call_key does.
-- KEYS: lock, bindings, channel. ARGV: token or '', lock ms, call key prefix, default call id.
if ARGV[1] ~= '' and not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return false
  end
  -- Held by our token: an earlier run of the same task left it (its worker was killed, or
  -- Redis went away before the unlock). Take it back for a full lock time.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
local listed = false
for _, id in ipairs(ids) do
  if id == ARGV[4] then listed = true end
end
if not listed then ids[#ids + 1] = ARGV[4] end
local out = {redis.call('HGETALL', KEYS[3]), ids}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGETALL', ARGV[3] .. id)
end
return out
