"""What a running `callsync run` leaves in `.callsync/run.json`, so that `status`,
`dead-letters` and `send` in the same checkout find its Redis and its receiver without
any setting (its embedded Redis takes whatever port is free, so no fixed URL would do)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

NAME = Path(".callsync") / "run.json"


@dataclass(frozen=True)
class RunRecord:
    pid: int
    redis_url: str
    receiver_url: str
    path: Path

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process by that pid: alive, not ours to judge
            return True
        return True


def write(directory: Path, redis_url: str, receiver_url: str) -> Path:
    """Record this process's run in `directory/.callsync/run.json`, readable by its owner only
    (a given REDIS_URL may carry a password)."""
    path = directory / NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"pid": os.getpid(), "redis_url": redis_url, "receiver_url": receiver_url})
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)
    path.with_suffix(".tmp").replace(path)
    return path


def remove(path: Path) -> None:
    """Forget the run, if the record is still this process's."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(path.read_text())["pid"] == os.getpid():
            path.unlink()


def candidates(start: Path) -> list[Path]:
    """Where a record is looked for: `start` and each folder above it."""
    start = start.resolve()
    return [folder / NAME for folder in (start, *start.parents)]


def find(start: Path) -> tuple[RunRecord | None, list[Path]]:
    """The nearest record of a run that is still going, and every record found stale on the way."""
    stale: list[Path] = []
    for path in candidates(start):
        try:
            raw = json.loads(path.read_text())
            record = RunRecord(int(raw["pid"]), str(raw["redis_url"]), str(raw["receiver_url"]), path)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.alive():
            return record, stale
        stale.append(path)
    return None, stale
