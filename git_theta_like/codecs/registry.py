"""The one registry of codecs: name -> module. A codec module has `NAME`, `IS_DELTA` and
`decode(header, payload, base)` (base: the base object's elements, for deltas); keyframe codecs
also have `iter_decode(header, read)` for bounded-memory streaming. To add a codec, write its
module and list it here; the chooser (chooser.py) decides when it is used."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import zstandard

from git_theta_like.codecs import exponent, lowrank, planes, raw, sparse, subtract, xor
from git_theta_like.codecs.bits import elements
from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.errors import ObjectCorruptError

CODECS: dict[str, ModuleType] = {m.NAME: m for m in (raw, planes, exponent, xor, subtract, sparse, lowrank)}
DELTA_CODECS = frozenset(name for name, m in CODECS.items() if m.IS_DELTA)

_DECODE_ERRORS = (ValueError, TypeError, KeyError, IndexError, OverflowError, zstandard.ZstdError)


def is_delta(codec: str) -> bool:
    return codec in DELTA_CODECS


def check_payload(header: ObjectHeader, payload_len: int, oid: str = "?") -> None:
    """Refuse a keyframe header that claims more raw bytes than its payload can hold (a size
    lie costs nothing: it is caught before anything is allocated). Deltas are bounded by their
    base instead."""
    codec = CODECS.get(header.codec)
    if codec is None:
        raise ObjectCorruptError(f"object {oid}: unknown codec {header.codec!r}")
    bound = getattr(codec, "max_raw", None)
    if bound is not None and header.size > bound(payload_len):
        raise ObjectCorruptError(
            f"object {oid}: its header claims {header.size} raw bytes, more than its "
            f"{payload_len}-byte {header.codec} payload can hold"
        )


def decode(
    header: ObjectHeader,
    payload: memoryview,
    oid: str = "?",
    base: bytes | bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """The raw bytes of an object (not yet verified against header.raw: the store does that).

    Delta objects need `base`, the raw bytes of their base object.
    """
    codec = CODECS.get(header.codec)
    if codec is None:
        raise ObjectCorruptError(f"object {oid}: unknown codec {header.codec!r}")
    check_payload(header, len(payload), oid)
    try:
        if not codec.IS_DELTA:
            return codec.decode(header, payload)  # type: ignore[no-any-return]
        if base is None:
            raise ValueError(f"a {header.codec} delta needs its base object {header.base}")
        b = elements(base, header.dtype)
        if b.nbytes != header.size:
            raise ValueError("the base object has a different size")
        return codec.decode(header, payload, b)  # type: ignore[no-any-return]
    except _DECODE_ERRORS as e:
        raise ObjectCorruptError(f"object {oid}: cannot decode {header.codec} payload: {e}") from None


def iter_decode(header: ObjectHeader, read: Callable[[int], bytes], oid: str = "?") -> Iterator[bytes]:
    """Decode a keyframe object's payload chunk by chunk from a sequential reader."""
    codec = CODECS.get(header.codec)
    if codec is None or not hasattr(codec, "iter_decode"):
        raise ObjectCorruptError(f"object {oid}: unknown codec {header.codec!r}")
    try:
        yield from codec.iter_decode(header, read)
    except _DECODE_ERRORS as e:
        raise ObjectCorruptError(f"object {oid}: cannot decode {header.codec} payload: {e}") from None
