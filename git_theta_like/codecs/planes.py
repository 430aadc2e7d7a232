"""`planes`: byte-grouped planes + zstd (ZipNN-style), the keyframe codec.

Floats of one tensor share their high bytes (sign and exponent) far more than their low
(mantissa) bytes. Grouping byte i of every element into plane i puts the similar bytes next to
each other, where zstd finds them; planes that do not compress are stored as they are.

Payload: a sequence of chunks (each `params["chunk"]` raw bytes, the last one shorter), each
chunk = for every plane: u8 mode (0 stored, 1 zstd) + u32 length + bytes. Chunks are encoded
independently, so one large tensor spreads across cores and decodes in bounded memory.
"""

from __future__ import annotations

import mmap
import struct
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import zstandard

from git_theta_like.codecs.container import ObjectHeader

LEVEL = 1  # measured: level 1 compresses exponent planes as well as level 3, 1.4x faster
CHUNK = 8 * 1024 * 1024
MAX_CHUNK = 64 * 1024 * 1024  # the largest chunk a reader accepts (what it allocates at once)
# zstd cannot produce more than 128 KiB per 4 payload bytes (an RLE block): no object we or any
# zstd encoder wrote holds more raw bytes than MAX_RATIO times its payload. A header that claims
# more is a lie, caught before anything is allocated.
MAX_RATIO = 32 * 1024
PROBE = 64 * 1024  # a plane whose first PROBE bytes do not compress is stored as is
PROBE_RATIO = 0.97
PLANE = struct.Struct("<BI")
STORED, ZSTD = 0, 1

_local = threading.local()


def _cctx() -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None:
        c = _local.cctx = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
    return c


