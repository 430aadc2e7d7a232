"""PyTorch zip checkpoints (`torch.save` output: .pt, .pth, .bin), split while streaming.

A torch.save file is a zip archive of uncompressed ("stored") records under one folder, the
archive name (`archive`, or the file's base name when torch wrote to a path):

    <archive>/data.pkl            the pickled object graph; tensors refer to storages by key
    <archive>/.format_version, <archive>/.storage_alignment, <archive>/byteorder
    <archive>/data/<key>          the raw bytes of each storage
    <archive>/version, <archive>/.data/serialization_id
    central directory, zip64 end record and locator, end record

torch's writer (miniz) sets flag bit 3 on every record: the local header carries no sizes or
CRC, a data descriptor follows the data instead, and 64-byte alignment padding sits in the
local header's extra field (id "FB"). Reading sequentially (the file may come from a pipe),
record lengths are found like this:

- data.pkl, first, and other small records: scan forward for a data descriptor whose sizes
  equal the distance scanned and whose CRC-32 matches (bounded);
- `data/<key>`: the length is what the pickle says (numel x itemsize, or bytes for untyped
  storages); the descriptor that follows must agree. The storage bytes become a tensor region.

Records without bit 3 (other zip writers) carry their sizes in the header (zip64 extra field
when they are 0xFFFFFFFF). Everything else (headers, descriptors, small records, central
directory, end records) is skeleton; the central directory and end records are checked against
what was read, so a truncated or inconsistent file is refused rather than half understood.
The pickle is read with `pickle_reader`, which never executes it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from git_theta_like import dtypes
from git_theta_like.errors import FormatError, TruncatedError
from git_theta_like.formats.base import ByteReader, Event, Skeleton, Tensor, TensorInfo

if TYPE_CHECKING:
    from git_theta_like.formats.pytorch.pickle_reader import PickleContents

LOCAL_SIG = b"PK\x03\x04"
CENTRAL_SIG = b"PK\x01\x02"
DESCRIPTOR_SIG = b"PK\x07\x08"
ZIP64_END_SIG = b"PK\x06\x06"
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
END_SIG = b"PK\x05\x06"

U16_MAX = 0xFFFF
U32_MAX = 0xFFFFFFFF
ZIP64_EXTRA_ID = 0x0001

FLAG_ENCRYPTED = 0x0001 | 0x0040 | 0x2000  # traditional, strong, central-directory encryption
FLAG_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800
STORED, DEFLATED = 0, 8

MAX_SMALL_RECORD = 32 * 1024 * 1024  # a non-storage record is held whole (as the pickle is)
MAX_TAIL = 64 * 1024 * 1024  # central directory and end records
CRC_CHECK_LIMIT = 1024 * 1024  # storages up to this size get their CRC-32 checked
MAX_STORAGE = 1 << 48
SCAN_WINDOW = 64 * 1024
SKELETON_FLUSH = 4 * 1024 * 1024

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_CENTRAL_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_ZIP64_END = struct.Struct("<4sQHHIIQQQQ")  # 56 bytes
_ZIP64_LOCATOR = struct.Struct("<4sIQI")  # 20 bytes
_END = struct.Struct("<4sHHHHIIH")  # 22 bytes


class PyTorchZipFormat:
    name = "pytorch"

    def sniff(self, head: bytes) -> bool:
        return head[:4] == LOCAL_SIG

    def split(self, reader: ByteReader) -> Iterator[Event]:
        return _Splitter(reader).events()


@dataclass(frozen=True)
class _Record:
    """A local record as read, for checking the central directory against it."""

    raw_name: bytes
    offset: int
    method: int
    crc: int
    csize: int
    usize: int


def plan_regions(contents: PickleContents) -> dict[str, TensorInfo]:
    """The tensor region of each storage in the pickle, keyed by storage key, at offset 0: the
    offset of the storage record's data, known once the record is read, replaces it.

    Name: the key path of the first tensor (in pickle order) that uses the storage, or
    `storage.<key>`. Dtype: the storage's, or for an untyped storage that of its first tensor.
    Shape: the tensor's when every tensor on the storage is the same contiguous view of all of
    it (one tensor, or tied weights), else the flat element count.
    """
    views: dict[str, list[tuple[str, tuple[int, ...], int, tuple[int, ...], bool, int]]] = {}
    for t in contents.tensors:
        views.setdefault(t.storage.key, []).append(
            (t.dtype, t.shape, t.storage_offset, t.stride, t.is_contiguous(), t.numel)
        )
    first_name: dict[str, str] = {}
    first_dtype: dict[str, str] = {}
    for path, t in contents.named:
        first_name.setdefault(t.storage.key, path)
        first_dtype.setdefault(t.storage.key, t.dtype)
    regions: dict[str, TensorInfo] = {}
    used: set[str] = set()
    for key, storage in contents.storages.items():
        nbytes = storage.nbytes
        dtype = storage.dtype
        if dtype is None:
            seen = views.get(key)
            dtype = first_dtype.get(key) or (seen[0][0] if seen else dtypes.OPAQUE)
        size = dtypes.ITEMSIZE.get(dtype)
        if size is None or nbytes % size:
            dtype, size = dtypes.OPAQUE, 1
        numel = nbytes // size
        shape: tuple[int, ...] = (numel,)
        distinct = set(views.get(key, ()))
        if len(distinct) == 1:
            vdtype, vshape, voffset, _stride, contiguous, vnumel = distinct.pop()
            if vdtype == dtype and voffset == 0 and contiguous and vnumel == numel:
                shape = vshape
        name = first_name.get(key, f"storage.{key}")
        if name in used:
            name = f"{name}#storage.{key}"
        while name in used:
            name += "#"
        used.add(name)
        regions[key] = TensorInfo(name, dtype, shape, 0, nbytes)
    return regions


class _Splitter:
    def __init__(self, reader: ByteReader) -> None:
        self.reader = reader
        self.start = reader.position
        self.pending = bytearray()  # skeleton bytes consumed but not yet yielded
        self.records: list[_Record] = []
        self.prefix = ""
        self.regions: dict[str, TensorInfo] = {}
        self.stored_keys: set[str] = set()

    # ------------------------------------------------------------------ reading helpers

    def pos(self) -> int:
        return self.reader.position - self.start

    def read(self, n: int, what: str) -> bytearray:
        """Exactly n bytes of skeleton."""
        data = self.reader.read_exact(n, what)
        self.pending += data
        return data

    def flush(self) -> Iterator[Event]:
        if self.pending:
            data, self.pending = self.pending, bytearray()
            yield Skeleton(data)

    # ------------------------------------------------------------------ the file

    def events(self) -> Iterator[Event]:
        if self.reader.peek(4) != LOCAL_SIG:
            raise FormatError("not a zip file: it does not start with a local file header")
        while (sig := self.reader.peek(4)) == LOCAL_SIG:
            yield from self.record()
            if len(self.pending) >= SKELETON_FLUSH:
                yield from self.flush()
        if len(sig) < 4:
            raise FormatError("file ends after its last zip record, before the central directory")
        missing = [k for k in self.regions if k not in self.stored_keys]
        if missing:
            raise FormatError(
                f"data.pkl refers to storage {missing[0]!r}, but the archive has no record "
                f"{self.prefix}/data/{missing[0]}"
            )
        if sig != CENTRAL_SIG:
            raise FormatError(
                f"unexpected bytes {sig!r} at offset {self.pos()}, where the next zip record or "
                "the central directory should start"
            )
        self.tail()
        yield from self.flush()

    def record(self) -> Iterator[Event]:
        offset = self.pos()
        header = self.read(_LOCAL_HEADER.size, "a zip local file header")
        (_, _, flags, method, _, _, crc, csize, usize, name_len, extra_len) = _LOCAL_HEADER.unpack(header)
        raw_name = bytes(self.read(name_len, "the name of a zip record"))
        name = _decode_name(raw_name, flags)
        extra = bytes(self.read(extra_len, f"the extra field of zip record {name!r}"))
        if flags & FLAG_ENCRYPTED:
            raise FormatError(f"zip record {name!r} is encrypted")
        if method not in (STORED, DEFLATED):
            raise FormatError(f"zip record {name!r} uses compression method {method}")
        zip64 = extra_field(extra, ZIP64_EXTRA_ID)
        has_descriptor = bool(flags & FLAG_DESCRIPTOR)
        if not has_descriptor and U32_MAX in (csize, usize):
            usize, csize = _zip64_sizes(zip64, usize, csize, name)

        if not self.records:
            self.set_prefix(name)
        key = self.storage_key(name)
        if key is not None:
            region = self.regions[key]
            n = region.length
            if n > MAX_STORAGE:
                raise FormatError(f"data.pkl describes storage {key!r} as {n} bytes")
            if method != STORED:
                raise FormatError(f"storage record {name!r} is compressed; it cannot be split")
            if not has_descriptor and (csize, usize) != (n, n):
                raise FormatError(
                    f"storage record {name!r} holds {usize} bytes, but data.pkl describes {n} bytes for it"
                )
            yield from self.flush()
            data_offset = self.pos()
            data = self.reader.read_exact(n, f"storage record {name!r}")
            desc_len = 0
            if has_descriptor:
                desc_len, crc = self.peek_descriptor(n, n, zip64 is not None, name)
            if n <= CRC_CHECK_LIMIT and zlib.crc32(data) != crc:
                raise FormatError(f"storage record {name!r} fails its CRC-32 check")
            self.stored_keys.add(key)
            yield Tensor(replace(region, offset=data_offset), data)
            if has_descriptor:
                self.read(desc_len, f"the data descriptor of {name!r}")
            self.records.append(_Record(raw_name, offset, method, crc, n, n))
            return

        is_pickle = len(self.records) == 0
        if is_pickle:  # the pickle reader is loaded only for a PyTorch file
            from git_theta_like.formats.pytorch.pickle_reader import MAX_PICKLE_BYTES

            limit = MAX_PICKLE_BYTES
        else:
            limit = MAX_SMALL_RECORD
        if has_descriptor:
            if method != STORED:
                raise FormatError(f"zip record {name!r} is compressed and its size only follows its data")
            csize, desc_len, crc = self.scan_for_descriptor(limit, zip64 is not None, name)
            usize = csize
            body = self.read(csize, f"zip record {name!r}")
            self.read(desc_len, f"the data descriptor of {name!r}")
        else:
            if csize > limit:
                raise FormatError(f"zip record {name!r} is {csize} bytes, over the {limit} allowed")
            body = self.read(csize, f"zip record {name!r}")
        content = _content(body, method, usize, limit, name)
        if zlib.crc32(content) != crc:
            raise FormatError(f"zip record {name!r} fails its CRC-32 check")
        self.records.append(_Record(raw_name, offset, method, crc, csize, usize))
        if is_pickle:
            from git_theta_like.formats.pytorch.pickle_reader import read_torch_pickle

            self.regions = plan_regions(read_torch_pickle(content))
        elif name == f"{self.prefix}/byteorder" and content != b"little":
            raise FormatError(
                f"checkpoint byte order is {bytes(content[:16])!r}; only little-endian checkpoints are split"
            )

    def set_prefix(self, name: str) -> None:
        prefix, sep, rest = name.partition("/")
        if not (prefix and sep and rest == "data.pkl"):
            raise FormatError(
                f"not a PyTorch checkpoint: its first zip record is {name!r}, expected '<archive>/data.pkl'"
            )
        self.prefix = prefix

    def storage_key(self, name: str) -> str | None:
        """The storage key if name is the record of a storage the pickle describes."""
        head = f"{self.prefix}/data/"
        if not self.records or not name.startswith(head):
            return None
        key = name[len(head) :]
        if key not in self.regions:
            return None
        if key in self.stored_keys:
            raise FormatError(f"the archive holds storage record {name!r} twice")
        return key

    # ------------------------------------------------------------------ data descriptors

    def peek_descriptor(self, csize: int, usize: int, zip64_first: bool, name: str) -> tuple[int, int]:
        """The (length, CRC) of the data descriptor that must come next, without reading it."""
        ahead = self.reader.peek(28)
        found = _descriptor_at(ahead, 0, csize, usize, zip64_first)
        if found is None:
            raise FormatError(f"zip record {name!r}: no data descriptor for {csize} bytes follows its data")
        return found

    def scan_for_descriptor(self, limit: int, zip64_first: bool, name: str) -> tuple[int, int, int]:
        """Find where a stored record of unknown size ends: the first data descriptor whose
        sizes equal its distance from here and whose CRC-32 matches the bytes before it.
        Returns (size, descriptor length, CRC). Reads nothing (peeks, in growing windows)."""
        window = SCAN_WINDOW
        searched = 0  # candidates before this offset have been ruled out
        crc, crc_upto = 0, 0
        while True:
            buf = self.reader.peek(window)
            at_eof = len(buf) < window
            # A candidate needs 24 descriptor bytes + 4 of the next signature in view.
            last = len(buf) - 20 if at_eof else len(buf) - 28
            j = buf.find(DESCRIPTOR_SIG, searched, max(last + 4, searched))
            while j >= 0:
                if j > limit:
                    break
                found = _descriptor_at(buf, j, j, j, zip64_first)
                if found is not None:
                    crc = zlib.crc32(buf[crc_upto:j], crc)
                    crc_upto = j
                    if crc == found[1]:
                        return j, found[0], crc
                j = buf.find(DESCRIPTOR_SIG, j + 1, max(last + 4, j + 1))
            if at_eof:
                raise FormatError(f"file ends inside zip record {name!r}: no data descriptor")
            if window >= limit + 28:
                raise FormatError(
                    f"zip record {name!r} is over the {limit} bytes allowed (no data descriptor)"
                )
            searched = max(searched, last + 1)
            window = min(2 * window, limit + 28)

    # ------------------------------------------------------------------ end of the archive

    def tail(self) -> None:
        """Read the central directory and end records to EOF (skeleton) and check them."""
        cd_start = self.pos()
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = self.reader.read_upto(1024 * 1024)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_TAIL:
                raise FormatError(f"the zip central directory is over {MAX_TAIL} bytes")
            chunks.append(chunk)
        tail = b"".join(chunks)
        self.pending += tail
        _check_tail(tail, cd_start, self.records)


# ---------------------------------------------------------------------- record helpers


def _decode_name(raw: bytes, flags: int) -> str:
    try:
        return raw.decode("utf-8" if flags & FLAG_UTF8 else "cp437")
    except UnicodeDecodeError:
        raise FormatError(f"zip record name {raw[:80]!r} is not valid UTF-8") from None


def extra_field(extra: bytes, field_id: int) -> bytes | None:
    """The data of the first extra field with this id (a malformed rest is ignored)."""
    pos = 0
    while pos + 4 <= len(extra):
        fid, size = struct.unpack_from("<HH", extra, pos)
        if pos + 4 + size > len(extra):
            return None
        if fid == field_id:
            return extra[pos + 4 : pos + 4 + size]
        pos += 4 + size
    return None


def _zip64_sizes(zip64: bytes | None, usize: int, csize: int, name: str) -> tuple[int, int]:
    """Resolve 0xFFFFFFFF sizes from a zip64 extra field (uncompressed first, then compressed)."""
    values = list(zip64_values(zip64, [usize, csize], name))
    return values[0], values[1]


def zip64_values(zip64: bytes | None, fields: list[int], name: str) -> Iterator[int]:
    pos = 0
    for value in fields:
        if value == U32_MAX:
            if zip64 is None or pos + 8 > len(zip64):
                raise FormatError(f"zip record {name!r} needs a zip64 extra field it lacks")
            yield struct.unpack_from("<Q", zip64, pos)[0]
            pos += 8
        else:
            yield value


def _descriptor_at(buf: bytes, j: int, csize: int, usize: int, zip64_first: bool) -> tuple[int, int] | None:
    """(length, CRC) if buf[j:] is a data descriptor for these sizes, followed by the next
    record's or the central directory's signature; 24-byte (zip64) or 16-byte form."""
    if buf[j : j + 4] != DESCRIPTOR_SIG:
        return None
    for length in (24, 16) if zip64_first else (16, 24):
        after = buf[j + length : j + length + 4]
        if len(after) < 4:
            continue
        fmt = "<QQ" if length == 24 else "<II"
        if struct.unpack_from(fmt, buf, j + 8) == (csize, usize) and after in (
            LOCAL_SIG,
            CENTRAL_SIG,
        ):
            return length, struct.unpack_from("<I", buf, j + 4)[0]
    return None


def _content(body: bytearray, method: int, usize: int, limit: int, name: str) -> bytes | bytearray:
    """A small record's uncompressed content, checked against its declared size."""
    if method == STORED:
        content: bytes | bytearray = body
    else:
        if usize > limit:
            raise FormatError(f"zip record {name!r} inflates to {usize} bytes, over {limit}")
        inflater = zlib.decompressobj(-15)
        try:
            content = inflater.decompress(body, usize + 1)
        except zlib.error as e:
            raise FormatError(f"zip record {name!r} does not inflate: {e}") from None
        if not inflater.eof or inflater.unused_data or inflater.unconsumed_tail:
            raise FormatError(f"zip record {name!r}: compressed data does not end where it should")
    if len(content) != usize:
        raise FormatError(f"zip record {name!r} holds {len(content)} bytes, not {usize}")
    return content


