-- The receiver's one atomic step (worker/store/enqueue.py): spend the delivery's dedupe keys
-- and push its message, or neither. 0: a duplicate, -1: the queue is full, 1: pushed, 2: settled
-- (no task pushed: the event provably changes nothing but what is recorded here, as the worker
-- would record it). Two kinds settle (ARGV[5]):
-- 'peer' (core.sessions.settled_at_ingest): a peer event of the session recorded open with the
--   same start, and no reconcile owed to the call; its peer is recorded here as the worker would.
--   Its keys: the call record, the session's peers hash, the index of bound channels, the
--   call's owed mark. Its ARGV: session id, start ms, the record_peer arguments (peer id, user
--   id, joined ms, left ms, bound, ttl, overflow field; peer id "" none), the named channel ("" none),
--   now, the bound index's horizon (now - CALL_TTL).
-- 'echo' (core.channels.stream_settled_at_ingest): Stream's echo of callsync's own write once
--   its bookkeeping is recorded; settle_echo.lua (its keys and arguments) records it.
-- KEYS: the dedupe keys, the queue, then the settle's keys. ARGV: message, dedupe TTL, queue
-- ceiling, how many keys follow the queue, the settle's kind ('' none), then its arguments.
local extra, kind = tonumber(ARGV[4]), ARGV[5]
local n = #KEYS - extra
if n > 1 and redis.call('EXISTS', unpack(KEYS, 1, n - 1)) > 0 then
  return 0  -- a duplicate, answered as one even when full
end

local function settle_peer()
  local call = redis.call('HMGET', KEYS[n + 1], 's', 'st', 't0')
  if call[1] ~= ARGV[6] or call[2] ~= 'open' or call[3] ~= ARGV[7] or redis.call('EXISTS', KEYS[n + 4]) == 1 then
    return false
  end
  if ARGV[8] ~= '' then
    record_peer(KEYS[n + 2], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14])
  end
  if ARGV[15] ~= '' then  -- state.py _bound_index, as the worker keeps it
    redis.call('ZADD', KEYS[n + 3], 'GT', ARGV[16], ARGV[15])
    redis.call('ZREMRANGEBYSCORE', KEYS[n + 3], '-inf', ARGV[17])
  end
  return true
end

local settled = false
if kind == 'peer' then
  settled = settle_peer()
elseif kind == 'echo' then
  settled = settle_echo({unpack(KEYS, n + 1)}, {unpack(ARGV, 6)})
end
if not settled and redis.call('LLEN', KEYS[n]) >= tonumber(ARGV[3]) then return -1 end  -- full: leaves no trace
for i = 1, n - 1 do
  redis.call('SET', KEYS[i], '1', 'EX', ARGV[2])
end
if settled then return 2 end
redis.call('LPUSH', KEYS[n], ARGV[1])
return 1
