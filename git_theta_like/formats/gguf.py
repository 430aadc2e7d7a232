"""GGUF (llama.cpp / ggml), versions 2 and 3, little-endian, split while streaming.

Layout (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md):

    "GGUF"  u32 version  u64 tensor_count  u64 metadata_kv_count
    metadata_kv_count x (string key, u32 value type, value)
    tensor_count x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml type, u64 offset)
    padding to `general.alignment` (default 32)
    data section: each tensor at `offset` (relative to the data section, a multiple of the
    alignment), usually followed by padding to the alignment

Strings are a u64 byte length and the bytes (no terminator); an array value is a u32 element
type, a u64 count and the elements (arrays may nest). Dimensions are in ggml order: ne[0]
varies fastest, so the row-major (numpy) shape is the reversed list.

The whole header (everything up to the end of the tensor infos) is skeleton, and so is every
byte between, before and after the tensors. A tensor of a plain type (F32, F16, BF16, F64,
I8..I64) becomes a region with that dtype and the row-major shape; a quantized tensor (Q4_0,
Q8_0, the K-quants, IQ*, TQ*, MXFP4, ...) becomes an opaque "BYTES" region of its byte length:
it is deduplicated and stored losslessly, never used in arithmetic. Anything unexpected (a
big-endian or v1 file, an unknown tensor type, counts or lengths beyond sane bounds, offsets
that are misaligned or overlap, a truncated file) raises FormatError and the file is stored
whole. The header is read through a peek window, so a large vocabulary parses quickly, and no
length read from the file is allocated before its bytes have arrived.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from git_theta_like import dtypes
from git_theta_like.errors import FormatError, TruncatedError
from git_theta_like.formats.base import ByteReader, Event, Skeleton, TensorInfo, data_section, in_file_order

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
ALIGNMENT_KEY = b"general.alignment"
_PREAMBLE = struct.Struct("<4sIQQ")  # magic, version, tensor_count, metadata_kv_count: 24 bytes
_U32 = struct.Struct("<I")  # value and tensor types, array element types, n_dims
_U64 = struct.Struct("<Q")  # string and array lengths, dimensions, offsets

MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
# everything before the data section, held in memory (about twice over): 64 MiB keeps clean
# within the 300 MB it may take besides the tensors; the largest vocabularies take ~20 MB
MAX_HEADER = 64 << 20
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NESTING = 16  # arrays of arrays of ...
MAX_TENSOR_BYTES = 1 << 48
MAX_DIM = (1 << 63) - 1  # ggml reads dimensions as int64

WINDOW = 1 << 20  # header bytes peeked at a time
CHUNK = 16 * 1024 * 1024  # gaps and trailing bytes are read (and yielded) in pieces this big

# Metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL = range(8)
T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(8, 13)
VALUE_SIZE = {
    T_UINT8: 1,
    T_INT8: 1,
    T_UINT16: 2,
    T_INT16: 2,
    T_UINT32: 4,
    T_INT32: 4,
    T_FLOAT32: 4,
    T_BOOL: 1,
    T_UINT64: 8,
    T_INT64: 8,
    T_FLOAT64: 8,
}


@dataclass(frozen=True)
class GgmlType:
    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block
    dtype: str  # canonical dtype of the region ("BYTES" for quantized types)


def _plain(name: str, size: int) -> GgmlType:
    return GgmlType(name, 1, size, name)


def _quant(name: str, block_size: int, type_size: int) -> GgmlType:
    return GgmlType(name, block_size, type_size, dtypes.OPAQUE)


# ggml type id -> block geometry, as in gguf-py's GGML_QUANT_SIZES (ids 4, 5, 31-33 and 36-38
# were removed from ggml and are refused like any unknown id).
GGML_TYPES: dict[int, GgmlType] = {
    0: _plain("F32", 4),
    1: _plain("F16", 2),
    2: _quant("Q4_0", 32, 18),
    3: _quant("Q4_1", 32, 20),
    6: _quant("Q5_0", 32, 22),
    7: _quant("Q5_1", 32, 24),
    8: _quant("Q8_0", 32, 34),
    9: _quant("Q8_1", 32, 40),
    10: _quant("Q2_K", 256, 84),
    11: _quant("Q3_K", 256, 110),
    12: _quant("Q4_K", 256, 144),
    13: _quant("Q5_K", 256, 176),
    14: _quant("Q6_K", 256, 210),
    15: _quant("Q8_K", 256, 292),
    16: _quant("IQ2_XXS", 256, 66),
    17: _quant("IQ2_XS", 256, 74),
    18: _quant("IQ3_XXS", 256, 98),
    19: _quant("IQ1_S", 256, 50),
    20: _quant("IQ4_NL", 32, 18),
    21: _quant("IQ3_S", 256, 110),
    22: _quant("IQ2_S", 256, 82),
    23: _quant("IQ4_XS", 256, 136),
    24: _plain("I8", 1),
    25: _plain("I16", 2),
    26: _plain("I32", 4),
    27: _plain("I64", 8),
    28: _plain("F64", 8),
    29: _quant("IQ1_M", 256, 56),
    30: _plain("BF16", 2),
    34: _quant("TQ1_0", 256, 54),
    35: _quant("TQ2_0", 256, 66),
    39: _quant("MXFP4", 32, 17),
    40: _quant("NVFP4", 64, 36),
    41: _quant("Q1_0", 128, 18),
}


class GgufFormat:
    name = "gguf"

    def sniff(self, head: bytes) -> bool:
        return head[:4] == MAGIC

    def split(self, reader: ByteReader) -> Iterator[Event]:
        header = _HeaderReader(reader)
        regions = _parse_header(header)
        yield Skeleton(header.data)
        yield from data_section(reader, regions, header.size, CHUNK)


class _HeaderReader:
    """Reads the header through a peek window: bytes are consumed (and kept, as skeleton) only
    as far as they have been parsed, so nothing after the header is read by mistake."""

    def __init__(self, reader: ByteReader) -> None:
        self.reader = reader
        self.data = bytearray()  # header bytes consumed so far
        self.buf = b""  # peeked bytes, not yet consumed; parsed up to self.i
        self.i = 0

    @property
    def size(self) -> int:
        return len(self.data) + self.i

    def commit(self) -> None:
        """Consume what has been parsed."""
        if self.i:
            self.data += self.reader.read_exact(self.i, "the GGUF header")
            self.buf, self.i = b"", 0

    def ensure(self, n: int, what: str) -> None:
        """At least n bytes available at self.i (n <= WINDOW)."""
        if self.i + n <= len(self.buf):
            return
        if self.size + n > MAX_HEADER:
            raise FormatError(f"GGUF header is larger than {MAX_HEADER} bytes (at {what})")
        self.commit()
        self.buf = self.reader.peek(max(n, WINDOW))
        if len(self.buf) < n:
            raise TruncatedError(what, n, len(self.buf))

    def u32(self, what: str) -> int:
        self.ensure(4, what)
        (v,) = _U32.unpack_from(self.buf, self.i)
        self.i += 4
        return int(v)

    def u64(self, what: str) -> int:
        self.ensure(8, what)
        (v,) = _U64.unpack_from(self.buf, self.i)
        self.i += 8
        return int(v)

    def skip(self, n: int, what: str) -> None:
        """Consume n bytes whose content does not matter here."""
        self.take(n, what, keep=False)

    def take(self, n: int, what: str, keep: bool = True) -> bytes:
        if n <= WINDOW:
            self.ensure(n, what)
            out = self.buf[self.i : self.i + n] if keep else b""
            self.i += n
            return out
        if self.size + n > MAX_HEADER:
            raise FormatError(f"{what} is {n} bytes: the GGUF header would exceed {MAX_HEADER} bytes")
        self.commit()
        data = self.reader.read_upto(n)  # allocates only as the bytes arrive
        if len(data) != n:
            raise TruncatedError(what, n, len(data))
        self.data += data
        return data if keep else b""

    def string(self, what: str, keep: bool = True) -> bytes:
        n = self.u64(f"the length of {what}")
        return self.take(n, what, keep)


def _parse_header(h: _HeaderReader) -> list[TensorInfo]:
    """Tensor regions of a GGUF file (absolute offsets), sorted by offset, validated."""
    h.ensure(_PREAMBLE.size, "the GGUF preamble")
    magic, version, n_tensors, n_kv = _PREAMBLE.unpack_from(h.buf, h.i)
    h.i += _PREAMBLE.size
    if magic != MAGIC:
        raise FormatError("not a GGUF file (bad magic)")
    if version not in VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in (1, 2, 3):
            raise FormatError(f"big-endian GGUF (version {swapped}) is not supported")
        if version == 1:
            raise FormatError("GGUF version 1 is not supported (only versions 2 and 3)")
        raise FormatError(f"unknown GGUF version {version}")
    if n_tensors > MAX_TENSORS:
        raise FormatError(f"GGUF tensor count {n_tensors} exceeds {MAX_TENSORS}")
    if n_kv > MAX_KV:
        raise FormatError(f"GGUF metadata count {n_kv} exceeds {MAX_KV}")

    alignment = DEFAULT_ALIGNMENT
    keys: set[bytes] = set()
    for k in range(n_kv):
        key = h.string(f"metadata key {k}")
        if key in keys:
            raise FormatError(f"GGUF metadata key {key!r} appears twice")
        keys.add(key)
        vtype = h.u32(f"the type of metadata {key!r}")
        if key == ALIGNMENT_KEY:
            if vtype != T_UINT32:
                raise FormatError(f"general.alignment has type {vtype}, not uint32")
            alignment = h.u32("general.alignment")
            if alignment == 0 or alignment & (alignment - 1):
                raise FormatError(f"general.alignment {alignment} is not a power of two")
        else:
            _skip_value(h, vtype, f"metadata {key!r}", 0)

    infos: list[tuple[str, tuple[int, ...], GgmlType, int, int]] = []
    names: set[str] = set()
    for t in range(n_tensors):
        raw = h.string(f"the name of tensor {t}")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"tensor {t}: name {raw[:64]!r} is not UTF-8") from None
        if name in names:
            raise FormatError(f"tensor name {name!r} appears twice")
        names.add(name)
        n_dims = h.u32(f"the dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise FormatError(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        ne = tuple(h.u64(f"a dimension of tensor {name!r}") for _ in range(n_dims))
        type_id = h.u32(f"the type of tensor {name!r}")
        offset = h.u64(f"the offset of tensor {name!r}")
        ggml = GGML_TYPES.get(type_id)
        if ggml is None:
            raise FormatError(f"tensor {name!r} has unknown ggml type {type_id}")
        length = _nbytes(name, ne, ggml)
        if offset % alignment:
            raise FormatError(f"tensor {name!r}: offset {offset} is not a multiple of {alignment}")
        infos.append((name, ne, ggml, offset, length))
    h.commit()

    data_start = -(-h.size // alignment) * alignment
    regions: list[TensorInfo] = []
    for name, ne, ggml, offset, length in infos:
        if ggml.dtype == dtypes.OPAQUE:
            shape: tuple[int, ...] = (length,)
        else:
            shape = tuple(reversed(ne))
        regions.append(TensorInfo(name, ggml.dtype, shape, data_start + offset, length))
    return in_file_order(regions, data_start)


def _nbytes(name: str, ne: tuple[int, ...], ggml: GgmlType) -> int:
    """Bytes of a tensor with ggml dimensions ne (ggml_nbytes for a contiguous tensor)."""
    for d in ne:
        if d > MAX_DIM:
            raise FormatError(f"tensor {name!r}: dimension {d} is out of range")
    row = ne[0] if ne else 1
    if row % ggml.block_size:
        raise FormatError(
            f"tensor {name!r}: row of {row} elements is not a multiple of the {ggml.name} "
            f"block size {ggml.block_size}"
        )
    n = row // ggml.block_size * ggml.type_size
    for d in ne[1:]:
        n *= d
        if n > MAX_TENSOR_BYTES:  # stop early: the product of hostile dimensions can be huge
            break
    if n > MAX_TENSOR_BYTES:
        raise FormatError(f"tensor {name!r}: {ggml.name}{list(ne)} is more than {MAX_TENSOR_BYTES} bytes")
    return n


def _skip_value(h: _HeaderReader, vtype: int, what: str, depth: int) -> None:
    size = VALUE_SIZE.get(vtype)
    if size is not None:
        h.skip(size, what)
    elif vtype == T_STRING:
        h.string(what, keep=False)
    elif vtype == T_ARRAY:
        if depth >= MAX_NESTING:
            raise FormatError(f"{what}: arrays nested more than {MAX_NESTING} deep")
        etype = h.u32(f"the element type of {what}")
        count = h.u64(f"the length of {what}")
        size = VALUE_SIZE.get(etype)
        if size is not None:
            if count * size > MAX_HEADER:
                raise FormatError(f"{what}: array of {count} elements exceeds the header limit")
            h.skip(count * size, what)
        elif etype == T_STRING:
            _skip_strings(h, count, what)
        elif etype == T_ARRAY:
            if count * 12 > MAX_HEADER:  # every array takes at least 12 bytes
                raise FormatError(f"{what}: array of {count} arrays exceeds the header limit")
            for _ in range(count):
                _skip_value(h, T_ARRAY, what, depth + 1)
        else:
            raise FormatError(f"{what}: unknown array element type {etype}")
    else:
        raise FormatError(f"{what}: unknown metadata value type {vtype}")


def _skip_strings(h: _HeaderReader, count: int, what: str) -> None:
    """An array of count strings (a vocabulary: often 100k+ entries, so kept tight)."""
    if count * 8 > MAX_HEADER:
        raise FormatError(f"{what}: array of {count} strings exceeds the header limit")
    unpack = _U64.unpack_from
    for _ in range(count):
        i = h.i
        buf = h.buf
        if i + 8 <= len(buf):
            (n,) = unpack(buf, i)
            if i + 8 + n <= len(buf):
                h.i = i + 8 + n
                continue
        h.string(what, keep=False)
