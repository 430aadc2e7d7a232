"""Git's pkt-line framing, as used by the long-running filter protocol (gitprotocol-common(5)).

A packet is a 4-hex-digit length (including those 4 bytes) followed by data; `0000` is a flush
packet that ends a list or a content stream. Data is at most 65516 bytes per packet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import BinaryIO

from git_theta_like.errors import ProtocolError

MAX_DATA = 65516
FLUSH = b"0000"
PIPE_BYTES = 1 << 20  # Linux's default pipe-max-size for unprivileged processes


def grow_pipe(fd: int) -> None:
    """Give the pipe on fd a 1 MiB buffer instead of 64 KiB, where it is a pipe and the OS allows.

    A checkpoint crosses git's pipes in 64 KiB packets; with the default buffer each 64 KiB
    written waits for git to read it (a context switch per packet, both ways). Not a pipe, not
    Linux, or over the limit: left as it is.
    """
    try:
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, ImportError, AttributeError, ValueError):
        pass


class PktReader:
    def __init__(self, stream: BinaryIO) -> None:
        self._f = stream

    def _read_len(self) -> int | None:
        """Data length of the next packet; None for a flush packet; EOFError at end of input."""
        head = self._f.read(4)
        if not head:
            raise EOFError
        if len(head) != 4:
            raise ProtocolError("input ends inside a pkt-line length")
        try:
            n = int(head, 16)
        except ValueError:
            raise ProtocolError(f"bad pkt-line length {head!r}") from None
        if n == 0:
            return None
        if n < 4 or n - 4 > MAX_DATA:
            raise ProtocolError(f"bad pkt-line length {n}")
        return n - 4

    def read_packet(self) -> bytes | None:
        n = self._read_len()
        if n is None:
            return None
        data = self._f.read(n)
        if len(data) != n:
            raise ProtocolError("input ends inside a pkt-line")
        return data

    def read_text_list(self) -> list[str]:
        """Text packets up to the next flush, without their trailing newlines."""
        out = []
        while (pkt := self.read_packet()) is not None:
            out.append(pkt.decode("utf-8", "surrogateescape").rstrip("\n"))
        return out

    def content(self) -> ContentSource:
        return ContentSource(self)


class ContentSource:
    """The packets of one content stream, up to its flush, read as a plain byte source."""

    def __init__(self, reader: PktReader) -> None:
        self._r = reader
        self._left = 0  # bytes left in the current packet
        self.done = False

    def readinto(self, buf: memoryview) -> int:
        if self.done or not len(buf):
            return 0
        if self._left == 0:
            try:
                n = self._r._read_len()
            except EOFError:
                raise ProtocolError("input ends inside a content stream") from None
            if n is None:
                self.done = True
                return 0
            self._left = n
        want = min(len(buf), self._left)
        got: int = self._r._f.readinto(buf[:want])  # type: ignore[attr-defined]
        if not got:
            raise ProtocolError("input ends inside a pkt-line")
        self._left -= got
        return got

    def drain(self) -> None:
        """Consume the rest of the stream (after an error, git still expects us to read it)."""
        scratch = memoryview(bytearray(1 << 20))
        while self.readinto(scratch):
            pass


class PktWriter:
    def __init__(self, stream: BinaryIO) -> None:
        self._f = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def packet(self, data: bytes) -> None:
        if len(data) > MAX_DATA:
            raise ValueError("pkt-line data too long")
        self._f.write(b"%04x" % (len(data) + 4))
        self._f.write(data)

    def text(self, line: str) -> None:
        self.packet(line.encode() + b"\n")

    def text_list(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.text(line)
        self.flush_packet()

    def flush_packet(self) -> None:
        self._f.write(FLUSH)

    def content(self, data: bytes | bytearray | memoryview) -> None:
        """Write data as content packets (no flush: call flush_packet when the stream ends).

        Large content goes straight to the file descriptor with writev, packets gathered
        without copying the data; small content goes through the buffer.
        """
        mv = memoryview(data).cast("B")
        if len(mv) < 4 * MAX_DATA or self._fd is None:
            for i in range(0, len(mv), MAX_DATA):
                part = mv[i : i + MAX_DATA]
                self._f.write(b"%04x" % (len(part) + 4))
                self._f.write(part)
            return
        self._f.flush()
        iov: list[bytes | memoryview] = []
        for i in range(0, len(mv), MAX_DATA):
            part = mv[i : i + MAX_DATA]
            iov += (b"%04x" % (len(part) + 4), part)
            if len(iov) >= 64:
                self._writev(iov)
                iov = []
        if iov:
            self._writev(iov)

    def _writev(self, iov: list[bytes | memoryview]) -> None:
        assert self._fd is not None
        while iov:
            n = os.writev(self._fd, iov)
            while iov and n >= len(iov[0]):
                n -= len(iov[0])
                iov.pop(0)
            if n:
                iov[0] = memoryview(iov[0])[n:]

    def flush(self) -> None:
        self._f.flush()
