"""Read a request body within a hard limit, inflating gzip without ever exceeding it."""

from __future__ import annotations

import zlib
from typing import IO

CHUNK = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"


class BodyTooLarge(Exception):
    """The body, once inflated, exceeds CALLSYNC_MAX_BODY_BYTES (HTTP 413)."""


class BadBody(Exception):
    """The body claims gzip but does not inflate (HTTP 400)."""


def read_limited(stream: IO[bytes], limit: int, declared_length: int | None) -> bytes:
    """Read at most `limit` bytes from `stream`; BodyTooLarge if there is more."""
    if declared_length is not None and declared_length > limit:
        raise BodyTooLarge()
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge()
    return data


def inflate_limited(data: bytes, limit: int) -> bytes:
    """`data` itself, or its gzip inflation when it starts with the gzip magic bytes.

    Stream signs the uncompressed JSON and stream-chat-js detects gzip by magic bytes,
    not by Content-Encoding, so we do the same. Inflation stops at `limit` + 1 bytes,
    so a gzip bomb costs at most that much memory.
    """
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit:
            raise BodyTooLarge()
        if not inflater.eof:
            if inflater.unconsumed_tail:
                raise BodyTooLarge()
            raise BadBody("truncated gzip body")
    except zlib.error:
        raise BadBody("body is not valid gzip") from None
    return out
