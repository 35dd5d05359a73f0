-- Give the turn back (or, with a token nobody holds, only look). KEYS: turn, queue, scheduled,
-- processing. ARGV: token, scheduled flag ms. Returns 1 when keys wait (in line, or left in
-- `processing` by a drainer that died) with no live turn and no drain scheduled: the caller
-- publishes one (the flag is set); else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('ZCARD', KEYS[2]) + redis.call('HLEN', KEYS[4]) > 0 and redis.call('EXISTS', KEYS[1]) == 0
   and redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
