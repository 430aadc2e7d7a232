"""Helpers the codecs share: a tensor's bytes as unsigned integers of its element width, float
views of those bits (and deterministic rounding back), and self-delimited planes sections
(a payload part of known, bounded size)."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

from git_theta_like import dtypes
from git_theta_like.codecs import planes

_U64 = struct.Struct("<Q")

UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def elements(buf: bytes | bytearray | memoryview, dtype: str) -> np.ndarray:
    """The buffer as unsigned integers of the element's width (bytes when that does not fit)."""
    k = dtypes.itemsize(dtype)
    n = len(memoryview(buf).cast("B"))
    if k in UINT and n % k == 0:
        return np.frombuffer(buf, dtype=UINT[k])
    return np.frombuffer(buf, dtype=np.uint8)


def pack_section(
    data: np.ndarray, width: int, transform: Callable[[slice], np.ndarray] | None = None
) -> bytearray:
    """planes-encode a contiguous array's bytes, chunk by chunk, self-delimited by a length.

    `transform`, when given, is applied to each chunk's slice of data's elements (data then only
    gives the size and element width): a delta computes its difference chunk by chunk, never
    for the whole tensor at once. The section is built in one buffer, each chunk dropped once
    copied in (a tensor-sized delta costs its encoding once, not three times)."""
    flat = np.ascontiguousarray(data).reshape(-1)
    nbytes, k = flat.nbytes, flat.itemsize
    w = planes.plane_width(nbytes, width)
    bounds = planes.chunk_bounds(nbytes, w)
    if transform is not None and any(s % k or e % k for s, e in bounds):
        flat, transform = np.ascontiguousarray(transform(slice(None))).reshape(-1), None

    mv = flat.data.cast("B")

    def chunk(s: int, e: int) -> bytes:
        if transform is None:
            return planes.encode_chunk(mv[s:e], w)
        part = np.ascontiguousarray(transform(slice(s // k, e // k)))
        return planes.encode_chunk(part.data.cast("B"), w)

    chunks = [chunk(s, e) for s, e in bounds]
    blen = sum(len(c) for c in chunks)
    out = bytearray(17 + blen)
    _U64.pack_into(out, 0, nbytes)
    out[8] = w
    _U64.pack_into(out, 9, blen)
    pos = 17
    for i, c in enumerate(chunks):
        out[pos : pos + len(c)] = c
        pos += len(c)
        chunks[i] = b""
    return out


def unpack_section(payload: memoryview, pos: int, limit: int) -> tuple[bytearray, int]:
    """Decode a section of at most `limit` bytes (a bound from the header: never trust sizes)."""
    if pos + 17 > len(payload):
        raise ValueError("delta payload ends inside a section header")
    (size,) = _U64.unpack_from(payload, pos)
    (w,) = struct.unpack_from("<B", payload, pos + 8)
    (blen,) = _U64.unpack_from(payload, pos + 9)
    pos += 17
    end = pos + blen
    if size > limit:
        raise ValueError(f"delta section of {size} bytes exceeds its bound of {limit}")
    if size > planes.max_raw(blen):
        raise ValueError(f"a {blen}-byte delta section cannot hold {size} bytes")
    if end > len(payload) or w < 1:
        raise ValueError("delta payload ends inside a section")
    out = bytearray(size)
    omv = memoryview(out)
    for s, e in planes.chunk_bounds(size, w):
        done, pos = pos, planes.decode_chunk(payload, pos, e - s, w, omv[s:e])
        planes.drop_read_pages(payload, done, pos)
    if pos != end:
        raise ValueError("delta section has trailing bytes")
    return out, end


def to_float64(bits: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # NaN payloads convert to NaN: fine, we never store these
        return _to_float64(bits, dtype)


def _to_float64(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "F64":
        return bits.view(np.float64).astype(np.float64)
    if dtype == "F32":
        return bits.view(np.float32).astype(np.float64)
    if dtype == "F16":
        return bits.view(np.float16).astype(np.float64)
    if dtype == "BF16":
        return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    raise ValueError(f"no float view of {dtype}")


def from_float64(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round to dtype's bits, deterministically (IEEE round-to-nearest-even at each step)."""
    if dtype == "F64":
        return x.view(np.uint64).copy()
    if dtype == "F32":
        return x.astype(np.float32).view(np.uint32)
    if dtype == "F16":
        return x.astype(np.float16).view(np.uint16)
    if dtype == "BF16":
        b = x.astype(np.float32).view(np.uint32)
        rounded = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        nan = np.isnan(x)
        out = rounded.astype(np.uint16)
        out[nan] = (b[nan] >> np.uint32(16)).astype(np.uint16) | np.uint16(0x40)  # keep NaN a NaN
        return out
    raise ValueError(f"no float view of {dtype}")
