-- The turn holder takes the write's slot. KEYS: pace, turn. ARGV: count, period, now, token,
-- lease ms. Returns '0' (taken; the lease renewed) or the seconds to wait.
if redis.call('GET', KEYS[2]) == ARGV[4] then redis.call('PEXPIRE', KEYS[2], ARGV[5]) end
return fmt(pace_admit(KEYS[1], pace_read(KEYS[1]), tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])))
