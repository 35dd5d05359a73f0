"""Start callsync's roles as child processes and stop them, for `run`, `demo`, e2e tests and benches."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

T = TypeVar("T")
CALLSYNC = [sys.executable, "-m", "worker.cli"]


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path | None = None

    def alive(self) -> bool:
        return self.process.poll() is None


def clean_environment() -> dict[str, str]:
    """This process's environment without any callsync, platform or Redis setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CALLSYNC_", "STREAM_", "HMS_", "REDIS_URL"))}


_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1 (the kernel's choice, so concurrent runs differ),
    never one this process was handed before: the kernel may offer a closed port again before
    the process it was meant for has bound it."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no fresh free port on 127.0.0.1")


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path | None = None, cwd: Path | None = None) -> Child:
    """Start `argv` in its own process group (so its pool children stop with it), in `cwd`
    when given; output to `log_dir/<name>.log` when given, else to ours."""
    log = log_dir / f"{name}.log" if log_dir else None
    out: IO[bytes] | None = log.open("ab") if log else None
    try:
        process = subprocess.Popen(  # noqa: S603 - our own command line
            list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True, cwd=cwd
        )
    finally:
        if out is not None:
            out.close()
    return Child(name, process, log)


def stop(children: Sequence[Child], timeout: float = 15.0) -> None:
    """SIGTERM every child's process group, wait, then SIGKILL whatever is left."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(max(deadline - time.monotonic(), 0.1))
    for child in children:
        _signal_group(child, signal.SIGKILL)  # the leader may be gone while pool children linger
        if child.alive():
            child.process.wait(5)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)


def wait_for(condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


def http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def role_argv(role: str, *extra: Any) -> list[str]:
    return [*CALLSYNC, role, *(str(arg) for arg in extra)]
