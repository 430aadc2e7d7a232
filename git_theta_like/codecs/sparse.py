"""`sparse`: positions and XOR-values of the elements whose bits changed (BitFit, sparse or
partial updates). Positions are delta-coded; both parts go through planes + zstd."""

from __future__ import annotations

import numpy as np

from git_theta_like.codecs.bits import pack_section, unpack_section
from git_theta_like.codecs.container import ObjectHeader

NAME = "sparse"
IS_DELTA = True


def encode(new: np.ndarray, base: np.ndarray, changed: np.ndarray | None = None) -> bytearray:
    """changed: the positions whose bits differ (computed when not given)."""
    idx = np.flatnonzero(new != base) if changed is None else changed
    gaps = np.diff(idx, prepend=0)  # first gap = first index; all >= 0
    wide = new.size >= 2**32
    gaps = gaps.astype(np.uint64 if wide else np.uint32)
    out = pack_section(gaps, gaps.itemsize)
    del gaps
    out += pack_section(np.bitwise_xor(new[idx], base[idx]), new.itemsize)
    return out


def decode_elements(payload: memoryview, base: np.ndarray) -> bytearray:
    gaps_b, pos = unpack_section(payload, 0, base.size * 8)
    vals_b, end = unpack_section(payload, pos, base.nbytes)
    if end != len(payload):
        raise ValueError("sparse payload has trailing bytes")
    gw = 8 if base.size >= 2**32 else 4
    gaps = np.frombuffer(gaps_b, dtype=np.uint64 if gw == 8 else np.uint32)
    vals = np.frombuffer(vals_b, dtype=base.dtype)
    if len(gaps) != len(vals):
        raise ValueError("sparse payload has mismatched positions and values")
    idx = np.cumsum(gaps, dtype=np.uint64).astype(np.int64)
    if len(idx) and (idx[-1] >= base.size or np.any(np.diff(idx) <= 0)):
        raise ValueError("sparse positions out of range")
    out = bytearray(base.tobytes())
    o = np.frombuffer(out, dtype=base.dtype)
    o[idx] ^= vals
    return out


def decode(header: ObjectHeader, payload: memoryview, base: np.ndarray) -> bytearray:
    return decode_elements(payload, base)
