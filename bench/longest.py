"""The longest functions in worker/ and webhooks/ (and module and line counts).

Run: python bench/longest.py [N]   (default N = 10)
A function's length is end_lineno - lineno + 1 (decorators excluded). Nested
functions count on their own and inside their parent.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("worker", "webhooks")


def functions(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
            found.append((length, where))
    return found


def main() -> None:
    most = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    found: list[tuple[int, str]] = []
    for package in PACKAGES:
        files = sorted((ROOT / package).rglob("*.py"))
        lines = sum(len(f.read_text().splitlines()) for f in files)
        print(f"{package}/: {len(files)} modules, {lines} lines")
        for f in files:
            found.extend(functions(f))
    print(f"the {most} longest functions:")
    for length, where in sorted(found, reverse=True)[:most]:
        print(f"{length:5d}  {where}")


if __name__ == "__main__":
    main()
