#!/usr/bin/env python3
"""Set-up and run in one command, on a machine with only Python 3.11+ and git.

    python3 dev.py run    # the service: receiver, worker and scheduler on an embedded Redis
    python3 dev.py test   # the test suite

Both create `.venv` and install the project into it on first use (and again whenever
pyproject.toml changes); any further arguments are passed on to `callsync run` or pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".callsync-installed"


def ensure_environment() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"callsync needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    if not (BIN / "python").exists():
        print("dev.py: creating .venv", flush=True)
        venv.create(VENV, with_pip=True)
    print("dev.py: installing callsync and its development tools into .venv", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "-e", f"{ROOT}[dev]"], check=True, cwd=ROOT)
    STAMP.write_text(wanted)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("run", "test"):
        sys.exit(__doc__)
    ensure_environment()
    command, rest = sys.argv[1], sys.argv[2:]
    argv = [str(BIN / "callsync"), "run", *rest] if command == "run" else [str(BIN / "python"), "-m", "pytest", *rest]
    os.chdir(ROOT)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
