"""Thin upstream clients: one per platform, each handed its long-lived `httpx.Client`."""
