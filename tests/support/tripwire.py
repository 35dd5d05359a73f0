"""Secrets and signatures that fail a test when compared by value.

`==`, `in`, `startswith` and their kin stop at the first differing byte, so their time tells an
attacker how much of a guess was right; `hmac.compare_digest` reads both buffers whole and never
calls these methods. A `SecretText` stays one through the text methods a verifier applies
(strip, lower, ...), turns into `SecretBytes` when encoded (and records that it was), and both
raise `ComparedByValue` from every comparison Python would run in Python code.
"""

from __future__ import annotations

from typing import Any


class ComparedByValue(AssertionError):
    """A secret or signature was compared with a short-circuiting operation."""


def _refuse(name: str) -> Any:
    def refuse(self: object, *args: object, **kwargs: object) -> object:
        raise ComparedByValue(f"{name} on a secret or signature: not constant-time")

    return refuse


_COMPARISONS = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__contains__")
_SEARCHES = ("startswith", "endswith", "find", "rfind", "index", "rindex", "count")


class SecretBytes(bytes):
    __hash__ = bytes.__hash__


class SecretText(str):
    """Text for a header value or a configured secret; `encoded` counts its encodings."""

    encoded: list[str]

    def __new__(cls, value: str, encoded: list[str] | None = None) -> SecretText:
        text = super().__new__(cls, value)
        text.encoded = encoded if encoded is not None else []
        return text

    __hash__ = str.__hash__

    def _same(self, value: str) -> SecretText:
        return SecretText(value, self.encoded)

    def strip(self, chars: str | None = None) -> SecretText:
        return self._same(str.strip(self, chars))

    def lstrip(self, chars: str | None = None) -> SecretText:
        return self._same(str.lstrip(self, chars))

    def rstrip(self, chars: str | None = None) -> SecretText:
        return self._same(str.rstrip(self, chars))

    def lower(self) -> SecretText:
        return self._same(str.lower(self))

    def upper(self) -> SecretText:
        return self._same(str.upper(self))

    def casefold(self) -> SecretText:
        return self._same(str.casefold(self))

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> SecretBytes:
        self.encoded.append(str(self))
        return SecretBytes(str.encode(self, encoding, errors))

    def __str__(self) -> str:  # plain text: what the test itself compares
        return str.__str__(self)


for _kind in (SecretBytes, SecretText):
    for _method in (*_COMPARISONS, *_SEARCHES):
        setattr(_kind, _method, _refuse(f"{_kind.__bases__[0].__name__}.{_method}"))
