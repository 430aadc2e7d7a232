"""The object container: every stored object is `payload || header || u32 len(header) || MAGIC`.

The header is a small deterministic JSON object that makes the object self-describing:
format version, codec, dtype, shape, raw size, SHA-256 of the raw (decoded) content, codec
parameters and, for deltas, the base object id. It is a *trailer* so that an object can be
written in one streaming pass (the raw hash is only known once all content has been seen) while
its LFS object id (SHA-256 of all of its bytes) is computed on the way.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
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
        try:
            doc = json.loads(data)
            if doc.get("v") != VERSION:
                raise ObjectCorruptError(f"object {oid}: unsupported object version {doc.get('v')}")
            shape = tuple(int(d) for d in doc["shape"])
            size, raw = int(doc["size"]), str(doc["raw"])
            codec, dtype = str(doc["codec"]), str(doc["dtype"])
            params = doc.get("params", {})
            base = doc.get("base")
        except ObjectCorruptError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ObjectCorruptError(f"object {oid}: malformed header ({e})") from None
        if len(raw) != 64 or size < 0 or not isinstance(params, dict):
            raise ObjectCorruptError(f"object {oid}: malformed header")
        return cls(codec, dtype, shape, size, raw, params, base)


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
