-- The granted request was answered: log it at this time. KEYS: the log. ARGV: token.
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(t[1]) + tonumber(t[2]) / 1000000, ARGV[1])
