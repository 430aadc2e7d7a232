"""Lossless tensor encodings and the chooser.

`encode` turns a tensor's raw bytes into an object (header + payload parts); `encode_delta`
does the same against a base (the tensor's previous version), choosing the smallest of the
delta codecs; `decode` turns an object back into the exact raw bytes. Codecs: `planes`
(byte-grouped + zstd), `raw`, and the deltas `xor`, `sparse`, `lowrank` (see delta.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import zstandard

from git_theta_like import dtypes
from git_theta_like.codecs import delta, planes
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


@dataclass
class DeltaOptions:
    """How hard the chooser tries: lowrank probes are skipped once `svd_seconds` is spent."""

    lowrank: bool = True
    max_rank: int = 64
    svd_seconds: float = 30.0
    spent: float = 0.0


def encode_delta(
    raw: bytes | bytearray | memoryview,
    base_raw: bytes | bytearray | memoryview,
    dtype: str,
    shape: tuple[int, ...],
    raw_hash: str,
    base_oid: str,
    depth: int,
    options: DeltaOptions | None = None,
    factors: tuple[object, object] | None = None,
) -> Encoded:
    """The smallest encoding of raw: a delta against base_raw (xor, sparse, lowrank) or planes.

    Cheap probes first (how many elements changed); the SVD only runs for dense changes of a
    2-D float tensor whose xor delta is still large. `factors` (u, v), e.g. from a LoRA
    adapter, replace the SVD.
    """
    import time

    opts = options or DeltaOptions()
    new = delta.elements(raw, dtype)
    base = delta.elements(base_raw, dtype)
    size = len(memoryview(raw).cast("B"))
    params = {"depth": depth}
    candidates: list[tuple[int, str, list[bytes], dict[str, int]]] = []
    diff = np.bitwise_xor(new, base)
    frac = np.count_nonzero(diff) / max(1, new.size)
    if frac <= 0.3:
        p = delta.encode_sparse(new, base, np.flatnonzero(diff))
        candidates.append((len(p), delta.SPARSE, [p], {}))
    if frac > 0.02:
        p = delta.encode_xor(new, base)
        candidates.append((len(p), delta.XOR, [p], {}))
    shape2d = delta.shape_2d(shape)
    best = min(c[0] for c in candidates)
    if factors is not None and (
        shape2d is None
        or getattr(factors[0], "shape", None) is None
        or factors[0].shape[0] != shape2d[0]  # type: ignore[attr-defined]
        or factors[1].shape[1] != shape2d[1]  # type: ignore[attr-defined]
    ):
        factors = None  # an adapter for another shape: ignore it
    if (
        shape2d is not None
        and dtype in delta.LOWRANK_DTYPES
        and (factors is not None or (frac > 0.3 and best > size // 10))
        and (factors is not None or (opts.lowrank and opts.spent < opts.svd_seconds))
    ):
        t = time.perf_counter()
        uv = factors
        if uv is None and delta.lowrank_plausible(new, base, dtype, shape2d, opts.max_rank):
            uv = delta.lowrank_probe(new, base, dtype, shape2d, opts.max_rank)
        if uv is not None:
            p, extra = delta.encode_lowrank(new, base, dtype, shape2d, uv[0], uv[1])  # type: ignore[arg-type]
            candidates.append((len(p), delta.LOWRANK, [p], extra))
        opts.spent += time.perf_counter() - t
    size_, codec, parts, extra = min(candidates, key=lambda c: c[0])
    if size_ >= size * 0.9:  # the delta hardly helps: store the tensor on its own (a keyframe)
        plain = encode(raw, dtype, shape, raw_hash)
        if plain.payload_size <= size_:
            return plain
    header = ObjectHeader(codec, dtype, shape, size, raw_hash, {**params, **extra}, base_oid)
    return Encoded(header, list(parts))


def decode(
    header: ObjectHeader,
    payload: memoryview,
    oid: str = "?",
    base: bytes | bytearray | memoryview | None = None,
) -> bytearray | memoryview:
    """The raw bytes of an object (not yet verified against header.raw: the store does that).

    Delta objects need `base`, the raw bytes of their base object.
    """
    try:
        if header.codec in (delta.XOR, delta.SPARSE, delta.LOWRANK):
            if base is None:
                raise ValueError(f"a {header.codec} delta needs its base object {header.base}")
            b = delta.elements(base, header.dtype)
            if b.nbytes != header.size:
                raise ValueError("the base object has a different size")
            if header.codec == delta.XOR:
                return delta.decode_xor(payload, b)
            if header.codec == delta.SPARSE:
                return delta.decode_sparse(payload, b)
            return delta.decode_lowrank(payload, b, header.dtype, header.params)
        if header.codec == RAW:
            if len(payload) != header.size:
                raise ValueError(f"raw payload has {len(payload)} bytes, expected {header.size}")
            return payload
        if header.codec == PLANES:
            return _decode_planes(header, payload)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, zstandard.ZstdError) as e:
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
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, zstandard.ZstdError) as e:
        raise ObjectCorruptError(f"object {oid}: cannot decode {header.codec} payload: {e}") from None


def _decode_planes(header: ObjectHeader, payload: memoryview) -> bytearray:
    chunk = int(header.params["chunk"])
    width = int(header.params["width"])
    if width < 1 or chunk < width or chunk % width:
        raise ValueError(f"bad planes parameters chunk={chunk} width={width}")
    # every chunk holds at least `width` plane headers: a size the payload cannot hold is a lie
    chunks = -(-header.size // chunk)
    if chunks * width * planes.PLANE.size > len(payload):
        raise ValueError(f"a {len(payload)}-byte payload cannot hold {header.size} raw bytes")
    out = bytearray(header.size)  # every byte is written below
    omv = memoryview(out)
    pos = 0
    for start in range(0, header.size, chunk):
        n = min(chunk, header.size - start)
        pos = planes.decode_chunk(payload, pos, n, width, omv[start : start + n])
    if pos != len(payload):
        raise ValueError(f"{len(payload) - pos} unexpected bytes after the last chunk")
    return out


__all__ = [
    "DeltaOptions",
    "Encoded",
    "ObjectHeader",
    "decode",
    "encode",
    "encode_delta",
    "iter_decode",
    "split_object",
]
