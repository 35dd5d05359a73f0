-- settle_echo(keys, args): settle at ingest a Stream event that changes nothing
-- (core.channels.stream_settled_at_ingest: the echo of callsync's own write once its bookkeeping
-- is recorded). Returns false, having touched nothing, unless the channel's record (hash,
-- worker/store/codec.py) holds only a, x, v, id, cl, w, wt (no pending mark, no missing-for),
-- exists, shows exactly the event's callActive/callId, has a claim date exactly when active,
-- and holds no write in flight at the event's version; and, when the event shows a call id,
-- the channel owns it and has it bound (core.channels.rebinds). Then it does what the worker's
-- path (state.py record_stream_event) does for it and returns true: binds the call again
-- (bind_owned.lua with nothing new: the binding's time, TTLs and the bound index) and, unless
-- the event is older than the record, moves the record's version to the event's, drops a
-- lapsed intent and renews the record's TTL (core.channels.echo_settled).
-- keys: the channel's record, then (a call id shown) the call's owner key, the channel's
-- bindings, the index of bound channels. args: cid, callActive ('1'/'0'), callId ('' none), the
-- event's version, now, the bindings' and record's TTL, most bindings kept, the owner the id's
-- form names ('' none), how long a write is in flight (core.channels.WRITE_INTENT_SECONDS).
-- A library: prepended to the programs that use it (scripts.Script.named).
local SETTLE_ECHO_FIELDS = {a = true, x = true, v = true, id = true, cl = true, w = true, wt = true}

local function settle_echo(keys, args)
  local flat = redis.call('HGETALL', keys[1])
  if #flat == 0 then return false end
  local h = {}
  for i = 1, #flat, 2 do
    if not SETTLE_ECHO_FIELDS[flat[i]] then return false end  -- a pending mark, a missing channel: the worker's
    h[flat[i]] = flat[i + 1]
  end
  local version, recorded = tonumber(args[4]), tonumber(h.v or '')
  if h.x ~= '1' or recorded == nil or (h.a ~= '1' and h.a ~= '0') then return false end
  if h.a ~= args[2] or (h.id or '') ~= args[3] then return false end  -- other fields: news
  if (h.a == '1') ~= (h.cl ~= nil and h.cl ~= '') then return false end
  if (h.w == nil) ~= (h.wt == nil) then return false end
  if h.wt ~= nil then
    local at = tonumber(string.match(h.wt, '^(%S+)') or '')
    if at == nil or version <= at + tonumber(args[9]) then return false end  -- a write in flight
  end
  local call_id, cid, now, ttl = args[3], args[1], args[5], tonumber(args[6])
  local members = {}
  if call_id ~= '' then
    local owner = args[8]
    if owner == '' then owner = redis.call('GET', keys[2]) end
    if owner ~= cid then return false end
    members = redis.call('ZRANGE', keys[3], 0, -1)
    local bound = false
    for _, member in ipairs(members) do
      if member == call_id then bound = true end
    end
    if not bound then return false end  -- a new binding: the worker's
  end
  if call_id ~= '' then  -- bind_owned.lua, binding nothing new
    if args[8] == '' then redis.call('EXPIRE', keys[2], ttl) end
    redis.call('ZADD', keys[3], now, call_id)
    local most = tonumber(args[7])
    if #members > most then redis.call('ZREMRANGEBYRANK', keys[3], 0, -most - 1) end  -- else a no-op
    redis.call('EXPIRE', keys[3], ttl)
    redis.call('ZADD', keys[4], 'GT', now, cid)
    redis.call('ZREMRANGEBYSCORE', keys[4], '-inf', tonumber(now) - ttl)
  end
  if version >= recorded then
    redis.call('HSET', keys[1], 'v', args[4])
    if h.w ~= nil then redis.call('HDEL', keys[1], 'w', 'wt') end
    redis.call('EXPIRE', keys[1], ttl)
  end
  return true
end