# ---------------------------------------------------------------------- central directory


def _check_tail(tail: bytes, cd_start: int, records: list[_Record]) -> None:
    """Check that tail is a central directory listing exactly the records read, then the end
    records, ending exactly at the end of the file. Offsets are relative to the file start."""
    by_offset = {r.offset: r for r in records}
    listed: set[int] = set()
    pos = 0
    while tail[pos : pos + 4] == CENTRAL_SIG:
        if pos + _CENTRAL_HEADER.size > len(tail):
            raise TruncatedError("the zip central directory", _CENTRAL_HEADER.size, len(tail) - pos)
        (
            _,
            _,
            _,
            _,
            method,
            _,
            _,
            crc,
            csize,
            usize,
            name_len,
            extra_len,
            comment_len,
            disk,
            _,
            _,
            local_offset,
        ) = _CENTRAL_HEADER.unpack_from(tail, pos)
        end = pos + _CENTRAL_HEADER.size + name_len + extra_len + comment_len
        if end > len(tail):
            raise TruncatedError("the zip central directory", end - pos, len(tail) - pos)
        raw_name = tail[pos + _CENTRAL_HEADER.size : pos + _CENTRAL_HEADER.size + name_len]
        extra = tail[pos + _CENTRAL_HEADER.size + name_len : end - comment_len]
        zip64 = extra_field(extra, ZIP64_EXTRA_ID)
        shown = raw_name.decode("utf-8", "replace")
        usize, csize, local_offset = zip64_values(zip64, [usize, csize, local_offset], shown)
        record = by_offset.get(local_offset)
        if record is None or local_offset in listed:
            raise FormatError(
                f"the zip central directory lists {shown!r} at offset {local_offset}, where no record starts"
            )
        listed.add(local_offset)
        if (record.raw_name, record.method, record.crc, record.csize, record.usize) != (
            raw_name,
            method,
            crc,
            csize,
            usize,
        ) or disk not in (0, U16_MAX):
            raise FormatError(f"the central directory entry of {shown!r} contradicts its record")
        pos = end
    if len(listed) != len(records):
        raise FormatError(f"the zip central directory lists {len(listed)} of the {len(records)} records")
    cd_size = pos
    count = len(records)

    zip64_end: tuple[int, ...] | None = None
    if tail[pos : pos + 4] == ZIP64_END_SIG:
        zip64_at = cd_start + pos
        if pos + _ZIP64_END.size > len(tail):
            raise TruncatedError("the zip64 end record", _ZIP64_END.size, len(tail) - pos)
        zip64_end = _ZIP64_END.unpack_from(tail, pos)
        (_, record_size, _, _, disk, cd_disk, on_disk, total, z_cd_size, z_cd_offset) = zip64_end
        if record_size < _ZIP64_END.size - 12 or pos + 12 + record_size > len(tail):
            raise FormatError("the zip64 end record has an invalid size")
        if (disk, cd_disk, on_disk, total, z_cd_size, z_cd_offset) != (
            0,
            0,
            count,
            count,
            cd_size,
            cd_start,
        ):
            raise FormatError("the zip64 end record contradicts the central directory")
        pos += 12 + record_size
        if tail[pos : pos + 4] != ZIP64_LOCATOR_SIG or pos + _ZIP64_LOCATOR.size > len(tail):
            raise FormatError("the zip64 end record is not followed by its locator")
        (_, _, located, disks) = _ZIP64_LOCATOR.unpack_from(tail, pos)
        if located != zip64_at or disks > 1:
            raise FormatError("the zip64 end locator points elsewhere")
        pos += _ZIP64_LOCATOR.size

    if tail[pos : pos + 4] != END_SIG:
        if pos >= len(tail):
            raise TruncatedError("the zip end of central directory record", _END.size, 0)
        raise FormatError(f"unexpected bytes {tail[pos : pos + 4]!r} where the zip end record should be")
    if pos + _END.size > len(tail):
        raise TruncatedError("the zip end of central directory record", _END.size, len(tail) - pos)
    (_, disk, cd_disk, on_disk, total, e_cd_size, e_cd_offset, comment_len) = _END.unpack_from(tail, pos)
    actual = (0, 0, count, count, cd_size, cd_start)
    for value, want, sentinel in zip(
        (disk, cd_disk, on_disk, total, e_cd_size, e_cd_offset),
        actual,
        (U16_MAX, U16_MAX, U16_MAX, U16_MAX, U32_MAX, U32_MAX),
        strict=True,
    ):
        if value != want and not (zip64_end is not None and value == sentinel):
            raise FormatError("the zip end record contradicts the central directory")
    end = pos + _END.size + comment_len
    if end != len(tail):
        if end > len(tail):
            raise TruncatedError("the zip comment", comment_len, len(tail) - pos - _END.size)
        raise FormatError(f"{len(tail) - end} unexpected bytes follow the zip end record")
