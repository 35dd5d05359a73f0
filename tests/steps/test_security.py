"""Security checks of issue 6: constant-time comparisons (and tests/unit/test_signing.py), body limits before parsing, Redis key
namespaces, ids that cannot steer upstream requests. Secrets in logs: tests/steps/test_leaks.py."""

from __future__ import annotations

import ast
import dataclasses
import re
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.hostile import HMS_SECRET, OLD_HMS_SECRET, SECRET, SETTINGS, Receiver
from tests.support.tripwire import SecretText
from tests.support.world import World
from worker.core.events import CALL_ID_RE, CID_RE, CallFields
from worker.core.signing import sign_stream
from worker.core.upstream import UpstreamError
from worker.store.keys import bindings_key, call_key, channel_key, dedupe_key, owner_key, room_key

ROOT = Path(__file__).resolve().parents[2]
MB = 1 << 20

# --- constant-time comparisons -----------------------------------------------------------
# The header values and the configured secrets are tripwires (tests/support/tripwire.py): any
# comparison by value on the receiver's way (==, in, startswith) fails the request loudly.
STREAM_IGNORED = b'{"type": "message.new", "cid": "messaging:general"}'
HMS_IGNORED = b'{"id": "x", "type": "recording.success", "data": {}}'


@pytest.fixture
def wired(redis_client: redis.Redis) -> Receiver:
    secrets = dataclasses.replace(
        SETTINGS,
        stream_api_secret=SecretText(SETTINGS.stream_api_secret or ""),
        hms_webhook_secrets=tuple(SecretText(secret) for secret in SETTINGS.hms_webhook_secrets),
    )
    return Receiver(redis_client, secrets)


def _header(name: str) -> str:
    return "HTTP_" + name.upper().replace("-", "_")


@pytest.mark.parametrize("right", [True, False], ids=["signed", "forged"])
def test_the_receiver_checks_a_stream_signature_only_in_constant_time(wired: Receiver, right: bool) -> None:
    signature = sign_stream(STREAM_IGNORED, SECRET if right else "a-guess")
    environ = {_header("X-Signature"): SecretText(signature)}
    answer = wired.http.post("/webhooks/stream", data=STREAM_IGNORED, environ_overrides=environ)
    assert answer.status_code == (200 if right else 401), answer.get_data(as_text=True)
    assert not right or answer.json == {"status": "ignored"}


@pytest.mark.parametrize("secret", [HMS_SECRET, OLD_HMS_SECRET, "a-guess"])
def test_the_receiver_checks_a_100ms_secret_only_in_constant_time(wired: Receiver, secret: str) -> None:
    environ = {_header(SETTINGS.hms_webhook_header): SecretText(secret)}
    answer = wired.http.post("/webhooks/hms", data=HMS_IGNORED, environ_overrides=environ)
    assert answer.status_code == (401 if secret == "a-guess" else 200), answer.get_data(as_text=True)


# --- body limits before parsing -----------------------------------------------------------


class EndlessBody:
    """A request body of `size` bytes made as it is read, counting what was read."""

    def __init__(self, size: int):
        self.left, self.read_bytes = size, 0

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        self.left -= n
        self.read_bytes += n
        return b"{" * n


@pytest.fixture
def big(redis_client: redis.Redis) -> Receiver:
    return Receiver(redis_client, dataclasses.replace(SETTINGS, max_body_bytes=MB))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_10_mb_body_is_413_after_reading_at_most_the_limit(big: Receiver, declared: bool) -> None:
    body = EndlessBody(10 * MB)
    environ = {"wsgi.input": body, "wsgi.input_terminated": True, **({"CONTENT_LENGTH": str(10 * MB)} if declared else {})}
    answer = big.http.post("/webhooks/hms", headers={"X-Callsync-Secret": HMS_SECRET}, environ_overrides=environ)
    assert answer.status_code == 413
    assert body.read_bytes <= (0 if declared else MB + 1)
    assert big.keyspace() == {}


