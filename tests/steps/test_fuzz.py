"""Hostile input against both webhook endpoints and the worker steps behind them (issue 6).

Every property runs on fakeredis and, with fewer examples, on a real Redis (marked `redis`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile import (
    HMS_SECRET,
    LIMIT,
    SECRET,
    SETTINGS,
    Receiver,
    assert_well_formed,
    bodies,
    hms_events,
    json_values,
    stream_events,
)
from tests.support.world import World
from worker.core.events import HmsEvent, InvalidEvent, StreamEvent, parse_hms_event, parse_stream_event
from worker.core.signing import sign_stream
from worker.core.upstream import UpstreamError
from worker.jobs.app import create_celery
from worker.steps import sync
from worker.store.enqueue import Enqueuer

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)
SOURCES = ("stream", "hms")


def run(client: redis.Redis, examples: int, *strategies: st.SearchStrategy[Any]) -> Callable[[Callable[..., None]], None]:
    """Run the decorated property now: `examples` on fakeredis, a fifth of that on a real Redis."""
    real = not isinstance(client, fakeredis.FakeRedis)
    chosen = settings(
        max_examples=max(examples // 5, 10) if real else examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    def decorate(check: Callable[..., None]) -> None:
        chosen(given(*strategies)(check))()

    return decorate


@pytest.fixture
def rx(redis_client: redis.Redis) -> Receiver:
    return Receiver(redis_client)


# --- unauthenticated: 401 (or 413), and not a single byte of state changes ------------------


def test_unauthenticated_stream_requests_leave_no_trace(rx: Receiver) -> None:
    forged = st.one_of(
        st.none(),
        header_text,
        st.builds(lambda b: sign_stream(b, "wrong-secret"), st.binary(max_size=8)),
        st.just(sign_stream(b"other body", SECRET)),
    )

    @run(rx.redis, 150, bodies, forged, st.booleans(), header_text)
    def check(body: bytes, signature: str | None, compress: bool, encoding: str) -> None:
        if signature and signature.strip().lower() == sign_stream(body, SECRET):
            return
        before = rx.keyspace()
        headers = {"Content-Encoding": encoding, "X-Webhook-Id": "fuzz"}
        if signature is not None:
            headers["X-Signature"] = signature
        answer = rx.post_stream(body, signed=False, compress=compress, headers=headers)
        assert answer.status_code in (401, 413)
        assert_well_formed(answer)
        assert rx.keyspace() == before


def test_unauthenticated_hms_requests_leave_no_trace(rx: Receiver) -> None:
    near_misses = [HMS_SECRET.upper(), f"{HMS_SECRET}x", HMS_SECRET[:-1], f"{HMS_SECRET},x", ""]
    guesses = st.none() | header_text | st.sampled_from(near_misses)

    @run(rx.redis, 150, bodies, guesses)
    def check(body: bytes, secret: str | None) -> None:
        if secret in SETTINGS.hms_webhook_secrets:
            return
        before = rx.keyspace()
        answer = rx.post_hms(body, secret=secret)
        assert answer.status_code in (401, 413)
        assert_well_formed(answer)
        assert rx.keyspace() == before


# --- authenticated but hostile: 2xx, 400 or 413 as docs/http.md says -------------------------


def _authenticated(rx: Receiver, source: str, body: bytes, compress: bool = False) -> int:
    before = rx.keyspace()
    if source == "stream":
        answer = rx.post_stream(body, compress=compress, headers={"X-Webhook-Id": str(len(before))})
    else:
        answer = rx.post_hms(body)
    assert answer.status_code in (200, 202, 400, 413), answer.data[:200]
    assert_well_formed(answer)
    if answer.status_code != 202:
        assert rx.keyspace() == before
    return int(answer.status_code)


def test_signed_hostile_bodies_get_a_contract_answer(rx: Receiver) -> None:
    @run(rx.redis, 300, st.sampled_from(SOURCES), bodies, st.booleans())
    def check(source: str, body: bytes, compress: bool) -> None:
        _authenticated(rx, source, body, compress)


def test_signed_bodies_around_the_size_limit(rx: Receiver) -> None:
    @run(rx.redis, 40, st.sampled_from(SOURCES), st.integers(LIMIT - 40, LIMIT + 40), st.booleans())
    def check(source: str, size: int, compress: bool) -> None:
        head = b'{"id":"big","type":"channel.updated","cid":"a:b","data":{},"x":"'
        body = head + b"\xe2\x82\xac" * ((size - len(head) - 2) // 3) + b'"}'  # multi-byte characters
        status = _authenticated(rx, source, body, compress)
        assert (status == 413) == (len(body) > LIMIT)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 600 + b"1" + b"}" * 600,
        b'{"type":"channel.updated","cid":"a:b","channel":' + b"[" * 1900 + b"]" * 1900 + b"}",
        b"1" * 4000,  # an integer beyond Python's digit limit for str → int
        b'"' + b"\\ud800" * 600 + b'"',
        b"\xef\xbb\xbf{}",  # UTF-8 byte order mark
        b"\xff\xfe{\x00}\x00",  # UTF-16
        b"NaN",
        b'{"id":"x","type":"session.open.success","data":{"room_id":"r","session_id":"s"},"id":1}',
    ],
    ids=["deep-array", "deep-object", "deep-channel", "long-int", "surrogates", "bom", "utf16", "nan", "dup-key"],
)
@pytest.mark.parametrize("source", SOURCES)
def test_pathological_json(rx: Receiver, source: str, body: bytes) -> None:
    assert len(body) <= LIMIT
    _authenticated(rx, source, body)


@pytest.mark.parametrize("depth", [10_000, 100_000, 500_000])
def test_nesting_deeper_than_the_recursion_limit_is_400(redis_client: redis.Redis, depth: int) -> None:
    rx = Receiver(redis_client, dataclasses.replace(SETTINGS, max_body_bytes=1 << 20))
    for body in (b"[" * depth + b"]" * depth, b'{"a":' * (depth // 5) + b"0" + b"}" * (depth // 5)):
        assert rx.post_stream(body).status_code == 400
        assert rx.post_hms(body).status_code == 400
        assert rx.post_hms(body, secret=None).status_code == 401
    assert rx.keyspace() == {}


def test_gzip_header_on_a_plain_body_and_broken_gzip(rx: Receiver) -> None:
    plain = json.dumps({"type": "message.new"}).encode()
    assert rx.post_stream(plain, headers={"Content-Encoding": "gzip"}).get_json() == {"status": "ignored"}
    for broken in (b"\x1f\x8b", b"\x1f\x8b\x08\x00" + b"\x00" * 20, gzip.compress(plain)[:-6]):
        assert _authenticated(rx, "stream", broken) == 400  # signed over the raw bytes: nothing inflates
    # Bytes after the gzip member are not inflated, so they are not signed either.
    signed = {"X-Signature": sign_stream(plain, SECRET)}
    answer = rx.http.post("/webhooks/stream", data=gzip.compress(plain) + b"junk", headers=signed)
    assert answer.get_json() == {"status": "ignored"}


# --- the worker: an accepted hostile event is ignored or fails with a typed error -----------


def _apply(world: World, task: str, raw: dict[str, Any]) -> None:
    """What the task does with the message (worker.jobs.tasks), then every follow-up step."""
    if task == "callsync.apply_stream_event":
        sync.apply_stream_event(world.rt, StreamEvent.from_json(raw))
    else:
        sync.apply_hms_event(world.rt, HmsEvent.from_json(raw))
    world.drain()


def test_accepted_hostile_events_never_crash_a_worker(rx: Receiver) -> None:
    world = World(rx.redis)
    for cid in ("messaging:general", "a:b", "messaging:../../x", "messaging:a?x=1#f", "messaging:.."):
        world.stream.create_channel(cid)
    events = st.tuples(st.just("stream"), stream_events) | st.tuples(st.just("hms"), hms_events)

    @run(rx.redis, 200, events, st.booleans())
    def check(event: tuple[str, Any], ascii_only: bool) -> None:
        source, value = event
        body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        taken = len(rx.queued())
        if _authenticated(rx, source, body) != 202:
            return
        [(task, raw)] = rx.queued()[taken:]
        try:
            _apply(world, task, raw)
        except (UpstreamError, sync.Deferred):  # retried or dead-lettered by the task policy
            world.queue.take()

    # Only the endpoints callsync means to call were reached, whatever the ids said.
    for method, path, _ in world.stream.calls:
        assert (method, path) == ("POST", "/channels") or (method == "PATCH" and path.startswith("/channels/")), path
    for method, path, _ in world.hms.calls:
        assert (method, path) in {("GET", "/sessions"), ("GET", "/rooms")} or path.endswith("/end-room"), path


# --- the pure parsers: an event, None, or InvalidEvent; never anything else ------------------

prefixes = st.sampled_from([(), ("data",), ("data", "call")]) | st.lists(st.text(max_size=4), max_size=3).map(tuple)


@settings(max_examples=500, deadline=None)
@given(json_values | stream_events, prefixes)
def test_parse_stream_event_is_total(body: object, prefix: tuple[str, ...]) -> None:
    try:
        event = parse_stream_event(body, prefix)
    except InvalidEvent:
        return
    if event is not None:
        raw = event.to_json()
        json.dumps(raw, ensure_ascii=False).encode()  # every string is real text: a valid key and URL part
        assert StreamEvent.from_json(json.loads(json.dumps(raw))) == event


@settings(max_examples=500, deadline=None)
@given(json_values | hms_events)
def test_parse_hms_event_is_total(body: object) -> None:
    try:
        event = parse_hms_event(body)
    except InvalidEvent:
        return
    if event is not None:
        raw = event.to_json()
        json.dumps(raw, ensure_ascii=False).encode()
        assert HmsEvent.from_json(json.loads(json.dumps(raw))) == event


# --- regressions found by the fuzzing above ------------------------------------------------


def test_lone_surrogates_are_400_and_the_receiver_keeps_serving(rx: Receiver) -> None:
    """A lone surrogate in the 100ms envelope id used to kill the enqueue thread: 503 ever after."""
    hostile = b'{"id":"\\ud800","type":"session.open.success","data":{"room_id":"r","session_id":"s"}}'
    assert rx.post_hms(hostile).status_code == 400
    assert rx.post_stream(b'{"type":"channel.updated","cid":"messaging:\\udc00"}').status_code == 400
    fine = b'{"id":"ok","type":"session.open.success","data":{"room_id":"r","session_id":"s"}}'
    assert rx.post_hms(fine).status_code == 202


def test_the_enqueue_thread_survives_an_error_that_is_not_redis(redis_client: redis.Redis) -> None:
    enqueuer = Enqueuer(redis_client, create_celery(SETTINGS), 60)
    with pytest.raises(UnicodeEncodeError):
        enqueuer.enqueue_once("cs:dd:test:\ud800", "callsync.apply_hms_event", ({},))
    assert enqueuer.enqueue_once("cs:dd:test:ok", "callsync.apply_hms_event", ({},)) is True
