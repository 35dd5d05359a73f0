"""The worker's steps: load recorded state, ask the pure core, carry out what it says."""
