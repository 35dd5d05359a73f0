-- Bind a call to a channel only if the channel owns it (core.binding.may_bind): the owner its
-- reference form names (ARGV[6]), else the recorded first binder, recorded here when there is
-- none. Returns {1, new binding (0/1), owner newly recorded (0/1)} or {0, the owner}.
-- KEYS: owner key, the channel's bindings, the index of bound channels.
-- ARGV: cid, call id, now, TTL, most bindings kept, the owner the id's form names ('' if none).
local owner, recorded = ARGV[6], 0
if owner == '' then
  owner = redis.call('GET', KEYS[1])
  if not owner then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
    owner, recorded = ARGV[1], 1
  end
end
if owner ~= ARGV[1] then return {0, owner} end
if ARGV[6] == '' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
local new = redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[5]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[4])
redis.call('ZADD', KEYS[3], 'GT', ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[4]))
return {1, new, recorded}
