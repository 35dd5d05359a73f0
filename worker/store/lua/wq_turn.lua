-- Take the endpoint's turn (one drainer at a time). KEYS: turn, scheduled, queue, processing.
-- ARGV: token, lease ms. Returns 1 (taken, or still ours) or 0 (another live drainer holds it).
-- A key left in `processing` was being written by a drainer whose turn lapsed (killed): it goes
-- back in line in its place (its first-wrong score), before anything newer.
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
local left = redis.call('HGETALL', KEYS[4])
for i = 1, #left, 2 do
  local current = redis.call('ZSCORE', KEYS[3], left[i])
  if not current or tonumber(current) > tonumber(left[i + 1]) then redis.call('ZADD', KEYS[3], left[i + 1], left[i]) end
end
redis.call('DEL', KEYS[4])
return 1