def decompressor() -> zstandard.ZstdDecompressor:
    """This thread's zstd decompressor (every codec that decodes zstd frames shares it)."""
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def chunk_bounds(size: int, itemsize: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """(start, end) of each chunk; chunk boundaries fall on element boundaries."""
    step = max(itemsize, chunk - chunk % itemsize)
    return [(s, min(s + step, size)) for s in range(0, size, step)] or [(0, 0)]


def plane_width(size: int, itemsize: int) -> int:
    """Number of planes: the element size, or 1 where bytes do not form whole elements."""
    return itemsize if itemsize > 1 and size % itemsize == 0 else 1


def _compress_plane(plane: memoryview) -> bytes:
    n = len(plane)
    if n == 0:
        return PLANE.pack(STORED, 0)
    c = _cctx()
    if n > 2 * PROBE:
        probe = c.compress(plane[:PROBE])
        if len(probe) > PROBE * PROBE_RATIO:
            return PLANE.pack(STORED, n) + plane
    out = c.compress(plane)
    if len(out) >= n:
        return PLANE.pack(STORED, n) + plane
    return PLANE.pack(ZSTD, len(out)) + out


def encode_chunk(raw: memoryview, width: int) -> bytes:
    """Encode one chunk of raw bytes into its planes."""
    if width == 1:
        return _compress_plane(raw)
    grid = np.frombuffer(raw, dtype=np.uint8).reshape(-1, width)
    parts = []
    for i in range(width):
        plane = np.ascontiguousarray(grid[:, i])
        parts.append(_compress_plane(plane.data.cast("B")))
    return b"".join(parts)


def decode_chunk(payload: memoryview, pos: int, raw_len: int, width: int, out: memoryview) -> int:
    """Decode the chunk starting at payload[pos] into out (raw_len bytes); returns the next pos."""
    n = raw_len // width
    grid = np.frombuffer(out, dtype=np.uint8, count=raw_len).reshape(n, width)
    for i in range(width):
        pos, plane = _read_plane(payload, pos, n)
        grid[:, i] = np.frombuffer(plane, dtype=np.uint8)
    return pos


def _read_plane(payload: memoryview, pos: int, n: int) -> tuple[int, bytes | memoryview]:
    if pos + PLANE.size > len(payload):
        raise ValueError("payload ends inside a plane header")
    mode, length = PLANE.unpack_from(payload, pos)
    pos += PLANE.size
    data = payload[pos : pos + length]
    if len(data) != length:
        raise ValueError("payload ends inside a plane")
    if mode == STORED:
        if length != n:
            raise ValueError(f"stored plane has {length} bytes, expected {n}")
        return pos + length, data
    if mode == ZSTD:
        declared = zstandard.frame_content_size(data)
        if declared != n:  # also stops a frame that claims a huge size (a decompression bomb)
            raise ValueError(f"zstd frame declares {declared} bytes, expected {n}")
        dec = decompressor().decompress(data, max_output_size=n)
        if len(dec) != n:
            raise ValueError(f"plane decompresses to {len(dec)} bytes, expected {n}")
        return pos + length, dec
    raise ValueError(f"unknown plane mode {mode}")


# ------------------------------------------------------------------ the codec

NAME = "planes"
IS_DELTA = False

MapFn = Callable[[Callable[[memoryview], bytes], Iterable[memoryview]], Iterator[bytes]]


def encode(raw: memoryview, itemsize: int, map_fn: MapFn = map) -> tuple[dict[str, int], list[bytes]]:
    """Codec parameters and the encoded chunks of raw (`map_fn` may spread chunks over cores)."""
    width = plane_width(len(raw), itemsize)
    bounds = chunk_bounds(len(raw), width)
    chunks = list(map_fn(lambda b: encode_chunk(b, width), (raw[s:e] for s, e in bounds)))
    return {"chunk": bounds[0][1] - bounds[0][0], "width": width}, chunks


def _params(header: ObjectHeader) -> tuple[int, int]:
    chunk, width = int(header.params["chunk"]), int(header.params["width"])
    if width < 1 or chunk < width or chunk % width or chunk > MAX_CHUNK:
        raise ValueError(f"bad planes parameters chunk={chunk} width={width} (chunks of at most {MAX_CHUNK})")
    return chunk, width


def max_raw(payload_len: int) -> int:
    """The most raw bytes a planes payload of payload_len bytes can decode to."""
    return payload_len * MAX_RATIO


# A chunk decoder: (payload, position, raw bytes of the chunk, width, out) -> position after it.
ChunkDecoder = Callable[[memoryview, int, int, int, memoryview], int]


def drop_read_pages(payload: memoryview, start: int, end: int) -> None:
    """Let the kernel take back the pages of payload[start:end], decoded by now, when the
    payload maps a file (LocalStore.read maps large objects): a decode then keeps about one
    chunk of the stored object resident, not all of it. An object's payload starts its
    mapping, so offsets are the payload's; the pages come back from the page cache if read
    again (a read-only file mapping), so a wrong guess costs a re-read, never a wrong byte."""
    m = payload.obj
    if not isinstance(m, mmap.mmap):
        return
    lo = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
    hi = end // mmap.PAGESIZE * mmap.PAGESIZE
    if hi > lo:
        m.madvise(mmap.MADV_DONTNEED, lo, hi - lo)


def decode_chunks(
    header: ObjectHeader,
    payload: memoryview,
    params: Callable[[ObjectHeader], tuple[int, int]],
    decode_chunk: ChunkDecoder,
    max_raw: Callable[[int], int],
) -> bytearray:
    """A payload of chunks of `width` planes each (planes and the codecs built like it; `params`
    gives the header's validated chunk size and width): header.size raw bytes, checked against
    what the payload can hold (max_raw, and a plane header per plane and chunk) before anything
    is allocated."""
    size, (chunk, width), most = header.size, params(header), max_raw(len(payload))
    # every chunk holds at least `width` plane headers: a size the payload cannot hold is a lie
    chunks = -(-size // chunk)
    if chunks * width * PLANE.size > len(payload) or size > most:
        raise ValueError(f"a {len(payload)}-byte payload cannot hold {size} raw bytes")
    out = bytearray(size)  # every byte is written below
    omv = memoryview(out)
    pos = 0
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        done, pos = pos, decode_chunk(payload, pos, n, width, omv[start : start + n])
        drop_read_pages(payload, done, pos)
    if pos != len(payload):
        raise ValueError(f"{len(payload) - pos} unexpected bytes after the last chunk")
    return out


def iter_decode_chunks(
    header: ObjectHeader,
    read: Callable[[int], bytes],
    params: Callable[[ObjectHeader], tuple[int, int]],
    decode_chunk: ChunkDecoder,
) -> Iterator[bytes]:
    """decode_chunks from a sequential reader, chunk by chunk (memory bounded by one chunk); a
    plane may not be longer than the chunk's bytes per plane."""
    size, (chunk, width) = header.size, params(header)
    for start in range(0, size, chunk):
        n = min(chunk, size - start)
        encoded = bytearray()
        for _ in range(width):
            head = read(PLANE.size)
            if len(head) != PLANE.size:
                raise ValueError("payload ends inside a plane header")
            _, length = PLANE.unpack(head)
            if length > -(-n // width):
                raise ValueError(f"a plane of {length} bytes for {n} raw bytes in {width} planes")
            encoded += head
            encoded += read(length)
        out = bytearray(n)
        end = decode_chunk(memoryview(encoded), 0, n, width, memoryview(out))
        if end != len(encoded):
            raise ValueError("payload ends inside a plane")
        yield bytes(out)


def decode(header: ObjectHeader, payload: memoryview, base: object = None) -> bytearray:
    return decode_chunks(header, payload, _params, decode_chunk, max_raw)


def iter_decode(header: ObjectHeader, read: Callable[[int], bytes]) -> Iterator[bytes]:
    """Decode chunk by chunk from a sequential reader (memory bounded by one chunk)."""
    return iter_decode_chunks(header, read, _params, decode_chunk)
