"""The sweep's keys: its lock, its last pass, its re-check cursor (read by `callsync status` too)."""

SWEEP_LOCK = "cs:lock:sweep"
LAST_SWEEP = "cs:sweep:last"
CHECK_CURSOR = "cs:sweep:cursor"
