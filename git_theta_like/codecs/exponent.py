"""`exponent`: the float keyframe codec. The exponent is one byte plane; each plane is stored,
zstd-compressed or, for the exponent, coded as pairs; whichever is smallest.

`planes` cuts a float's exponent across two bytes (sign + 7 exponent bits | 1 exponent bit + 7
mantissa bits), so both high planes carry a random bit. Here the top 16 bits of every element
(sign, then the exponent's 8 high bits, then 7 more bits) are rotated so that plane 0 is those
8 exponent bits and plane 1 is the sign + the 7 bits after the exponent; the remaining bytes
are planes 2.. (high to low). For F32 and BF16, plane 0 is the whole exponent (F16: 5 exponent
+ 3 mantissa bits; F64: the 8 high of 11 exponent bits).

Weights' exponents take few values (about 2.6 bits of entropy): zstd's literal coder (Huffman)
codes one byte per symbol, with a table per block and matches that rarely pay. The `pairs`
mode codes two exponents as one byte: the chunk's 15 most frequent consecutive values
[base, base + 14] map to 0..14 and anything else to 15 (an escape, its value kept in an escape
stream); two such nibbles make one symbol, and the symbols go through zstd. That halves the
Huffman coder's loss per element: on MiniLM the exponent plane takes 0.329 of its bytes, against
0.348 through zstd and an order-0 entropy of 0.326.

Payload: chunks of `params.chunk` raw bytes (the last one shorter), each = `params.width` planes
of `u8 mode + u32 length + bytes`; modes 0 stored, 1 zstd, 2 pairs (bytes = u8 base + the
symbols + the escapes, each as a `u8 mode (0/1) + u32 length + bytes` record). The bytes are
reinterpreted, never converted: every bit pattern (NaN payloads, -0.0, subnormals) round-trips.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator

import numpy as np
import zstandard

from git_theta_like import dtypes
from git_theta_like.codecs.container import Encoded, ObjectHeader
from git_theta_like.codecs.planes import (
    CHUNK,
    MAX_CHUNK,
    PROBE,
    PROBE_RATIO,
    MapFn,
    chunk_bounds,
    decode_chunks,
    decompressor,
    iter_decode_chunks,
)

NAME = "exponent"
IS_DELTA = False
DTYPES = frozenset({"F16", "BF16", "F32", "F64"})

PLANE = struct.Struct("<BI")
STORED, ZSTD, PAIRS = 0, 1, 2
WINDOW = 15  # exponent values a pair symbol codes directly; nibble 15 is the escape
ESCAPE = 15
# zstd emits at most 32768 raw bytes per payload byte (planes.MAX_RATIO); a pairs plane codes two
# elements per symbol, so a chunk of n elements of k >= 2 bytes needs at least
# ((k - 1) * n + n / 2) / 32768 payload bytes: raw / payload <= 32768 * k / (k - 0.5) < 2 * 32768.
MAX_RATIO = 2 * 32 * 1024
WIDTHS = frozenset({2, 4, 8})
PROBES = 4  # samples of PROBE / PROBES bytes each

_local = threading.local()


def _cctx() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        # measured on MiniLM: the fast strategy with 7-byte matches and a 128 KiB window codes
        # exponent planes 5% smaller than level 1 (matches of 4-6 bytes cost more than the
        # literals they replace) at the same speed
        params = zstandard.ZstdCompressionParameters(
            strategy=zstandard.STRATEGY_FAST, min_match=7, window_log=17, hash_log=12, write_content_size=True
        )
        c = _local.cctx = zstandard.ZstdCompressor(compression_params=params)
    return c


# ------------------------------------------------------------------ planes of one chunk


def split(raw: memoryview, width: int) -> list[np.ndarray]:
    """The planes of a chunk (len(raw) a multiple of width): exponent, sign + 7 bits, low bytes."""
    grid = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
    # contiguous copies first: numpy's byte arithmetic is ~10x faster on contiguous arrays
    hi = grid[:, width - 1].copy()  # sign + 7 exponent bits
    lo = grid[:, width - 2].copy()  # 1 exponent bit + 7 bits
    exp = hi + hi  # << 1 (wrapping: the sign drops out); numpy's uint8 add is SIMD, its shift not
    exp |= lo >> np.uint8(7)
    hi &= np.uint8(0x80)
    lo &= np.uint8(0x7F)
    hi |= lo  # now sign + 7 bits
    return [exp, hi] + [np.ascontiguousarray(grid[:, j]) for j in range(width - 3, -1, -1)]


def join(planes: list[np.ndarray], width: int, out: memoryview) -> None:
    """Write the element bytes of a chunk's planes (split's inverse) into out."""
    exp, sm = planes[0], planes[1]
    hi = sm & np.uint8(0x80)
    hi |= exp >> np.uint8(1)
    lo = exp * np.uint8(0x80)  # << 7, wrapping (a multiply: SIMD, unlike numpy's uint8 shift)
    lo |= sm & np.uint8(0x7F)
    if width == 2:  # the element is one uint16: built whole, no byte-strided writes
        g16 = np.frombuffer(out, dtype=np.uint16)
        np.multiply(hi, np.uint16(256), out=g16, casting="unsafe")  # hi << 8
        g16 |= lo
        return
    grid = np.frombuffer(out, dtype=np.uint8).reshape(-1, width)
    grid[:, width - 1] = hi
    grid[:, width - 2] = lo
    for i, j in enumerate(range(width - 3, -1, -1)):
        grid[:, j] = planes[2 + i]


# ------------------------------------------------------------------ one plane


def _incompressible(c: zstandard.ZstdCompressor, data: bytes | memoryview) -> bool:
    """Whether PROBES samples spread over data all fail to compress (then it is stored as is).
    Measured on MiniLM: planes' one probe at the start stores the low mantissa bytes of tensors
    whose first 64 KiB are noise but whose rest compresses (fp32 0.8205 -> 0.8185 with 4)."""
    n = len(data)
    if n <= 2 * PROBE:
        return False
    step = PROBE // PROBES
    for i in range(PROBES):
        s = (n - step) * i // (PROBES - 1)
        if len(c.compress(data[s : s + step])) <= step * PROBE_RATIO:
            return False
    return True


def _zstd_or_stored(data: bytes | memoryview, probe: bool) -> bytes:
    n = len(data)
    if n == 0:
        return PLANE.pack(STORED, 0)
    c = _cctx()
    if probe and _incompressible(c, data):
        return PLANE.pack(STORED, n) + data
    out = c.compress(data)
    if len(out) >= n:
        return PLANE.pack(STORED, n) + data
    return PLANE.pack(ZSTD, len(out)) + out


SAMPLE = 16  # the window is chosen from every 16th exponent (any window is lossless)


def _pairs(exp: np.ndarray) -> bytes | None:
    """The pairs record body of an exponent plane (None if the plane is too short to pay)."""
    n = len(exp)
    if n < 64:
        return None
    counts = np.bincount(exp[::SAMPLE], minlength=256)
    base = int(np.argmax(np.convolve(counts, np.ones(WINDOW, np.int64), mode="valid")))
    nib = np.empty(n + n % 2, dtype=np.uint8)
    np.subtract(exp, np.uint8(base), out=nib[:n])  # wraps: values below base become large
    np.minimum(nib, np.uint8(ESCAPE), out=nib)
    nib[n:] = 0
    w = nib.view(np.uint16)  # little-endian: element 2i in the low byte
    sym = (w * np.uint16(16) | (w >> np.uint16(8))).astype(np.uint8)  # nibble 0 high, 1 low
    escaped = nib[:n] == ESCAPE
    escapes = exp[escaped] if escaped.any() else exp[:0]
    return bytes([base]) + _zstd_or_stored(sym.data, False) + _zstd_or_stored(escapes.data, False)


def encode_plane(plane: np.ndarray, exponent: bool) -> bytes:
    """The smallest record of a plane: stored, zstd or (the exponent plane) pairs."""
    data = plane.data.cast("B")
    body = _pairs(plane) if exponent else None
    if body is not None and len(body) < len(plane) // 2:  # clearly better than zstd could be
        return PLANE.pack(PAIRS, len(body)) + body
    best = _zstd_or_stored(data, not exponent)
    if body is not None and PLANE.size + len(body) < len(best):
        return PLANE.pack(PAIRS, len(body)) + body
    return best


def _record(payload: memoryview, pos: int, end: int) -> tuple[int, int, memoryview]:
    """mode, next position and bytes of the record at payload[pos:end]."""
    if pos + PLANE.size > end:
        raise ValueError("payload ends inside a plane header")
    mode, length = PLANE.unpack_from(payload, pos)
    pos += PLANE.size
    if length > end - pos:
        raise ValueError("payload ends inside a plane")
    return mode, pos + length, payload[pos : pos + length]


def _bytes(mode: int, data: memoryview, n: int) -> np.ndarray:
    """n bytes from a stored or zstd record (nothing allocated beyond n)."""
    if mode == STORED:
        if len(data) != n:
            raise ValueError(f"stored plane has {len(data)} bytes, expected {n}")
        return np.frombuffer(data, dtype=np.uint8)
    if mode == ZSTD:
        declared = zstandard.frame_content_size(data)
        if declared != n:  # also stops a frame that claims a huge size (a decompression bomb)
            raise ValueError(f"zstd frame declares {declared} bytes, expected {n}")
        dec = decompressor().decompress(data, max_output_size=max(1, n))
        if len(dec) != n:
            raise ValueError(f"plane decompresses to {len(dec)} bytes, expected {n}")
        return np.frombuffer(dec, dtype=np.uint8)
    raise ValueError(f"unknown plane mode {mode}")


def _unpairs(body: memoryview, n: int) -> np.ndarray:
    if len(body) < 1:
        raise ValueError("pairs plane has no base")
    base = body[0]
    mode, pos, data = _record(body, 1, len(body))
    sym = _bytes(mode, data, (n + 1) // 2)
    mode, end, escaped = _record(body, pos, len(body))
    if end != len(body):
        raise ValueError("pairs plane has trailing bytes")
    # the two nibbles of symbol i are elements 2i (high) and 2i + 1 (low): as a little-endian
    # uint16, (low nibble << 8) | high nibble; whole-array uint16 arithmetic, 4x faster than
    # writing every other byte
    w = np.empty(len(sym), dtype=np.uint16)
    np.multiply(sym, np.uint16(256), out=w, casting="unsafe")  # sym << 8
    w &= np.uint16(0x0F00)
    w |= sym >> np.uint8(4)
    v = w.view(np.uint8)[:n]
    if mode == STORED and not escaped:  # no escapes (a nibble 15 then decodes to base + 15:
        v += np.uint8(base)  # wrong bits, which the raw-hash check of every read catches)
        return v
    esc = np.flatnonzero(v == ESCAPE)
    escapes = _bytes(mode, escaped, len(esc))  # the count comes from the symbols: bounded by n
    v += np.uint8(base)
    v[esc] = escapes
    return v


def decode_plane(mode: int, data: memoryview, n: int) -> np.ndarray:
    if mode == PAIRS:
        return _unpairs(data, n)
    return _bytes(mode, data, n)


def encode_chunk(raw: memoryview, width: int) -> bytes:
    return b"".join(encode_plane(p, i == 0) for i, p in enumerate(split(raw, width)))


def decode_chunk(payload: memoryview, pos: int, raw_len: int, width: int, out: memoryview) -> int:
    """Decode the chunk at payload[pos] into out (raw_len bytes); returns the next position."""
    n = raw_len // width
    planes = []
    for _ in range(width):  # split makes one plane per element byte
        mode, pos, data = _record(payload, pos, len(payload))
        if len(data) > n:  # the encoder stores a plane rather than let it grow
            raise ValueError(f"a plane of {len(data)} bytes for {n} elements")
        planes.append(decode_plane(mode, data, n))
    join(planes, width, out)
    return pos


# ------------------------------------------------------------------ the codec


def applies(size: int, dtype: str) -> bool:
    return dtype in DTYPES and size > 0 and size % dtypes.itemsize(dtype) == 0


def encode(raw: memoryview, dtype: str, map_fn: MapFn = map) -> tuple[dict[str, int], list[bytes]]:
    """Codec parameters and the encoded chunks of a float tensor's bytes (`applies` holds)."""
    width = dtypes.itemsize(dtype)
    bounds = chunk_bounds(len(raw), width, CHUNK)
    chunks = list(map_fn(lambda b: encode_chunk(b, width), (raw[s:e] for s, e in bounds)))
    return {"chunk": bounds[0][1] - bounds[0][0], "width": width}, chunks


