"""Lua programs (worker/store/lua/*.lua), alone or several in one pipelined round trip.

`Script.named` is the one way a program is loaded. redis-py's own `Script` costs an extra
SCRIPT EXISTS round trip per call inside a pipeline. Calls of one script are sent as EVALSHA,
and the script is loaded when Redis answers NOSCRIPT (a restarted or flushed Redis forgets its
scripts): such a call ran nothing, so running it again after the load is safe whatever the
script does. A batch of several scripts is sent as EVAL, so it always runs whole and in order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError


class Script:
    def __init__(self, source: str):
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    @staticmethod
    @cache
    def named(name: str, library: str | None = None) -> Script:
        """The program in worker/store/lua/<name>.lua (package data), after `library`'s
        functions (another file there) when given: Redis scripts cannot include one another."""

        def text(file: str) -> str:
            return resources.files("worker.store").joinpath("lua", f"{file}.lua").read_text(encoding="utf-8")

        return Script((text(library) + "\n" if library else "") + text(name))

    def __call__(self, client: redis.Redis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        [result] = run(client, [(self, keys, args)])
        if isinstance(result, Exception):
            raise result
        return result


ScriptCall = tuple[Script, Sequence[str], Sequence[Any]]


def run(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Run `calls` in one pipelined round trip (not a transaction); a call's error is its result.

    Raises redis.RedisError only when the round trip itself fails (connection lost).
    """
    if len({script.sha for script, _, _ in calls}) > 1:
        # Several scripts: EVAL with the source (Redis caches it all the same), so a Redis that
        # forgot some scripts cannot run part of the batch now and the rest after a reload,
        # out of order (a lock released before the record it guards is written).
        return _send(client, calls, by_source=True)
    results = _send(client, calls)
    missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
    if missing:
        for script in {calls[i][0].sha: calls[i][0] for i in missing}.values():
            client.script_load(script.source)
        for i, result in zip(missing, _send(client, [calls[i] for i in missing]), strict=True):
            results[i] = result
    return results


def _send(client: redis.Redis, calls: Sequence[ScriptCall], by_source: bool = False) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        if by_source:
            pipe.eval(script.source, len(keys), *keys, *args)
        else:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
    return list(pipe.execute(raise_on_error=False))
