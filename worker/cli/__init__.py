"""The `callsync` command, its local runner (`callsync run`) and the demo."""
