"""The chooser: for each tensor, the smallest lossless encoding within a time budget.

`encode` picks the keyframe codec (exponent for F32 and BF16, planes for the rest, raw where
neither is smaller); `encode_delta` tries the delta codecs
against the tensor's previous version, cheap probes first (how many elements changed; sub or xor
for a dense change, from two samples), the SVD
only for dense changes of a 2-D float tensor whose xor delta is still large (or with factors
given, e.g. from a LoRA adapter), and falls back to a keyframe when no delta helps."""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from git_theta_like import dtypes
from git_theta_like.codecs import exponent, lowrank, planes, sparse, subtract, xor
from git_theta_like.codecs import raw as raw_codec
from git_theta_like.codecs.bits import elements
from git_theta_like.codecs.container import Encoded, ObjectHeader
from git_theta_like.codecs.planes import MapFn

EXPONENT_KEYFRAMES = frozenset({"F32", "BF16"})  # the dtypes whose keyframes are `exponent`


def encode(
    raw: bytes | bytearray | memoryview,
    dtype: str,
    shape: tuple[int, ...],
    raw_hash: str,
    map_fn: MapFn = map,
) -> Encoded:
    """The keyframe of raw: `exponent` for F32 and BF16, else `planes`; `raw` when that is
    not smaller.

    Measured on all-MiniLM-L6-v2 (`scripts/bench --sections codec`): exponent stores F32 in
    0.8185 of raw and BF16 in 0.6647 (planes: 0.8314, 0.6865), encodes faster and decodes at
    about the same speed on two cores; for F16 it is no smaller and encodes 3x slower, for F64 it
    is larger. `map_fn` maps the per-chunk encoder over the chunks: pass an executor's map to
    spread one large tensor over several cores.
    """
    mv = memoryview(raw).cast("B")
    size = len(mv)
    if dtype in EXPONENT_KEYFRAMES and (enc := exponent.encode_keyframe(mv, dtype, shape, raw_hash, map_fn)):
        return enc
    params, chunks = planes.encode(mv, dtypes.itemsize(dtype), map_fn)
    if sum(len(c) for c in chunks) < size:
        return Encoded(ObjectHeader(planes.NAME, dtype, shape, size, raw_hash, params), list(chunks))
    return Encoded(ObjectHeader(raw_codec.NAME, dtype, shape, size, raw_hash), [mv])


@dataclass
class DeltaOptions:
    """How hard the chooser tries: lowrank probes are skipped once `svd_seconds` is spent."""

    lowrank: bool = True
    max_rank: int = 64
    svd_seconds: float = 30.0
    spent: float = 0.0


PROBE_ELEMENTS = 1 << 15  # elements per sample when choosing between sub and xor
# A dense delta whose size, estimated from those samples, exceeds what the chain's cost bound
# leaves by this factor is not encoded at all (it would be thrown away for a keyframe): the
# estimate is off by far less (checked in tests/test_deltas.py), and a wrong skip costs only a
# keyframe where a delta would have fitted, never correctness.
SKIP_MARGIN = 1.5
COUNT_BLOCK = 1 << 22  # elements compared at a time when counting changes


