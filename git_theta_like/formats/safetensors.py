"""safetensors: 8-byte little-endian header length, a JSON header, then the tensor data.

Every byte outside the tensor regions (length prefix, header including its padding, gaps and
trailing bytes) goes to the skeleton, so re-joining is exact for any file this parser accepts.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator

from git_theta_like import dtypes
from git_theta_like.errors import FormatError
from git_theta_like.formats.base import ByteReader, Event, Skeleton, TensorInfo, data_section, in_file_order

MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors library itself enforces
# The most header that clean parses: json.loads of a hostile header (millions of tiny values)
# takes ~10 bytes per header byte, so 16 MiB keeps clean within the 300 MB it may take besides
# the tensors. A real header is ~100 bytes a tensor; a larger one is stored whole, losslessly.
MAX_SPLIT_HEADER = 16 * 1024 * 1024
CHUNK = 16 * 1024 * 1024  # gaps and trailing bytes are read (and yielded) in pieces this big


class SafetensorsFormat:
    name = "safetensors"

    def sniff(self, head: bytes) -> bool:
        if len(head) < 9:
            return False
        (n,) = struct.unpack("<Q", head[:8])
        return 2 <= n <= MAX_HEADER and head[8:9] == b"{"

    def split(self, reader: ByteReader) -> Iterator[Event]:
        prefix = reader.read_exact(8, "the safetensors header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER:
            raise FormatError(f"safetensors header length {n} exceeds {MAX_HEADER} bytes")
        if n > MAX_SPLIT_HEADER:
            raise FormatError(f"safetensors header is {n} bytes, over the {MAX_SPLIT_HEADER} split here")
        header = reader.read_exact(n, "the safetensors JSON header")
        regions = parse_header(bytes(header), data_start=8 + n)
        yield Skeleton(prefix + header)
        yield from data_section(reader, regions, 8 + n, CHUNK)


def parse_header(header: bytes, data_start: int) -> list[TensorInfo]:
    """Tensor regions of a safetensors header, sorted by offset, validated for exact re-joining."""
    try:
        meta = json.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"safetensors header is not valid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise FormatError("safetensors header is not a JSON object")
    regions: list[TensorInfo] = []
    for name, entry in meta.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise FormatError("safetensors __metadata__ is not an object")
            continue
        if not isinstance(entry, dict):
            raise FormatError(f"tensor {name!r}: header entry is not an object")
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if not isinstance(dtype, str):
            raise FormatError(f"tensor {name!r}: missing dtype")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise FormatError(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
            raise FormatError(f"tensor {name!r}: data_offsets {offsets!r} are invalid")
        begin, end = offsets
        if end < begin:
            raise FormatError(f"tensor {name!r}: data_offsets end before they begin")
        length = end - begin
        if dtype in dtypes.ITEMSIZE:
            expected = dtypes.numel(shape) * dtypes.ITEMSIZE[dtype]
            if expected != length:
                raise FormatError(
                    f"tensor {name!r}: {dtype}{shape} needs {expected} bytes, data_offsets give {length}"
                )
        else:
            dtype = dtypes.OPAQUE  # unknown element type: keep the bytes, do no arithmetic
        regions.append(TensorInfo(name, dtype, tuple(shape), data_start + begin, length))
    return in_file_order(sorted(regions, key=lambda r: r.name), data_start)


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def read_metadata(skeleton: bytes | bytearray | memoryview) -> dict[str, str] | None:
    """The `__metadata__` of a safetensors file from its first bytes (its skeleton), if any."""
    (n,) = struct.unpack_from("<Q", skeleton, 0)
    meta = json.loads(bytes(skeleton[8 : 8 + n]).decode("utf-8")).get("__metadata__")
    return meta if isinstance(meta, dict) else None


def write_header(
    tensors: list[tuple[str, str, tuple[int, ...], int]], metadata: dict[str, str] | None
) -> bytes:
    """The length prefix and JSON header of a safetensors file holding `(name, dtype, shape,
    nbytes)` tensors in this order (8-byte aligned with spaces, as the library writes it)."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    pos = 0
    for name, dtype, shape, n in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h
