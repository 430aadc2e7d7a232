"""The object container: every stored object is `payload || header || u32 len(header) || MAGIC`.

The header is a small deterministic JSON object that makes the object self-describing:
format version, codec, dtype, shape, raw size, SHA-256 of the raw (decoded) content, codec
parameters and, for deltas, the base object id. It is a *trailer* so that an object can be
written in one streaming pass (the raw hash is only known once all content has been seen) while
its LFS object id (SHA-256 of all of its bytes) is computed on the way.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field, replace
from typing import Any

from git_theta_like.errors import ObjectCorruptError

MAGIC = b"GTL\x01"
TRAILER = struct.Struct("<I4s")
MAX_HEADER = 1 << 20
VERSION = 1


@dataclass(frozen=True)
class ObjectHeader:
    codec: str
    dtype: str
    shape: tuple[int, ...]
    size: int  # bytes of raw content
    raw: str  # sha256 hex of the raw content
    params: dict[str, Any] = field(default_factory=dict)  # codec parameters (chunk size, ...)
    base: str | None = None  # object id this object is a delta against

    def to_bytes(self) -> bytes:
        doc: dict[str, Any] = {
            "v": VERSION,
            "codec": self.codec,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "size": self.size,
            "raw": self.raw,
        }
        if self.params:
            doc["params"] = self.params
        if self.base:
            doc["base"] = self.base
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def trailer(self) -> bytes:
        h = self.to_bytes()
        return h + TRAILER.pack(len(h), MAGIC)

    @classmethod
    def from_bytes(cls, data: bytes, oid: str = "?") -> ObjectHeader:
        """Parse a header, checking the type and range of every field: whatever the bytes are,
        the result is a well-formed header or an ObjectCorruptError (never another exception)."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as e:  # ValueError covers UnicodeDecodeError
            raise ObjectCorruptError(f"object {oid}: malformed header ({str(e)[:100]})") from None
        if not isinstance(doc, dict):
            raise ObjectCorruptError(f"object {oid}: malformed header (not a JSON object)")
        if doc.get("v") != VERSION or isinstance(doc.get("v"), bool):
            raise ObjectCorruptError(f"object {oid}: unsupported object version {_show(doc.get('v'))}")

        def bad(what: str) -> ObjectCorruptError:
            return ObjectCorruptError(f"object {oid}: malformed header ({what})")

        codec, dtype, raw = doc.get("codec"), doc.get("dtype"), doc.get("raw")
        if not isinstance(codec, str) or not 0 < len(codec) <= 64:
            raise bad(f"codec {_show(codec)}")
        if not isinstance(dtype, str) or not 0 < len(dtype) <= 64:
            raise bad(f"dtype {_show(dtype)}")
        if not isinstance(raw, str) or not _HEX64.fullmatch(raw):
            raise bad(f"raw hash {_show(raw)} is not 64 lowercase hex digits")
        size = doc.get("size")
        if not _is_count(size):
            raise bad(f"size {_show(size)} is not an integer in [0, 2^63)")
        shape = doc.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_count(d) for d in shape):
            raise bad(f"shape {_show(shape)} is not a list of at most {MAX_DIMS} sizes")
        params = doc.get("params", {})
        if not isinstance(params, dict) or len(params) > MAX_PARAMS:
            raise bad(f"params {_show(params)} is not an object of at most {MAX_PARAMS} integers")
        for k, v in params.items():
            if not isinstance(v, int) or isinstance(v, bool) or abs(v) >= LIMIT:
                raise bad(f"params {_show(k)}: {_show(v)} is not an integer")
        base = doc.get("base")
        if base is not None and (not isinstance(base, str) or not _HEX64.fullmatch(base)):
            raise bad(f"base {_show(base)} is not an object id (64 lowercase hex digits)")
        assert isinstance(size, int)
        return cls(codec, dtype, tuple(shape), size, raw, params, base)


LIMIT = 1 << 63  # every size and count in a header is below this
MAX_DIMS = 64  # dimensions of a shape
MAX_PARAMS = 64  # codec parameters
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < LIMIT


def _show(v: object) -> str:
    """A short, printable rendering of a header value for a message."""
    text = ascii(v)
    return text if len(text) <= 40 else text[:37] + "..."


def split_object(data: bytes | memoryview, oid: str = "?") -> tuple[ObjectHeader, memoryview]:
    """Header and payload of a whole object held in memory."""
    mv = memoryview(data)
    if len(mv) < TRAILER.size:
        raise ObjectCorruptError(f"object {oid}: too short to be an object ({len(mv)} bytes)")
    hlen, magic = TRAILER.unpack(mv[-TRAILER.size :])
    if magic != MAGIC or hlen > MAX_HEADER or hlen > len(mv) - TRAILER.size:
        raise ObjectCorruptError(f"object {oid}: not a git-theta-like object (bad trailer)")
    end = len(mv) - TRAILER.size
    header = ObjectHeader.from_bytes(bytes(mv[end - hlen : end]), oid)
    return header, mv[: end - hlen]


@dataclass
class Encoded:
    """An object about to be written: its header and its payload parts, in order."""

    header: ObjectHeader
    parts: list[bytes | bytearray | memoryview]

    @property
    def payload_size(self) -> int:
        return sum(len(p) for p in self.parts)

    @property
    def stored_size(self) -> int:
        """Bytes of the object once written: payload and trailer (the LFS object's size)."""
        return self.payload_size + len(self.header.trailer())

    def with_chain_bytes(self, below: int) -> Encoded:
        """This delta with `params.chain_bytes` set: `below` (the stored bytes of its base's whole
        chain) plus its own stored size, that very param included (a fixed point: the number's
        digits are part of the header it measures)."""
        total = below + self.payload_size
        for _ in range(8):  # the size grows with the digits of the number: a few steps at most
            header = replace(self.header, params={**self.header.params, CHAIN_BYTES: total})
            now = below + self.payload_size + len(header.trailer())
            if now == total:
                return Encoded(header, self.parts)
            total = now
        raise AssertionError("chain_bytes did not settle")  # pragma: no cover: cannot happen


CHAIN_BYTES = "chain_bytes"  # header param: stored bytes of a delta and all of its chain


def recorded_chain_bytes(header: ObjectHeader, stored: int) -> int | None:
    """The chain bytes a delta's header records, if plausible for an object of `stored` bytes:
    more than the object itself (its base costs something). None when absent or implausible
    (objects written before the param existed, or a header that lies about it)."""
    value = header.params.get(CHAIN_BYTES)
    if not header.base or not isinstance(value, int) or not stored < value < LIMIT:
        return None
    return value