def _dense_delta_codecs(new: np.ndarray, base: np.ndarray) -> list[tuple[ModuleType, int | None]]:
    """The dense delta codecs worth running on the whole tensor, each with its estimated payload
    size (None: not estimated): both for a small one, else whichever codes two samples (its
    start and its middle) smaller, sub on a tie. sub (integer differences) nearly always wins;
    xor where signs flip often (a difference across zero is large, its XOR is one bit)."""
    if new.size <= 4 * PROBE_ELEMENTS:
        return [(subtract, None), (xor, None)]
    mid = new.size // 2
    spans = (slice(0, PROBE_ELEMENTS), slice(mid, mid + PROBE_ELEMENTS))
    cost = {
        c: sum(len(c.encode(np.ascontiguousarray(new[s]), np.ascontiguousarray(base[s]))) for s in spans)
        for c in (subtract, xor)
    }
    best = subtract if cost[subtract] <= cost[xor] else xor
    return [(best, cost[best] * new.size // (2 * PROBE_ELEMENTS))]


def _changed(new: np.ndarray, base: np.ndarray) -> int:
    """How many elements' bits differ, counted in blocks (no tensor-sized temporary)."""
    return sum(
        int(np.count_nonzero(new[s : s + COUNT_BLOCK] != base[s : s + COUNT_BLOCK]))
        for s in range(0, new.size, COUNT_BLOCK)
    )


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
    room: int | None = None,
    map_fn: MapFn = map,
) -> Encoded:
    """The smallest encoding of raw: a delta against base_raw (xor, sparse, lowrank) or planes.

    Cheap probes first (how many elements changed); the SVD only runs for dense changes of a
    2-D float tensor whose xor delta is still large. `factors` (u, v), e.g. from a LoRA
    adapter, replace the SVD. `room`: the most payload bytes a delta may take (what the
    chain's cost bound leaves); a larger delta gives a keyframe (encoded through `map_fn`).
    """
    opts = options or DeltaOptions()
    new = elements(raw, dtype)
    base = elements(base_raw, dtype)
    size = len(memoryview(raw).cast("B"))
    params = {"depth": depth}
    candidates: list[tuple[int, str, list[bytearray], dict[str, int]]] = []
    frac = _changed(new, base) / max(1, new.size)
    if frac <= 0.3:
        p = sparse.encode(new, base)
        candidates.append((len(p), sparse.NAME, [p], {}))
    estimated: list[int] = []  # dense deltas not encoded: they could not fit the room
    if frac > 0.02:
        for dense, estimate in _dense_delta_codecs(new, base):
            if estimate is not None and room is not None and estimate > room * SKIP_MARGIN:
                estimated.append(estimate)
                continue
            p = dense.encode(new, base)
            candidates.append((len(p), dense.NAME, [p], {}))
    shape2d = lowrank.shape_2d(shape)
    best = min([c[0] for c in candidates] + estimated, default=size)
    if factors is not None and (
        shape2d is None
        or getattr(factors[0], "shape", None) is None
        or factors[0].shape[0] != shape2d[0]  # type: ignore[attr-defined]
        or factors[1].shape[1] != shape2d[1]  # type: ignore[attr-defined]
    ):
        factors = None  # an adapter for another shape: ignore it
    if (
        shape2d is not None
        and dtype in lowrank.DTYPES
        and (factors is not None or (frac > 0.3 and best > size // 10))
        and (factors is not None or (opts.lowrank and opts.spent < opts.svd_seconds))
    ):
        t = time.perf_counter()
        uv = factors
        if uv is None and lowrank.lowrank_plausible(new, base, dtype, shape2d, opts.max_rank):
            uv = lowrank.lowrank_probe(new, base, dtype, shape2d, opts.max_rank)
        if uv is not None:
            p, extra = lowrank.encode(new, base, dtype, shape2d, uv[0], uv[1])  # type: ignore[arg-type]
            candidates.append((len(p), lowrank.NAME, [p], extra))
        opts.spent += time.perf_counter() - t
    if not candidates:  # no delta was worth encoding (see SKIP_MARGIN)
        return encode(raw, dtype, shape, raw_hash, map_fn)
    size_, codec, parts, extra = min(candidates, key=lambda c: c[0])
    candidates.clear()  # only the smallest is kept while a keyframe may be encoded
    if room is not None and size_ > room:  # the chain would cost more than its bound allows
        del parts
        return encode(raw, dtype, shape, raw_hash, map_fn)
    if size_ >= size * 0.9:  # the delta hardly helps: store the tensor on its own (a keyframe)
        plain = encode(raw, dtype, shape, raw_hash, map_fn)
        if plain.payload_size <= size_:
            return plain
    header = ObjectHeader(codec, dtype, shape, size, raw_hash, {**params, **extra}, base_oid)
    return Encoded(header, list(parts))
