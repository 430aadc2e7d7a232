"""The local object store, in git-lfs's own layout: `<lfs dir>/objects/ab/cd/<sha256>`.

An object's id is the SHA-256 of its bytes (what git-lfs and LFS servers verify). Objects are
written to `<lfs dir>/tmp`, then renamed into place, so a reader never sees a partial object and
a crash leaves at most a stray temp file. Every write holds the store's shared lock
(store/lock.py), which gc takes exclusively. Every read checks the object against the raw-content
hash in its header; a mismatch names the object and what it holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from git_theta_like import codecs, faults
from git_theta_like.codecs.container import (
    MAGIC,
    MAX_HEADER,
    TRAILER,
    ObjectHeader,
    recorded_chain_bytes,
    split_object,
)
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import ObjectCorruptError, ObjectMissingError
from git_theta_like.store.atomic import AtomicFile
from git_theta_like.store.lock import StoreLock

MAX_CHAIN = 64  # deltas are kept far shorter (theta-like.maxChainDepth); this guards bad input
PLAIN_CHUNK = 1 << 20  # plain git-lfs objects are streamed in chunks of this size
MAP_MIN = 4 << 20  # objects at least this large are mapped, not read (LocalStore.read)
USERS_FILE = "theta-like-repos"  # the repositories that use a store, one git dir a line


def _is_oid(oid: str) -> bool:
    return len(oid) == 64 and all(c in "0123456789abcdef" for c in oid)


class LocalStore:
    """Objects under `lfs_dir` (normally `<git common dir>/lfs`)."""

    def __init__(self, lfs_dir: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(lfs_dir)
        self.objects = self.root / "objects"
        self.tmp = self.root / "tmp"
        # A second hard link to every object we write. `git lfs prune` sees no LFS pointer
        # referencing our objects and deletes them from lfs/objects, even unpushed ones; the
        # data survives here and the link is put back when the object is next needed.
        self.keep = self.root.parent / "theta-like" / "objects"
        self.durable = durable
        # writers share it, gc takes it alone (store/lock.py)
        self.lock = StoreLock(self.root)
        self._lock = threading.Lock()
        self.reads = 0  # objects read (tests assert on it: what a command touched)
        self.writes = 0  # objects newly written
        # Set while a download of objects is under way in the background (a checkout's delayed
        # smudges): called with an object that is not here, it waits until the object has
        # arrived or the download has ended; a read tries once more after it.
        self.arriving: Callable[[str], object] | None = None

    def _await(self, oid: str) -> None:
        """Before a read: an object not here yet, while a background download runs, is waited for."""
        if self.arriving is not None and not self.has(oid):
            self.arriving(oid)

    def register_user(self, git_dir: Path) -> None:
        """Record that the repository whose common git dir this is uses this store, in
        `<lfs dir>/theta-like-repos` (one absolute path a line): gc finds there the other
        repositories that share it (`lfs.storage`). Best effort; appends only what is new."""
        me = str(git_dir.resolve())
        if me in self.users_recorded():
            return
        with contextlib.suppress(OSError):
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / USERS_FILE, "a", encoding="utf-8", errors="surrogateescape") as f:
                f.write(me + "\n")  # one short append: atomic enough under O_APPEND

    def users_recorded(self) -> list[str]:
        """The git dirs recorded as using this store (register_user), in order, once each."""
        try:
            text = (self.root / USERS_FILE).read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return []
        return list(dict.fromkeys(line for line in text.splitlines() if line.strip()))

    def path(self, oid: str) -> Path:
        """Where the object lives in git-lfs's layout (restored from the keep link if needed)."""
        if not _is_oid(oid):
            raise ObjectCorruptError(f"{oid!r} is not an object id (64 hex digits)")
        p = self.objects / oid[0:2] / oid[2:4] / oid
        if not p.exists():
            k = self.keep_path(oid)
            if k.exists():
                p.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.link(k, p)
        return p

    def keep_path(self, oid: str) -> Path:
        return self.keep / oid[0:2] / oid[2:4] / oid

    def keep_link(self, oid: str) -> None:
        """Add the keep link of a newly stored object (best effort: same filesystem only)."""
        k = self.keep_path(oid)
        try:
            k.parent.mkdir(parents=True, exist_ok=True)
            os.link(self.objects / oid[0:2] / oid[2:4] / oid, k)
        except OSError:
            pass

    def has(self, oid: str) -> bool:
        return self.path(oid).is_file()

    def touch(self, oid: str) -> bool:
        """Freshen an object found already present (a write of content it holds, a reuse by
        clean): its mtime becomes now, so gc's grace period (`--prune`) keeps it while the
        command that needs it has not made it reachable yet. False when it is gone."""
        try:
            os.utime(self.path(oid))
            return True
        except FileNotFoundError:
            return False
        except OSError:
            return True  # not ours to change (read-only store): present all the same

    def delete_if_older(self, oid: str, cutoff: float) -> int:
        """Remove an object (both links) unless either was modified at or after cutoff (an epoch
        time): gc's re-check just before it deletes, so an object a writer or a clean freshened
        since gc scanned is kept. Returns the bytes freed (0: kept or gone)."""
        links = (self.objects / oid[0:2] / oid[2:4] / oid, self.keep_path(oid))
        for p in links:
            try:
                if p.stat().st_mtime >= cutoff:
                    return 0
            except FileNotFoundError:
                pass
        return self.delete(oid)

    def delete(self, oid: str) -> int:
        """Remove an object (both links); returns the bytes freed."""
        freed = 0
        for p in (self.objects / oid[0:2] / oid[2:4] / oid, self.keep_path(oid)):
            try:
                st = p.stat()
                p.unlink()
                freed = max(freed, st.st_size)
            except FileNotFoundError:
                pass
        return freed

    def all_oids(self) -> set[str]:
        """Every object id present (in lfs/objects or only as a keep link)."""
        out: set[str] = set()
        for root in (self.objects, self.keep):
            if root.is_dir():
                out.update(p.name for p in root.glob("??/??/*") if _is_oid(p.name))
        return out

    def write(self, parts: Iterable[Buffer]) -> tuple[str, int]:
        """Store the concatenation of parts; returns (oid, size). Atomic; idempotent. Holds the
        store's shared lock meanwhile (a gc waits)."""
        with self.lock.shared():
            oid, size, new = self._write(parts)
        if new:
            faults.point("write")
        return oid, size

    def _write(self, parts: Iterable[Buffer]) -> tuple[str, int, bool]:
        h = hashlib.sha256()
        size = 0
        with AtomicFile(self.tmp, prefix="gtl-", durable=self.durable) as f:
            for part in parts:
                h.update(part)
                f.write(part)
                size += len(part)
            oid = h.hexdigest()
            dest = self.path(oid)
            if dest.exists() and self.touch(oid):
                return oid, size, False
            f.commit(dest)
            self.keep_link(oid)
            with self._lock:
                self.writes += 1
            return oid, size, True

    def write_encoded(self, enc: codecs.Encoded) -> tuple[str, int]:
        return self.write([*enc.parts, enc.header.trailer()])

    def read(self, oid: str, what: str = "object") -> bytes | memoryview:
        """The stored bytes of an object, unverified. A large object is mapped rather than read
        (a read-only view): its pages come in as it is decoded and the decoders let them go
        again chunk by chunk (codecs.planes.drop_read_pages), so decoding a tensor holds about
        one chunk of its stored bytes instead of all of them. (A mapped file truncated in place
        would fault the process: the store never truncates an object, it writes new ones by
        atomic rename and gc unlinks, both of which leave a mapping intact.)"""
        p = self.path(oid)
        self._await(oid)
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size >= MAP_MIN:
                    data: bytes | memoryview = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
                else:
                    data = f.read()
        except FileNotFoundError:
            raise ObjectMissingError(
                f"{what}: object {oid} is not in the local store ({p}); "
                "fetch it from the remote (git theta-like fetch) or re-add the file"
            ) from None
        with self._lock:
            self.reads += 1
        return data

    def read_header(self, oid: str, what: str = "object") -> ObjectHeader:
        """An object's header, reading only its trailer (not counted as a read of the object)."""
        p = self.path(oid)
        self._await(oid)
        try:
            with open(p, "rb") as f:
                return _file_header(f, oid)[0]
        except ObjectCorruptError as e:
            raise ObjectCorruptError(f"{what}: {e}") from None
        except FileNotFoundError:
            raise ObjectMissingError(f"{what}: object {oid} is not in the local store ({p})") from None

    def chain_bytes(self, oid: str, limit: int = MAX_CHAIN) -> int | None:
        """The stored bytes of an object and its whole delta chain (what a checkout of it
        downloads), from headers only: a delta's `chain_bytes` param where it is plausible, else
        (objects written before it existed) by walking the bases, at most `limit` of them.
        None when part of the chain is missing, unreadable, or longer than `limit`: the caller
        then treats the object as no base to build on. A lying param can only misstate the
        cost, never what an object decodes to."""
        total = 0
        seen: set[str] = set()
        for _ in range(limit + 1):
            if oid in seen:
                return None  # a chain that leads back to itself
            seen.add(oid)
            try:
                with open(self.path(oid), "rb") as f:
                    stored = os.fstat(f.fileno()).st_size
                    header = _file_header(f, oid)[0]
            except (OSError, ObjectCorruptError):
                return None
            recorded = recorded_chain_bytes(header, stored)
            if recorded is not None:
                return total + recorded
            total += stored
            if not header.base:
                return total
            oid = header.base
        return None

    def read_raw(
        self,
        oid: str,
        what: str = "object",
        expect_raw: str | None = None,
        _depth: int = 0,
        expect_size: int | None = None,
    ) -> bytearray | memoryview:
        """The decoded, verified raw content of an object (deltas: their bases first).

        `expect_size` (the manifest's length) is checked before anything is decoded, so a
        crafted header cannot make us allocate more than the tensor it claims to be.
        """
        return self.read_decoded(oid, what, expect_raw, expect_size, _depth)[0]

    def read_decoded(
        self, oid: str, what: str, expect_raw: str | None, expect_size: int | None, depth: int = 0
    ) -> tuple[bytearray | memoryview, ObjectHeader]:
        """read_raw's work: the raw content and the header. A store that keeps decoded objects
        overrides it (store/reader.py: CachedStore)."""

        def base_of(header: ObjectHeader) -> bytearray | memoryview:
            assert header.base is not None
            return self.read_decoded(header.base, f"{what} (delta base)", None, header.size, depth + 1)[0]

        data = self.read(oid, what)
        return self.decode_verified(oid, data, what, expect_raw, expect_size, base_of, depth)

    def decode_verified(
        self,
        oid: str,
        data: bytes | memoryview,
        what: str,
        expect_raw: str | None,
        expect_size: int | None,
        base_of: Callable[[ObjectHeader], Buffer],
        depth: int = 0,
    ) -> tuple[bytearray | memoryview, ObjectHeader]:
        """Decode an object's bytes and verify the result: sizes before decoding, the raw hash
        after. `base_of(header)` supplies a delta's base content (readers may cache it)."""
        try:
            header, payload = split_object(data, oid)
            check_expected(header, oid, expect_raw, expect_size)
            base = None
            if header.base:
                if depth >= MAX_CHAIN:
                    raise ObjectCorruptError(f"object {oid}: delta chain longer than {MAX_CHAIN}")
                base = base_of(header)
            raw = codecs.decode(header, payload, oid, base)
        except ObjectCorruptError as e:
            raise ObjectCorruptError(f"{what}: {e}") from None
        if len(raw) != header.size or hashlib.sha256(raw).hexdigest() != header.raw:
            raise ObjectCorruptError(
                f"{what}: object {oid} is corrupt: its content does not match its hash "
                f"(re-fetch it, or restore {self.path(oid)} from a clone that has it)"
            )
        return raw, header

    def iter_raw(
        self,
        oid: str,
        what: str = "object",
        expect_raw: str | None = None,
        expect_size: int | None = None,
    ) -> Iterator[bytes]:
        """The raw content of a (large) object, decoded chunk by chunk and verified at the end.

        Sizes are checked before anything is decoded (the header against `expect_size`, the
        manifest's length, and against what its payload can hold); the last chunk is only
        yielded once the whole content has matched its hash.
        """
        p = self.path(oid)
        self._await(oid)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            raise ObjectMissingError(f"{what}: object {oid} is not in the local store ({p})") from None
        with f:
            with self._lock:
                self.reads += 1
            try:
                header, payload_left = _file_header(f, oid)
                if expect_size is not None and header.size != expect_size:
                    raise ObjectCorruptError(
                        f"object {oid} holds {header.size} bytes, the manifest expects {expect_size}"
                    )
                codecs.check_payload(header, payload_left, oid)
                if expect_raw is not None and header.raw != expect_raw:
                    raise ObjectCorruptError(f"object {oid} does not hold the content the manifest expects")
                f.seek(0)

                def read(n: int) -> bytes:
                    nonlocal payload_left
                    data = f.read(min(n, payload_left))
                    payload_left -= len(data)
                    return data

                h = hashlib.sha256()
                size = 0
                held: bytes | None = None
                for chunk in codecs.iter_decode(header, read, oid):
                    if held is not None:
                        yield held
                    h.update(chunk)
                    size += len(chunk)
                    held = chunk
                if size != header.size or h.hexdigest() != header.raw or payload_left:
                    raise ObjectCorruptError(f"object {oid} is corrupt: its content does not match its hash")
                if held is not None:
                    yield held
            except ObjectCorruptError as e:
                raise ObjectCorruptError(f"{what}: {e}") from None

    def iter_plain(self, oid: str, size: int, what: str = "file") -> Iterator[bytes]:
        """The bytes of a plain git-lfs object (a whole file as git-lfs stores it: no header, its
        oid the SHA-256 of its bytes), in chunks. The size is checked before anything is read and
        the hash at the end: the last chunk is only yielded once the whole content matched."""
        p = self.path(oid)
        try:
            f = open(p, "rb")
        except FileNotFoundError:
            raise ObjectMissingError(
                f"{what}: git-lfs object {oid} is not in the local store ({p})"
            ) from None
        with f:
            actual = os.fstat(f.fileno()).st_size
            if actual != size:
                raise ObjectCorruptError(
                    f"{what}: git-lfs object {oid} holds {actual} bytes, its pointer says {size} "
                    f"(re-fetch it, or restore {p} from a clone that has it)"
                )
            with self._lock:
                self.reads += 1
            h = hashlib.sha256()
            held: bytes | None = None
            while chunk := f.read(PLAIN_CHUNK):
                if held is not None:
                    yield held
                h.update(chunk)
                held = chunk
            if h.hexdigest() != oid:
                raise ObjectCorruptError(
                    f"{what}: git-lfs object {oid} is corrupt: its content does not match its hash "
                    f"(re-fetch it, or restore {p} from a clone that has it)"
                )
            if held is not None:
                yield held


