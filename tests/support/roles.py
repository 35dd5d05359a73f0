"""callsync's roles as real processes for end-to-end tests: the Procfile's commands, the
environment that points them at the stand-ins and a Redis, and one way to wait."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from standins import Platforms
from worker.cli import launch

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    """Poll until `condition()` is truthy and return it; fail naming `what` after `timeout` s."""
    return launch.wait_for(condition, timeout, what)


def procfile(port: int | None = None) -> dict[str, list[str]]:
    """The Procfile's roles as argv lists, `callsync` resolved to this environment's script and
    `$PORT` to `port` when given."""
    script = Path(sys.executable).parent / "callsync"
    roles = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if command.strip():
            argv = shlex.split(command)
            argv = [str(script), *argv[1:]] if argv[0] == "callsync" and script.exists() else argv
            roles[name.strip()] = [arg.replace("$PORT", str(port)) for arg in argv] if port is not None else argv
    return roles


def environment(platforms: Platforms, redis_url: str, **settings: object) -> dict[str, str]:
    """A clean environment for a role: Redis, the stand-ins, unbuffered output, and `settings`."""
    return {
        **launch.clean_environment(),
        "REDIS_URL": redis_url,
        **platforms.settings(),
        "PYTHONUNBUFFERED": "1",
        **{name: str(value) for name, value in settings.items()},
    }


def start_roles(env: dict[str, str], logs: Path, port: int, *worker_args: object) -> list[launch.Child]:
    """web (on `port`, loopback only), worker and beat as real processes, logging under `logs`."""
    return [
        launch.start("web", launch.role_argv("web", "--port", port, "--host", "127.0.0.1"), env, logs),
        launch.start("worker", launch.role_argv("worker", *worker_args), env, logs),
        launch.start("beat", launch.role_argv("beat"), env, logs),
    ]
