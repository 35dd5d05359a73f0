"""The webhook receiver: read, verify, parse, dedupe, enqueue, answer. Nothing else."""
