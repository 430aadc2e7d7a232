"""What every checkpoint format produces: a stream of skeleton bytes and tensor regions.

A format parser reads a checkpoint *sequentially* from a `ByteReader` (git pipes the file to the
filter; nothing guarantees a seekable file) and yields events in file order:

- `Skeleton(data)`: bytes that are not tensor data (headers, pickle, zip records, padding);
- `Tensor(info, data)`: one tensor region, its bytes in `data`.

Concatenating the bytes of all events in order gives back the file exactly. A parser raises
`FormatError` when the input is not what it expected; the caller then stores the file whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from git_theta_like.errors import FormatError, TruncatedError


@dataclass(frozen=True)
class TensorInfo:
    """Where a tensor lives in a checkpoint file and how to read its bytes."""

    name: str
    dtype: str  # canonical name from git_theta_like.dtypes (or "BYTES" for opaque regions)
    shape: tuple[int, ...]
    offset: int  # byte offset in the file
    length: int  # number of bytes


@dataclass
class Skeleton:
    data: bytes | bytearray


@dataclass
class Tensor:
    info: TensorInfo
    data: bytearray = field(repr=False)


Event = Skeleton | Tensor


class Source(Protocol):
    def readinto(self, buffer: memoryview, /) -> int: ...


class BufferSource(Source, Protocol):
    """A Source that can hand over its next n bytes as a buffer of its own, uncopied, when
    they are one whole buffer it holds (a merge hands its merged tensors to clean this way:
    a tensor-sized copy less). None when they are not: the caller reads them as usual."""

    def take(self, n: int, /) -> bytearray | None: ...


class HashingSource:
    """A Source read through SHA-256 and a byte count (to check content against a git-lfs
    pointer's oid and size while it is being cleaned)."""

    def __init__(self, source: Source | BinaryIO) -> None:
        self.source: Source = source  # type: ignore[assignment]  # binary files have readinto
        self.sha = hashlib.sha256()
        self.size = 0

    def readinto(self, buffer: memoryview, /) -> int:
        n = self.source.readinto(buffer) or 0
        self.sha.update(buffer[:n])
        self.size += n
        return n

    def drain(self) -> None:
        """Read (and hash) the rest of the source."""
        buf = memoryview(bytearray(1 << 20))
        while self.readinto(buf):
            pass


EXACT_ALLOC = 64 * 1024 * 1024  # read_exact allocates at most this ahead of the bytes it has read


class ByteReader:
    """Sequential reader over a `Source` with exact reads, a small peek buffer and a position."""

    def __init__(self, source: Source | BinaryIO) -> None:
        self._src: Source = source  # type: ignore[assignment]  # binary files have readinto
        self._take: Callable[[int], bytearray | None] | None = getattr(source, "take", None)  # BufferSource
        self._pending = bytearray()  # bytes peeked but not yet consumed
        self.position = 0
        self._eof = False
        # Views of every byte consumed since the last mark(): when a parser fails half-way, the
        # caller recovers the bytes it consumed but never yielded (no copies are made).
        self._journal: list[memoryview] = []
        self.journaling = True

    def mark(self) -> None:
        """Forget the journal: everything consumed so far has been accounted for."""
        self._journal.clear()

    def consumed_since_mark(self) -> bytes:
        return b"".join(self._journal)

    def _fill(self, n: int) -> None:
        """Make at least n bytes available in _pending, unless the source ends first.

        One read buffer serves the whole fill (a source such as git's pkt-line stream gives 64 KiB
        a read: a buffer per read would be allocated, and zeroed, thousands of times), and it is
        at most EXACT_ALLOC, so memory follows the bytes that arrive, not the n asked for."""
        short = n - len(self._pending)
        if short <= 0 or self._eof:
            return
        chunk = memoryview(bytearray(min(max(short, 65536), EXACT_ALLOC)))
        while len(self._pending) < n:
            got = self._src.readinto(chunk[: max(65536, min(len(chunk), n - len(self._pending)))])
            if not got:
                self._eof = True
                break
            self._pending += chunk[:got]

    def peek(self, n: int) -> bytes:
        """Up to n next bytes, without consuming them (fewer only at end of input)."""
        self._fill(n)
        return bytes(self._pending[:n])

    def at_eof(self) -> bool:
        self._fill(1)
        return not self._pending

    def _read_into(self, buf: memoryview) -> int:
        """Fill buf as far as the input allows, without journaling."""
        n = len(buf)
        done = 0
        if self._pending:
            take = min(n, len(self._pending))
            buf[:take] = self._pending[:take]
            del self._pending[:take]
            done = take
        while done < n and not self._eof:
            got = self._src.readinto(buf[done:])
            if not got:
                self._eof = True
                break
            done += got
        self.position += done
        return done

    def readinto_exact(self, buf: memoryview) -> int:
        """Fill buf as far as the input allows; returns the number of bytes written."""
        done = self._read_into(buf)
        if done and self.journaling:
            self._journal.append(buf[:done])
        return done

    def readinto(self, buffer: memoryview, /) -> int:
        """As readinto_exact: a ByteReader is itself a Source."""
        return self.readinto_exact(buffer)

    def read_exact(self, n: int, what: str = "data") -> bytearray:
        """Exactly n bytes, or TruncatedError naming `what` if the input ends first.

        The buffer grows as the bytes arrive (EXACT_ALLOC at a time), so a length claimed by a
        header costs memory only for the bytes that exist: a 100-byte file claiming a 100 GB
        tensor allocates kilobytes, not 100 GB, and ends in TruncatedError.

        From a BufferSource, n bytes that are one of its buffers come as that buffer."""
        if self._take is not None and not self._pending:
            whole = self._take(n)
            if whole is not None:
                self.position += n
                if self.journaling:
                    self._journal.append(memoryview(whole))
                return whole
        if n <= EXACT_ALLOC:
            buf = bytearray(n)
            got = self.readinto_exact(memoryview(buf))
            if got != n:
                raise TruncatedError(what, n, got)
            return buf
        buf = bytearray()
        chunk = bytearray(EXACT_ALLOC)
        view = memoryview(chunk)
        while len(buf) < n:
            got = self._read_into(view[: min(EXACT_ALLOC, n - len(buf))])
            if not got:
                break
            buf += view[:got]  # realloc in place (mremap) for big buffers: no second copy
        del view
        if buf and self.journaling:
            self._journal.append(memoryview(buf))
        if len(buf) != n:
            raise TruncatedError(what, n, len(buf))
        return buf

    def read_upto(self, n: int) -> bytes:
        """Up to n bytes (fewer only at end of input)."""
        parts = []
        left = n
        while left > 0:
            buf = bytearray(min(left, 1 << 22))
            got = self._read_into(memoryview(buf))
            if not got:
                break
            del buf[got:]
            parts.append(buf)
            left -= got
        data = b"".join(parts)
        if data and self.journaling:
            self._journal.append(memoryview(data))
        return data


def rest_as_skeleton(reader: ByteReader, chunk: int = 16 * 1024 * 1024) -> Iterator[Skeleton]:
    """Everything after the last tensor (trailing bytes) as skeleton, in bounded chunks."""
    while rest := reader.read_upto(chunk):
        yield Skeleton(rest)


class FormatParser(Protocol):
    """A checkpoint format: recognises its files and splits them into events."""

    name: str

    def sniff(self, head: bytes) -> bool:
        """True when the first bytes of a file look like this format."""
        ...

    def split(self, reader: ByteReader) -> Iterator[Event]:
        """Yield the file's events in order, consuming the reader to its end.

        The caller calls `reader.mark()` after each event it receives; on FormatError it takes
        `reader.consumed_since_mark()` as the bytes read but not yet yielded.
        """
        ...


def in_file_order(regions: list[TensorInfo], data_start: int) -> list[TensorInfo]:
    """Tensor regions sorted by offset (ties by length, else kept in the order given), none before
    data_start and none overlapping another: overlapping regions cannot be split exactly."""
    out = sorted(regions, key=lambda r: (r.offset, r.length))
    end_prev = data_start
    for r in out:
        if r.offset < end_prev:
            raise FormatError(f"tensor {r.name!r} overlaps the tensor before it")
        end_prev = r.offset + r.length
    return out


def data_section(
    reader: ByteReader, regions: list[TensorInfo], start: int, chunk: int = 16 * 1024 * 1024
) -> Iterator[Event]:
    """The events of a file from byte `start` (the end of its header) on, for a format whose
    header lists every tensor region (safetensors, GGUF): each region (as `in_file_order` gives
    them) as a Tensor, and the bytes before, between and after them as skeleton, read and yielded
    in pieces of at most `chunk` bytes (a hostile offset fails at the end of the input instead of
    holding what it claims in one piece)."""
    pos = start
    for info in regions:
        gap = info.offset - pos
        while gap > 0:
            part = reader.read_exact(min(gap, chunk), f"the bytes before tensor {info.name!r}")
            gap -= len(part)
            yield Skeleton(part)
        yield Tensor(info, reader.read_exact(info.length, f"tensor {info.name!r}"))
        pos = info.offset + info.length
    yield from rest_as_skeleton(reader, chunk)
