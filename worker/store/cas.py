"""The store's one way to read-modify-write a record (docs/design.md): read the hash, let the
core decide, then write with lua/compare_and_set.lua, which lands only if the hash still holds
exactly what was read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.store import scripts
from worker.store.codec import Raw
from worker.store.scripts import Script

_COMPARE_AND_SET = Script.named("compare_and_set")

Command = tuple[Any, ...]  # a Redis command run by compare_and_set.lua with the write
KEEP_TTL, NO_TTL = 0, -1  # compare_and_set.lua's TTL argument besides seconds


def compare_and_set(
    key: str, read: Raw, new: Mapping[Any, Any] | None, ttl: int = KEEP_TTL, commands: Sequence[Command] = ()
) -> scripts.ScriptCall:
    """Write `new` (None: leave the hash) and run `commands` if `key` still holds `read`; to run
    with `scripts.run`, its result read by `written`."""
    args: list[Any] = [len(read)]
    for field_, value in read.items():
        args += [field_, value]
    if new is None:
        args.append(-1)
    else:
        args.append(len(new))
        for field_, value in new.items():
            args += [field_, value]
    args.append(ttl)
    for command in commands:
        args += [len(command), *command]
    return (_COMPARE_AND_SET, [key], args)


def written(result: Any) -> bool:
    """Whether a compare_and_set call found its record as read, and wrote."""
    return isinstance(result, list) and result[:1] == [1]
