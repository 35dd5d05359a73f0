"""One way in per platform: `from_http(headers, body)` verifies and parses, or raises Rejected
with the answer (the order of checks of docs/http.md). No web app, no Redis: the source alone."""

from __future__ import annotations

import gzip
import json

import pytest

from standins.credentials import HMS_SECRET, STREAM_SECRET
from tests.samples import SAMPLES_AT, load, stream_headers
from webhooks.sources import HmsWebhooks, Rejected, StreamWebhooks
from worker.core.access import MemberAdded
from worker.core.events import HmsEvent, StreamEvent
from worker.settings import Settings
from worker.store.keys import dedupe_key

SETTINGS = Settings(
    redis_url="redis://unused", stream_api_secret=STREAM_SECRET, hms_webhook_secrets=(HMS_SECRET,), max_body_bytes=4096
)


def stream(at: float = SAMPLES_AT) -> StreamWebhooks:
    return StreamWebhooks(SETTINGS, lambda: at)


def signed(payload: object) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload).encode()
    return stream_headers(body, STREAM_SECRET, webhook_id="wh-7"), body


def rejected(source: StreamWebhooks | HmsWebhooks, headers: dict[str, str], body: bytes) -> tuple[int, str, str]:
    with pytest.raises(Rejected) as caught:
        source.from_http(headers, body)
    return caught.value.code, caught.value.reason, caught.value.event_type


def test_a_signed_stream_delivery_parses_with_its_id_and_both_dedupe_keys() -> None:
    headers, body = signed(load("stream_channel_updated"))
    delivery = stream().from_http(headers, body)
    assert isinstance(delivery.event, StreamEvent) and delivery.event.cid == "messaging:general"
    assert (delivery.event_type, delivery.delivery_id) == ("channel.updated", "wh-7")
    assert delivery.dedupe_keys[0] == dedupe_key("stream", "wh-7") and delivery.dedupe_keys[1].startswith("cs:dd:stream-body:")


def test_a_stream_delivery_without_an_id_is_deduplicated_by_its_body_alone() -> None:
    headers, body = signed(load("stream_channel_updated"))
    delivery = stream().from_http({**headers, "X-Webhook-Id": ""}, body)
    assert delivery.delivery_id is None and [k.split(":")[2] for k in delivery.dedupe_keys] == ["stream-body"]


@pytest.mark.parametrize("offset", [-3601.0, 3600.0])
def test_a_stream_delivery_outside_the_window_is_verified_then_ignored(offset: float) -> None:
    headers, body = signed(load("stream_channel_updated"))
    assert stream(SAMPLES_AT - offset).from_http(headers, body).event is None
    assert rejected(stream(SAMPLES_AT - offset), {**headers, "X-Signature": "0" * 64}, body)[:2] == (401, "unauthorized")


def test_a_gzip_stream_body_is_verified_after_inflating() -> None:
    headers, body = signed(load("stream_channel_updated"))
    assert stream().from_http(headers, gzip.compress(body)).event is not None


def test_the_order_of_checks_is_size_then_signature_then_body() -> None:
    headers, body = signed({"type": "channel.updated", "pad": "x" * 5000})
    assert rejected(stream(), headers, gzip.compress(body)) == (413, "too_large", "unknown")
    assert rejected(stream(), {**headers, "X-Signature": "bad"}, b"\x1f\x8bnot gzip") == (401, "unauthorized", "unknown")
    bad_gzip = b"\x1f\x8bnot gzip"
    good = stream_headers(bad_gzip, STREAM_SECRET)
    assert rejected(stream(), good, bad_gzip) == (400, "bad_request", "unknown")
    assert rejected(stream(), stream_headers(b"{", STREAM_SECRET), b"{") == (400, "bad_request", "unknown")
    no_cid = json.dumps({"type": "channel.updated", "channel": {"id": 1}}).encode()
    assert rejected(stream(), stream_headers(no_cid, STREAM_SECRET), no_cid)[:2] == (400, "bad_request")


def test_a_stream_member_added_parses_and_other_types_are_ignored() -> None:
    headers, body = signed({"type": "member.added", "cid": "messaging:general", "member": {"user_id": "zoe"}})
    assert stream().from_http(headers, body).event == MemberAdded("messaging:general", "zoe")
    headers, body = signed({"type": "message.new", "cid": "messaging:general"})
    delivery = stream().from_http(headers, body)
    assert (delivery.event, delivery.event_type) == (None, "other")


def test_an_hms_delivery_is_verified_by_its_header_and_keyed_by_its_envelope_id() -> None:
    hms = HmsWebhooks(SETTINGS)
    body = json.dumps(load("hms_session_open")).encode()
    delivery = hms.from_http({"X-Callsync-Secret": HMS_SECRET}, body)
    assert isinstance(delivery.event, HmsEvent) and delivery.event_type == "session.open.success"
    assert delivery.dedupe_keys == [dedupe_key("hms", delivery.event.id)] and delivery.delivery_id == delivery.event.id
    assert rejected(hms, {"X-Callsync-Secret": "wrong"}, body) == (401, "unauthorized", "unknown")
    assert rejected(hms, {}, body) == (401, "unauthorized", "unknown")
    assert hms.header_id({"X-Webhook-Id": "wh-1"}) is None  # 100ms's id is the body's


def test_an_hms_event_missing_what_100ms_always_sends_is_a_400_labelled_with_its_type() -> None:
    body = json.dumps({"id": "e1", "type": "session.open.success"}).encode()
    answer = rejected(HmsWebhooks(SETTINGS), {"X-Callsync-Secret": HMS_SECRET}, body)
    assert answer == (400, "bad_request", "session.open.success")