def check_expected(header: ObjectHeader, oid: str, expect_raw: str | None, expect_size: int | None) -> None:
    """ObjectCorruptError unless the header says the object holds the raw content and the size a
    manifest expects (where it says what it expects)."""
    if expect_size is not None and header.size != expect_size:
        raise ObjectCorruptError(
            f"object {oid} holds {header.size} bytes, the manifest expects {expect_size}"
        )
    if expect_raw is not None and header.raw != expect_raw:
        raise ObjectCorruptError(
            f"object {oid} holds content {header.raw[:12]}…, the manifest expects {expect_raw[:12]}…"
        )


def _file_header(f: BinaryIO, oid: str) -> tuple[ObjectHeader, int]:
    """The header of the object open in f, read from its trailer, and its payload's length."""
    total = os.fstat(f.fileno()).st_size
    if total < TRAILER.size:
        raise ObjectCorruptError(f"object {oid}: too short to be an object")
    f.seek(total - TRAILER.size)
    hlen, magic = TRAILER.unpack(f.read(TRAILER.size))
    if magic != MAGIC or hlen > MAX_HEADER or hlen > total - TRAILER.size:
        raise ObjectCorruptError(f"object {oid}: not a git-theta-like object (bad trailer)")
    f.seek(total - TRAILER.size - hlen)
    return ObjectHeader.from_bytes(f.read(hlen), oid), total - TRAILER.size - hlen
