-- Record one peer report of a session (peer_merge.lua's record_peer, core.peers.merge).
-- KEYS[1]: the session's peers hash (keys.peers_key)
-- ARGV: peer id, user id ("" unknown), joined ms ("" unknown), left ms ("" none), bound, ttl seconds, overflow field
-- Returns 1 when the record changed, 0 when the report told nothing new.
return record_peer(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
