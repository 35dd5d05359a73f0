"""Real-shaped payloads, and the test-side signer that makes them deliverable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worker.core.signing import sign_stream

HERE = Path(__file__).parent


# The time the samples above happen at (their Stream event's created_at, 100ms's open): a
# receiver under test runs at it, since Stream events older than an hour are ignored.
SAMPLES_AT = 1795168800.5  # 2026-11-20T10:00:00.5Z


def samples_clock() -> float:
    return SAMPLES_AT


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((HERE / f"{name}.json").read_text())
    return data


def stream_headers(body: bytes, secret: str, webhook_id: str = "wh-1") -> dict[str, str]:
    return {
        "X-Signature": sign_stream(body, secret),
        "X-Webhook-Id": webhook_id,
        "X-Webhook-Attempt": "1",
        "Content-Type": "application/json",
    }