def _bomb(inflated: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip framing
    chunk = b" " * MB
    return b"".join([*(packer.compress(chunk) for _ in range(inflated // MB)), packer.flush()])


@pytest.mark.parametrize(
    ("path", "headers"),
    [("/webhooks/stream", {"X-Signature": "00"}), ("/webhooks/hms", {"X-Callsync-Secret": HMS_SECRET})],
    ids=["stream", "hms"],
)
def test_a_gzip_bomb_is_413_without_inflating_past_the_limit(big: Receiver, path: str, headers: dict[str, str]) -> None:
    bomb = _bomb(200 * MB)
    assert len(bomb) < MB
    tracemalloc.start()
    try:
        answer = big.http.post(path, data=bomb, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.status_code == 413
    assert peak < 4 * MB, f"peak {peak / MB:.1f} MiB while answering a 200 MiB bomb"
    assert big.keyspace() == {}


# --- Redis keys built from input stay in their namespace ---------------------------------

BUILDERS: dict[str, Callable[[str], str]] = {
    "call": call_key,
    "owner": owner_key,
    "room": room_key,
    "channel": channel_key,
    "bindings": bindings_key,
    "dedupe-stream": lambda x: dedupe_key("stream", x),
    "dedupe-hms": lambda x: dedupe_key("hms", x),
}
PROBE = "\x00probe"
PREFIXES = [build(PROBE).removesuffix(PROBE) for build in BUILDERS.values()]  # e.g. "cs:dd:hms:"
inputs = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", ":", "s:x", "c:x", "owner:x", "room:x", "hms:x", "stream:x", *PREFIXES, *(p + "x" for p in PREFIXES)]
)


def _same_input(kind: str, a: str, b: str) -> bool:
    return a == b  # call ids are exact: two spellings are two calls (core/binding.py)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(BUILDERS)), inputs, st.sampled_from(sorted(BUILDERS)), inputs, st.data())
def test_keys_of_distinct_kinds_or_inputs_never_collide(kind1: str, x1: str, kind2: str, x2: str, data: st.DataObject) -> None:
    key1 = BUILDERS[kind1](x1)
    # Also the adversarial input: whatever would make the second builder produce exactly key1.
    for prefix in PREFIXES:
        if key1.startswith(prefix) and data.draw(st.booleans()):
            x2 = key1[len(prefix) :]
    key2 = BUILDERS[kind2](x2)
    same = kind1 == kind2 and _same_input(kind1, x1, x2)
    assert (key1.encode() == key2.encode()) == same, (kind1, x1, kind2, x2)


# A check over the source, not a run: it is about every key the code can build, and a run shows
# only the keys its paths happened to write (a rare path's key could still collide).
def _key_templates() -> list[tuple[str, str, list[str]]]:
    """(file, template with {} for each formatted part, the names formatted) of every `cs:` key in the code."""
    found = []
    for path in sorted([*(ROOT / "worker").rglob("*.py"), *(ROOT / "webhooks").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        inside_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
        for node in ast.walk(tree):
            if id(node) in inside_fstrings:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("cs:"):
                found.append((path.name, node.value + ("{}" if node.value.endswith(":") else ""), ["any"]))
            elif isinstance(node, ast.JoinedStr) and ast.unparse(node)[2:].startswith("cs:"):
                parts = [v.value if isinstance(v, ast.Constant) else "{}" for v in node.values]
                names = [ast.unparse(v.value).split(".")[0] for v in node.values if isinstance(v, ast.FormattedValue)]
                found.append((path.name, "".join(map(str, parts)), names))
    return found


# What each formatted name can hold once the parsers let it through (tests/steps/test_fuzz.py).
DOMAINS = {"cid": CID_RE, "call_id": CALL_ID_RE, "source": re.compile("stream|hms")}


def test_every_key_in_the_code_has_its_own_namespace() -> None:
    templates = [t for t in _key_templates() if t[1].startswith("cs:")]
    assert len(templates) >= 10, templates
    kinds: dict[str, list[tuple[str, str, list[str]]]] = {}
    for template in templates:
        kind = template[1].split(":")[1]
        assert kind and "{" not in kind, template
        kinds.setdefault(kind, []).append(template)
    for kind, same in kinds.items():
        unique = sorted({t[1] for t in same})
        fixed = [t for t in unique if "{" not in t]
        formatted = [t for t in unique if "{" in t]
        assert len(formatted) <= 1, f"kind {kind!r} is built in two ways: {formatted}"
        for shape in formatted:  # a fixed key of the same kind must not be a value of the template
            names = next(t[2] for t in same if t[1] == shape)
            for key in fixed:
                rest = key[len(shape.split("{}")[0]) :]
                domain = DOMAINS.get(names[-1])
                assert domain is not None and not domain.fullmatch(rest), f"{key} could be {shape} of {names}"


# --- ids from webhooks cannot steer a request to another upstream endpoint ---------------

ODD_IDS = ["..", ".", "a?x=1", "a#b", "%2e%2e", "!members-a", "a b"]  # (httpx's WSGITransport garbles non-ASCII paths)


@pytest.mark.parametrize("ident", ODD_IDS)
def test_a_channel_id_reaches_only_its_own_channel(redis_client: redis.Redis, ident: str) -> None:
    world = World(redis_client)
    cid = f"messaging:{ident}"
    assert CID_RE.fullmatch(cid) or " " in ident
    world.stream.create_channel(cid)
    fields = world.rt.stream.update_call_fields(cid, CallFields(True, "call-x"))
    assert fields == CallFields(True, "call-x")
    assert world.stream.calls[-1][:2] == ("PATCH", f"/channels/messaging/{ident}")


@pytest.mark.parametrize("ident", ["../../x", "a/b"])
def test_a_slash_in_an_id_stays_inside_the_path_segment(redis_client: redis.Redis, ident: str) -> None:
    world = World(redis_client)
    with pytest.raises(UpstreamError):  # the stand-ins have no such channel or room
        world.rt.stream.update_call_fields(f"messaging:{ident}", CallFields(True, "call-x"))
    assert world.stream.calls[-1][:2] == ("PATCH", f"/channels/messaging/{ident}")
    assert world.rt.hms.end_room(ident, "test") is False
    assert world.hms.calls[-1][:2] == ("POST", f"/active-rooms/{ident}/end-room")
