"""Tasks that could not be done: kept with what operators need to decide and replay."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, cast

import redis

from worker.logs import scrub
from worker.store.keys import DEAD_LETTER_INDEX, DEAD_LETTER_RECORDS

MAX_KEPT = 100_000


@dataclass(frozen=True)
class DeadLetter:
    id: str
    task: str
    args: list[Any]
    error: str
    attempts: int
    failed_at: float  # unix seconds of the last, failed attempt
    task_id: str | None = None  # Celery's id of the last attempt (Flower, logs)


class DeadLetters:
    def __init__(self, client: redis.Redis, secrets: Iterable[str] = ()):
        self.redis = client
        self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def add(self, task: str, args: list[Any], error: str, attempts: int, now: float, task_id: str | None = None) -> DeadLetter:
        """Keep a failed task. Its arguments are ids and parsed events (no secrets by
        construction); the error text, which may quote a platform's message, is scrubbed of
        the configured secrets and anything token-shaped (before it is cut short, so no part
        of a secret stays)."""
        letter = DeadLetter(str(uuid.uuid4()), task, args, scrub(error, self._secrets)[:500], attempts, now, task_id)
        pipe = self.redis.pipeline()
        pipe.hset(DEAD_LETTER_RECORDS, letter.id, json.dumps(asdict(letter)))
        pipe.zadd(DEAD_LETTER_INDEX, {letter.id: now})
        pipe.execute()
        self._trim()
        return letter

    def _trim(self) -> None:
        excess = self.redis.zcard(DEAD_LETTER_INDEX) - MAX_KEPT
        if excess > 0:
            oldest = self.redis.zrange(DEAD_LETTER_INDEX, 0, excess - 1)
            self.redis.hdel(DEAD_LETTER_RECORDS, *oldest)
            self.redis.zrem(DEAD_LETTER_INDEX, *oldest)

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """The `limit` oldest letters; `limit` < 1 is an error (ZRANGE 0 -1 would be all of them)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        ids = cast(list[bytes], self.redis.zrange(DEAD_LETTER_INDEX, 0, limit - 1))
        raws = self.redis.hmget(DEAD_LETTER_RECORDS, ids) if ids else []
        return [DeadLetter(**json.loads(raw)) for raw in raws if raw]

    def get(self, letter_id: str) -> DeadLetter | None:
        raw = self.redis.hget(DEAD_LETTER_RECORDS, letter_id)
        return DeadLetter(**json.loads(raw)) if raw else None

    def remove(self, letter_id: str) -> bool:
        pipe = self.redis.pipeline()
        pipe.hdel(DEAD_LETTER_RECORDS, letter_id)
        pipe.zrem(DEAD_LETTER_INDEX, letter_id)
        return bool(pipe.execute()[0])

    def count(self) -> int:
        return int(self.redis.zcard(DEAD_LETTER_INDEX))

    def purge(self) -> int:
        count = self.count()
        self.redis.delete(DEAD_LETTER_RECORDS, DEAD_LETTER_INDEX)
        return count
