"""Redis: the only place that knows callsync's keys, hash fields and Lua programs."""
