-- The receiver's one atomic step (worker/store/enqueue.py): spend the delivery's dedupe keys
-- and push its message, or neither. 0: a duplicate, -1: the queue is full, 1: pushed, 2: settled
-- (core.sessions.settled_at_ingest: a peer event of the session recorded open with the same
-- start, and no reconcile owed to the call; its peer is recorded here as the worker would, and
-- no task is pushed).
-- KEYS: the dedupe keys, the queue, then (ARGV[4] = 4) the call record, the session's peers
-- hash, the index of bound channels, the call's owed mark. ARGV: message, dedupe TTL, queue
-- ceiling, how many keys follow the queue (0 or 4), then: session id, start ms, the record_peer arguments (peer id,
-- user id, joined ms, left ms, bound, ttl, overflow field; peer id "" none), the named channel
-- ("" none), now, the bound index's horizon (now - CALL_TTL).
local extra = tonumber(ARGV[4])
local n = #KEYS - extra
for i = 1, n - 1 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return 0 end  -- a duplicate, answered as one even when full
end
if extra > 0 then
  local call = redis.call('HMGET', KEYS[n + 1], 's', 'st', 't0')
  if call[1] == ARGV[5] and call[2] == 'open' and call[3] == ARGV[6] and redis.call('EXISTS', KEYS[n + 4]) == 0 then
    for i = 1, n - 1 do
      redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
    end
    if ARGV[7] ~= '' then
      record_peer(KEYS[n + 2], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13])
    end
    if ARGV[14] ~= '' then  -- state.py _bound_index, as the worker keeps it
      redis.call('ZADD', KEYS[n + 3], 'GT', ARGV[15], ARGV[14])
      redis.call('ZREMRANGEBYSCORE', KEYS[n + 3], '-inf', ARGV[16])
    end
    return 2
  end
end
if redis.call('LLEN', KEYS[n]) >= tonumber(ARGV[3]) then return -1 end  -- full: leaves no trace
for i = 1, n - 1 do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
end
redis.call('LPUSH', KEYS[n], ARGV[1])
return 1
