"""Lossless tensor encodings and the chooser.

`encode` turns a tensor's raw bytes into an object (header + payload parts); `decode` turns an
object back into the exact raw bytes. Codecs: `planes` (byte-grouped + zstd) and `raw`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from git_theta_like import dtypes
from git_theta_like.codecs import planes
from git_theta_like.codecs.container import ObjectHeader, split_object
from git_theta_like.errors import ObjectCorruptError

MapFn = Callable[[Callable[[memoryview], bytes], Iterable[memoryview]], Iterator[bytes]]

RAW = "raw"
PLANES = "planes"


@dataclass
class Encoded:
    header: ObjectHeader
    parts: list[bytes | bytearray | memoryview]  # payload, in order

    @property
    def payload_size(self) -> int:
        return sum(len(p) for p in self.parts)


def encode(
    raw: bytes | bytearray | memoryview,
    dtype: str,
    shape: tuple[int, ...],
    raw_hash: str,
    map_fn: MapFn = map,
) -> Encoded:
    """The smallest lossless encoding of raw among the codecs available (planes, raw).

    `map_fn` maps the per-chunk encoder over the chunks: pass an executor's map to spread one
    large tensor over several cores.
    """
    mv = memoryview(raw).cast("B")
    size = len(mv)
    width = planes.plane_width(size, dtypes.itemsize(dtype))
    bounds = planes.chunk_bounds(size, width)
    chunks = list(map_fn(lambda b: planes.encode_chunk(b, width), (mv[s:e] for s, e in bounds)))
    if sum(len(c) for c in chunks) < size:
        params = {"chunk": bounds[0][1] - bounds[0][0], "width": width}
        return Encoded(ObjectHeader(PLANES, dtype, shape, size, raw_hash, params), list(chunks))
    return Encoded(ObjectHeader(RAW, dtype, shape, size, raw_hash), [mv])


def decode(header: ObjectHeader, payload: memoryview, oid: str = "?") -> bytearray | memoryview:
    """The raw bytes of an object (not yet verified against header.raw: the store does that)."""
    try:
        if header.codec == RAW:
            if len(payload) != header.size:
                raise ValueError(f"raw payload has {len(payload)} bytes, expected {header.size}")
            return payload
        if header.codec == PLANES:
            return _decode_planes(header, payload)
    except (ValueError, TypeError, KeyError) as e:
        raise ObjectCorruptError(f"object {oid}: cannot decode {header.codec} payload: {e}") from None
    raise ObjectCorruptError(f"object {oid}: unknown codec {header.codec!r}")


def iter_decode(header: ObjectHeader, read: Callable[[int], bytes], oid: str = "?") -> Iterator[bytes]:
    """Decode an object's payload chunk by chunk from a sequential reader (bounded memory)."""
    try:
        if header.codec == RAW:
            left = header.size
            while left:
                data = read(min(left, planes.CHUNK))
                if not data:
                    raise ValueError("payload ends early")
                left -= len(data)
                yield data
            return
        if header.codec != PLANES:
            raise ObjectCorruptError(f"object {oid}: unknown codec {header.codec!r}")
        chunk, width = int(header.params["chunk"]), int(header.params["width"])
        if width < 1 or chunk < width or chunk % width:
            raise ValueError(f"bad planes parameters chunk={chunk} width={width}")
        for start in range(0, header.size, chunk):
            n = min(chunk, header.size - start)
            encoded = bytearray()
            for _ in range(width):
                head = read(planes.PLANE.size)
                if len(head) != planes.PLANE.size:
                    raise ValueError("payload ends inside a plane header")
                _, length = planes.PLANE.unpack(head)
                encoded += head
                encoded += read(length)
            out = bytearray(n)
            end = planes.decode_chunk(memoryview(encoded), 0, n, width, memoryview(out))
            if end != len(encoded):
                raise ValueError("payload ends inside a plane")
            yield bytes(out)
    except (ValueError, TypeError, KeyError) as e:
        raise ObjectCorruptError(f"object {oid}: cannot decode {header.codec} payload: {e}") from None


def _decode_planes(header: ObjectHeader, payload: memoryview) -> bytearray:
    chunk = int(header.params["chunk"])
    width = int(header.params["width"])
    if width < 1 or chunk < width or chunk % width:
        raise ValueError(f"bad planes parameters chunk={chunk} width={width}")
    out = bytearray(header.size)  # every byte is written below
    omv = memoryview(out)
    pos = 0
    for start in range(0, header.size, chunk):
        n = min(chunk, header.size - start)
        pos = planes.decode_chunk(payload, pos, n, width, omv[start : start + n])
    if pos != len(payload):
        raise ValueError(f"{len(payload) - pos} unexpected bytes after the last chunk")
    return out


__all__ = ["Encoded", "ObjectHeader", "decode", "encode", "iter_decode", "split_object"]