def encode_keyframe(
    raw: bytes | bytearray | memoryview,
    dtype: str,
    shape: tuple[int, ...],
    raw_hash: str,
    map_fn: MapFn = map,
) -> Encoded | None:
    """The `exponent` object of a float tensor, or None (not a float dtype, or not smaller)."""
    mv = memoryview(raw).cast("B")
    if not applies(len(mv), dtype):
        return None
    params, chunks = encode(mv, dtype, map_fn)
    if sum(len(c) for c in chunks) >= len(mv):
        return None
    return Encoded(ObjectHeader(NAME, dtype, shape, len(mv), raw_hash, params), list(chunks))


def _params(header: ObjectHeader) -> tuple[int, int]:
    chunk, width = int(header.params.get("chunk", 0)), int(header.params.get("width", 0))
    if width not in WIDTHS or chunk < width or chunk % width or chunk > MAX_CHUNK:
        raise ValueError(
            f"bad exponent parameters chunk={chunk} width={width} (chunks of at most {MAX_CHUNK})"
        )
    if header.size % width:
        raise ValueError(f"{header.size} bytes are not whole {width}-byte elements")
    return chunk, width


def max_raw(payload_len: int) -> int:
    """The most raw bytes an exponent payload of payload_len bytes can decode to."""
    return payload_len * MAX_RATIO


def decode(header: ObjectHeader, payload: memoryview, base: object = None) -> bytearray:
    return decode_chunks(header, payload, _params, decode_chunk, max_raw)


def iter_decode(header: ObjectHeader, read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Decode chunk by chunk from a sequential reader (memory bounded by one chunk)."""
    return iter_decode_chunks(header, read, _params, decode_chunk)
