-- The receiver's one atomic step (worker/store/enqueue.py): spend the delivery's dedupe keys
-- and push its message, or neither. 0: a duplicate, -1: the queue is full, 1: pushed.
-- KEYS: the dedupe keys, then the queue. ARGV: message, dedupe TTL, queue ceiling.
local n = #KEYS
for i = 1, n - 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end  -- a duplicate, answered as one even when full
end
if redis.call('LLEN', KEYS[n]) >= tonumber(ARGV[3]) then return -1 end  -- full: leaves no trace
for i = 1, n - 1 do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
end
redis.call('LPUSH', KEYS[n], ARGV[1])
return 1
