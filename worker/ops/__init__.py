"""What operators see: status, counters, worker heartbeats and the /metrics collector."""
