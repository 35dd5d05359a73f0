"""The stand-ins' credentials: public values, for tests, benches and the demo (never a real app's)."""

STREAM_KEY = "standin-stream-key"
STREAM_SECRET = "standin-stream-secret-0123456789abcdef"  # noqa: S105 - a stand-in's public value
HMS_KEY = "standin-hms-access-key"
HMS_SECRET = "standin-hms-app-secret-0123456789abcdef"  # noqa: S105 - a stand-in's public value
HOOK_SECRET = "standin-hms-webhook-secret"  # noqa: S105 - a stand-in's public value
