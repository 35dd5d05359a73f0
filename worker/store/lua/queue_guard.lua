-- A prefix for compare_and_set.lua (worker/store/calls.py joins the two into one script): the
-- write and its commands (which push a task onto the queue) happen only while the queue is
-- under its ceiling, as the receiver's dedupe_and_push.lua refuses a delivery. {-1}: full,
-- nothing written. KEYS: compare_and_set.lua's hash, then the queue. ARGV: the ceiling, then
-- compare_and_set.lua's arguments, which it reads from a shifted copy (ARGV itself is left as
-- Redis gave it).
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[1]) then return {-1} end
local ARGV = {unpack(ARGV, 2)}
