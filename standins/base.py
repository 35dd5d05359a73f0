"""Shared plumbing of the platform stand-ins: JSON answers, tokens, the fault injector, the outbox."""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import jwt
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

Json = dict[str, Any]
Call = tuple[str, str, Json | None]
Webhook = tuple[dict[str, str], bytes]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(ts: float, micro: bool = True) -> str:
    """UTC time as RFC3339 with a Z suffix (microseconds unless ``micro`` is false)."""
    return rfc3339_us(round(ts * 1_000_000)) if micro else datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_us(us: int) -> str:
    return (EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rfc3339_ns(ns: int) -> str:
    """UTC time with up to nine fractional digits, trailing zeros dropped, as both platforms
    stamp events (Go's RFC3339Nano: `2024-10-15T10:12:00.402858186Z` in Stream's webhook docs,
    `2021-11-30T12:58:49.97291247Z` in 100ms's)."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    whole = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{whole}.{digits}Z" if digits else f"{whole}Z"


def rfc3339_nano(ts: float) -> str:
    return rfc3339_ns(round(ts * 1_000_000_000))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


def decode_hs256(token: str, secret: str, **kw: Any) -> Json:
    """HS256 verify; short test secrets must not trip PyJWT's key-length warning (tests run with -W error)."""
    with warnings.catch_warnings(action="ignore"):
        return jwt.decode(token, secret, algorithms=["HS256"], **kw)


def hex_id() -> str:
    return uuid.uuid4().hex[:24]  # 100ms ids are 24 hex characters


_shared: dict[str, Any] = {}
_shared_lock = threading.Lock()


def _delivery_client() -> httpx.Client:
    """One keep-alive client for every stand-in's webhook deliveries in this process: a fresh
    client per delivery costs milliseconds of CPU (its TLS context), which the benches would
    measure as callsync's time. It lives as long as the process, like a platform's sender."""
    with _shared_lock:
        if "client" not in _shared:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            _shared["client"] = httpx.Client(timeout=5, limits=limits)
        return cast(httpx.Client, _shared["client"])


def _delivery_pool() -> ThreadPoolExecutor:
    with _shared_lock:
        if "pool" not in _shared:
            _shared["pool"] = ThreadPoolExecutor(max_workers=32, thread_name_prefix="standin-webhooks")
        return cast(ThreadPoolExecutor, _shared["pool"])


class Fake:
    """Shared plumbing: lock, call log, injected failures and delays, webhook outbox."""

    def __init__(self, name: str, webhook_url: str | None) -> None:
        self.app = Flask(name)
        self.webhook_url = webhook_url
        self.calls: list[Call] = []
        self.call_times: list[float] = []  # arrival time of each entry of ``calls``
        self.outbox: list[Webhook] = []
        self._lock = threading.Lock()
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._delays: list[float] = []
        self._in_flight = 0
        self._random_faults: tuple[random.Random, float, float] | None = None  # rng, P(5xx), P(429)
        self.faults_injected: dict[int, int] = {}  # status -> how many calls were answered with it
        # The platform's clock, for the times in its payloads (tests move it by hand).
        self.clock: Callable[[], float] = time.time
        # Called with (arrival time, call) for every authenticated API call, before any
        # injected fault: the demo prints them, bench/e2e.py times them.
        self.watchers: list[Callable[[float, Call], None]] = []
        self.app.before_request(self._gate)
        self.app.register_error_handler(HTTPException, self._http_error)

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        """The next ``n`` authenticated API calls answer ``status`` (still recorded in ``calls``)."""
        with self._lock:
            self._failures.extend([(status, dict(headers or {}))] * n)

    def timeout_next(self, n: int, seconds: float) -> None:
        """The next ``n`` authenticated API calls sleep ``seconds`` first, then proceed normally."""
        with self._lock:
            self._delays.extend([seconds] * n)

    def fail_randomly(self, seed: int, p_5xx: float, p_429: float) -> None:
        """From now on each authenticated API call answers a 5xx (500, 502 or 503) with
        probability ``p_5xx`` and a 429 with the platform's wait headers with probability
        ``p_429``; a seeded RNG, so a run's faults are reproducible in kind and number.
        ``p_5xx = p_429 = 0`` turns it off."""
        with self._lock:
            self._random_faults = (random.Random(seed), p_5xx, p_429) if p_5xx or p_429 else None

    def _throttled_headers(self, now: float) -> dict[str, str]:
        """The headers of a 429 telling the caller when to come back."""
        return {"Retry-After": "1"}

    def _random_fault(self, now: float) -> tuple[int, dict[str, str]] | None:
        """Draw this call's injected fault, if random faults are on (lock held)."""
        if self._random_faults is None:
            return None
        rng, p_5xx, p_429 = self._random_faults
        draw = rng.random()
        if draw < p_5xx:
            return rng.choice((500, 502, 503)), {}
        if draw < p_5xx + p_429:
            return 429, self._throttled_headers(now)
        return None

    def _authenticate(self) -> str | None:
        """Return why the current request is not authenticated, or None."""
        raise NotImplementedError

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        raise NotImplementedError

    def _gate(self) -> Response | None:
        """Before every request: authenticate, record, then apply an injected delay or failure."""
        arrived = g.arrived = time.time()
        problem = self._authenticate()
        if problem is not None:
            return self._error(401, problem)
        body = request.get_json(silent=True)
        call: Call = (request.method, request.path, body if isinstance(body, dict) else None)
        with self._lock:
            self.calls.append(call)
            self.call_times.append(arrived)
            delay = self._delays.pop(0) if self._delays else 0.0
            failure = self._failures.pop(0) if self._failures else self._random_fault(arrived)
            if failure is not None:
                self.faults_injected[failure[0]] = self.faults_injected.get(failure[0], 0) + 1
        for watch in self.watchers:
            watch(arrived, call)
        if delay:
            time.sleep(delay)
        if failure is not None:
            return self._error(failure[0], f"injected failure (HTTP {failure[0]})", failure[1])
        return None

    def _http_error(self, exc: HTTPException) -> Response:
        return self._error(exc.code or 500, exc.description or exc.name)

    @property
    def deliveries_in_flight(self) -> int:
        """Webhooks handed to a delivery thread and not yet answered by the receiver."""
        with self._lock:
            return self._in_flight

    def _deliver(self, hook: Webhook | None) -> None:
        """POST a queued webhook to ``webhook_url`` in the background, ignoring errors."""
        if hook is None or self.webhook_url is None:
            return
        url, (headers, body) = self.webhook_url, hook

        def post() -> None:
            try:
                with contextlib.suppress(Exception):
                    _delivery_client().post(url, content=body, headers=headers)
            finally:
                with self._lock:
                    self._in_flight -= 1

        with self._lock:
            self._in_flight += 1
        _delivery_pool().submit(post)
