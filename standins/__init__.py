"""Local stand-ins for Stream Chat and 100ms: test and demo support, not part of the service.

They answer over HTTP the way the platforms do (wire facts from the platforms' public docs
and SDKs, each named where it is relied on: 100mslive/100ms-docs, GetStream/stream-chat-js,
GetStream/stream-chat-python, GetStream/stream-chat-test-mock-server), keep
channel and session state, send the webhooks the platforms send, and can be told to fail.
The tests, `callsync demo` and `bench/e2e.py` run callsync against them. They ship with the
package only so that the demo works on a fresh install; the `web`, `worker` and `beat`
roles never import them.
"""

from .base import Call, Json, Webhook
from .hms import FakeHms
from .running import Platforms, running
from .serve import serve
from .stream import FakeStream

__all__ = ["Call", "FakeHms", "FakeStream", "Json", "Platforms", "Webhook", "running", "serve"]
