"""Clean (checkpoint file -> manifest) and smudge (manifest -> checkpoint file).

Clean reads the file sequentially (git pipes it to the filter), splits it with the format's
parser, and hashes and encodes tensors on a thread pool while it keeps reading. A tensor whose
raw hash the previous manifest of the same path already has (git re-cleans a file after a
`touch`, or most tensors after a fine-tune) reuses that entry and costs one hash. Memory is
bounded: at most `inflight_bytes` of tensor data (or one tensor, if larger) is held at a time.

Smudge decodes the objects a manifest references, verifies each against its raw hash, and
streams skeleton and tensors back in file order, decoding ahead on the same pool: the next
`inflight_bytes` of tensors decode while the current one goes out to git.

Files that no format parses, or that fail to parse half-way (truncated, corrupt), are stored
whole as one object with a warning: clean never refuses a file and never loses a byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from git_theta_like import codecs, display, dtypes, formats
from git_theta_like.codecs import planes
from git_theta_like.codecs.container import CHAIN_BYTES
from git_theta_like.concurrency import SingleFlight
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import (
    FormatError,
    ManifestError,
    ObjectCorruptError,
    ObjectMissingError,
    ThetaLikeError,
    TruncatedError,
)
from git_theta_like.formats import ByteReader, HashingSource, Skeleton, Tensor, TensorInfo
from git_theta_like.lfs.pointer import LFS_VERSION, POINTER_MAX, LfsPointer, parse_pointer
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry, is_manifest
from git_theta_like.progress import Progress
from git_theta_like.store.local import LocalStore

DEFAULT_MAX_CHAIN = 8  # a delta chain longer than this gets a keyframe
# A delta chain may cost at most this times its tensor's raw bytes (else a keyframe): a checkout
# then never downloads more than git-lfs would (the file itself).
DEFAULT_CHAIN_RATIO = 1.0
BIG_REGION = 16 * 1024 * 1024  # regions above this have their chunks encoded in parallel
PROGRESS_DELAY = 1.0  # a file's clean or smudge shows progress once it has taken this long (s)
DEFAULT_INFLIGHT = 64 * 1024 * 1024
WHOLE = "opaque"  # manifest format name of a file stored whole

Warn = Callable[[str], None]


def _stderr_warn(msg: str) -> None:
    print(f"git-theta-like: warning: {msg}", file=sys.stderr, flush=True)


def default_workers() -> int:
    env = os.environ.get("GIT_THETA_LIKE_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class _Budget:
    """Bounds the bytes of tensor data in flight; one region larger than the budget may pass."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cv = threading.Condition()

    def acquire(self, n: int) -> None:
        with self._cv:
            self._cv.wait_for(lambda: self.used == 0 or self.used + n <= self.limit)
            self.used += n

    def release(self, n: int) -> None:
        with self._cv:
            self.used -= n
            self._cv.notify_all()


def _sha256(data: Buffer) -> str:
    return hashlib.sha256(data).hexdigest()


LoraFactors = dict[str, tuple[Any, Any]]  # tensor name -> (u, v) with delta = u @ v


class _CleanContext:
    """What clean knows about a file's previous version: contents to reuse, parents for deltas."""

    def __init__(
        self,
        previous: Manifest | None,
        options: codecs.DeltaOptions | None,
        lora: LoraFactors | None,
        known: dict[str, ObjectRef] | None = None,
        others: list[Manifest] | None = None,
    ) -> None:
        self.known: dict[str, ObjectRef] = known if known is not None else {}
        self.options = options
        self.lora = lora or {}
        self.by_name: dict[str, TensorEntry] = {}
        # the same names in the repository's other checkpoints (shards of one model: a tensor
        # that moved to another shard keeps its object, or gets a delta against it)
        self.elsewhere: dict[str, TensorEntry] = {}
        if previous is not None:
            for _, ref in previous.objects():
                self.known.setdefault(ref.raw, ref)
            self.by_name = {t.name: t for t in previous.tensors}
        for m in others or ():
            for t in m.tensors:
                self.known.setdefault(t.obj.raw, t.obj)
                self.elsewhere.setdefault(t.name, t)

    def parent_of(self, info: TensorInfo) -> TensorEntry | None:
        """The previous version of a tensor: same name, else an unambiguous rename (one name a
        dotted suffix of the other, e.g. `embeddings.x` -> `bert.embeddings.x`); same dtype and
        shape either way. None when deltas are off."""
        if self.options is None:
            return None
        same = self.by_name.get(info.name)
        if same is not None:
            return same if (same.dtype, same.shape) == (info.dtype, info.shape) else None
        found = [
            t
            for t in self.by_name.values()
            if (t.dtype, t.shape) == (info.dtype, info.shape)
            and (info.name.endswith("." + t.name) or t.name.endswith("." + info.name))
        ]
        if len(found) == 1:
            return found[0]
        moved = self.elsewhere.get(info.name)
        if moved is not None and (moved.dtype, moved.shape) == (info.dtype, info.shape):
            return moved
        return None

    def factors_for(self, name: str) -> tuple[Any, Any] | None:
        if not self.lora:
            return None
        from git_theta_like.filters.lora import match

        return match(self.lora, name)


@dataclass
class _Piece:
    """One event of the file, in order: skeleton bytes, or a tensor being stored."""

    skeleton: Buffer | None = None
    info: TensorInfo | None = None
    future: Future[ObjectRef] | None = None


class Engine:
    """Clean and smudge for one repository's store, sharing one thread pool."""

    def __init__(
        self,
        store: LocalStore,
        workers: int | None = None,
        inflight_bytes: int = DEFAULT_INFLIGHT,
        warn: Warn = _stderr_warn,
        *,
        deltas: bool = True,
        max_chain_depth: int = DEFAULT_MAX_CHAIN,
        max_chain_ratio: float = DEFAULT_CHAIN_RATIO,
        svd_seconds: float = 30.0,
        lora: LoraFactors | None = None,
    ) -> None:
        self.store = store
        self.workers = workers or default_workers()
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="gtl-work")
        # Big regions are coordinated from here: they wait on pool tasks, never inside one.
        self.big = ThreadPoolExecutor(1, thread_name_prefix="gtl-big")
        self.inflight_bytes = inflight_bytes
        self.warn = warn
        self._lock = threading.Lock()
        self._storing: SingleFlight[str, ObjectRef] = SingleFlight()  # raw hash -> object
        self.deltas = deltas
        self.max_chain_depth = max_chain_depth
        self.max_chain_ratio = max_chain_ratio
        self.svd_seconds = svd_seconds
        self.lora = lora
        self._holds_lock = False

    def close(self) -> None:
        self.pool.shutdown()
        self.big.shutdown()
        with self._lock:
            if self._holds_lock:
                self._holds_lock = False
                self.store.lock.release_shared()

    def hold_store_lock(self) -> None:
        """Hold the store's shared lock from now until close (store/lock.py): the objects a
        clean writes stay safe from gc until the git command that runs this Engine (the filter
        process lives as long as it) has written the index that names them."""
        with self._lock:
            if not self._holds_lock:
                self.store.lock.acquire_shared()
                self._holds_lock = True

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- clean

    def clean(
        self,
        reader: ByteReader,
        previous: Manifest | None = None,
        path: str = "",
        others: list[Manifest] | None = None,
        lfs_pointer: bytes | None = None,
    ) -> bytes:
        """Store the file read from reader; returns its manifest (or a manifest, unchanged).

        An empty file gives the empty blob (git never smudges an empty blob, so a manifest of an
        empty file would always look modified); a git-lfs pointer is kept as it is. With
        `lfs_pointer` (the staged blob is a git-lfs pointer: the path was plain git-lfs before it
        was tracked), a file whose content is that pointer's object gives the pointer back
        unchanged, as git-lfs's clean does, so `git status` stays clean; a changed file gives a
        manifest."""
        self.hold_store_lock()
        if lfs_pointer is not None:
            pointer = parse_pointer(lfs_pointer)
            if pointer is not None and not pointer.extensions:
                return self._clean_over_pointer(reader, previous, path, others, lfs_pointer, pointer)
        head = reader.peek(formats.SNIFF_BYTES)
        if not head:
            return b""
        if is_manifest(head):
            return self._clean_manifest(reader, path)
        if head.startswith(LFS_VERSION):
            whole = reader.peek(POINTER_MAX)
            if len(whole) < POINTER_MAX and parse_pointer(whole) is not None:
                reader.read_upto(POINTER_MAX)
                return whole  # a git-lfs pointer left by a skip-smudge checkout: keep it
        ctx = _CleanContext(previous, self.delta_options(), self.lora, None, others)
        known = ctx.known
        parser = formats.detect(head)
        if parser is None:
            return self._store_whole(iter(()), reader, known, path).to_bytes()
        pieces: list[_Piece] = []
        budget = _Budget(self.inflight_bytes)
        # tensors stored of those read so far, their bytes, the rate
        label = f"Storing {display.printable(path) or 'file'}"
        progress = Progress(label, unit="tensors", delay=PROGRESS_DELAY)
        try:
            for event in formats.split(parser, reader):
                reader.mark()
                if isinstance(event, Skeleton):
                    pieces.append(_Piece(skeleton=event.data))
                elif isinstance(event, Tensor):
                    fut = self._submit(event, ctx, budget, progress)
                    pieces.append(_Piece(info=event.info, future=fut))
        except FormatError as e:
            progress.finish()
            self.warn(f"{path or 'file'}: not split as {parser.name} ({e}); stored whole")
            leftover = reader.consumed_since_mark()
            kept = self._store_whole(self._replay(pieces, leftover), reader, known, path)
            shorter = previous is not None and (isinstance(e, TruncatedError) or kept.size < previous.size)
            if previous is not None and previous.format != WHOLE and shorter:
                self._warn_truncated(path, kept.size, previous.size)
            return kept.to_bytes()
        try:
            return self._finish(parser.name, pieces, known).to_bytes()
        finally:
            progress.finish()

    def _warn_truncated(self, path: str, size: int, staged: int) -> None:
        """The staged version of path parsed as a checkpoint, this content ends inside it: most
        likely a checkout that ran out of disk space. Said loudly; the bytes are stored anyway."""
        name = display.printable(path) or "file"
        self.warn(
            f"{name} LOOKS TRUNCATED: it is {size} bytes and ends inside a tensor, its staged "
            f"version is a {staged}-byte checkpoint (a checkout that ran out of disk space?). "
            f"It was stored as it is; to get the checkpoint back run `git theta-like checkout "
            f"{name}` (after `git restore --staged {name}` if this was `git add`)"
        )

    def _clean_over_pointer(
        self,
        reader: ByteReader,
        previous: Manifest | None,
        path: str,
        others: list[Manifest] | None,
        blob: bytes,
        pointer: LfsPointer,
    ) -> bytes:
        """clean() of a file whose staged blob is a git-lfs pointer: hashes what it reads while it
        cleans; the pointer itself when the content is the pointer's object (same SHA-256, same
        size), else the manifest."""
        reader.journaling = False  # the inner reader keeps its own journal
        hashing = HashingSource(reader)
        out = self.clean(ByteReader(hashing), previous, path, others)
        hashing.drain()  # whatever clean left unread still counts
        if hashing.size == pointer.size and hashing.sha.hexdigest() == pointer.oid:
            return blob
        return out

    def _clean_manifest(self, reader: ByteReader, path: str) -> bytes:
        """A manifest being cleaned (the working tree holds manifests after a skip-smudge
        checkout): keep it as it is, so that `git status` stays clean."""
        data = bytes(reader.read_upto(1 << 30))
        if not reader.at_eof():
            raise ThetaLikeError(f"{path}: a manifest larger than 1 GiB is not plausible")
        try:
            Manifest.from_bytes(data)
        except ManifestError as e:
            self.warn(f"{path or 'file'}: looks like a manifest but is not valid ({e})")
        return data

    def _submit(
        self, event: Tensor, ctx: _CleanContext, budget: _Budget, progress: Progress
    ) -> Future[ObjectRef]:
        n = len(event.data)
        progress.add_total(1, n)
        budget.acquire(n)
        if n > BIG_REGION:
            fut = self.big.submit(self._store_region, event.info, event.data, ctx, self.pool.map)
        else:
            fut = self.pool.submit(self._store_region, event.info, event.data, ctx, map)

        def done(_: Future[ObjectRef]) -> None:
            budget.release(n)
            progress.step(n)

        fut.add_done_callback(done)
        return fut

    def _store_region(
        self, info: TensorInfo, data: bytearray, ctx: _CleanContext, map_fn: planes.MapFn
    ) -> ObjectRef:
        known = ctx.known
        # a big region (map_fn spreads work over the pool): hash it on the pool too
        raw = _sha256(data) if map_fn is map else self.pool.submit(_sha256, data).result()
        ref = known.get(raw)
        if ref is not None and self._reusable(ref, raw, len(data)):
            return ref
        # The same content being stored right now by another worker (tied or zero tensors):
        # wait for it rather than encode it twice. That worker is running, so this cannot block.
        return self._storing.run(raw, lambda: self._store_new(info, data, raw, ctx, map_fn))

    def _store_new(
        self, info: TensorInfo, data: bytearray, raw: str, ctx: _CleanContext, map_fn: planes.MapFn
    ) -> ObjectRef:
        """Encode and write a region whose content (raw hash) has no reusable object yet; the
        new object is known to the rest of this clean from then on."""
        enc = self._encode(info, data, raw, ctx, map_fn)
        oid, size = self.store.write_encoded(enc)
        extra: tuple[tuple[str, str], ...] = ()
        if enc.header.base:
            extra = (
                ("depth", str(enc.header.params["depth"])),
                ("base", enc.header.base),
                ("base-size", str(enc.header.params["base_size"])),
            )
        ref = ObjectRef(raw, oid, size, enc.header.codec, extra)
        ctx.known.setdefault(raw, ref)
        return ref

    def _reusable(self, ref: ObjectRef, raw: str, size: int) -> bool:
        """Whether a known (raw hash -> object) pair may be reused for content of that raw hash
        and size: the object is here and its own header (its trailer, a cheap read) names that
        hash and size. A pair from a hand-made or lying manifest fails this and the content is
        encoded anew. A reused object is freshened (store.touch), so that a concurrent gc's
        grace period protects it as it protects a new one."""
        if ref.raw != raw:
            return False
        try:
            header = self.store.read_header(ref.oid)
        except ThetaLikeError:  # missing, corrupt, or not an object id
            return False
        if header.raw != raw or header.size != size:
            return False
        try:  # the manifest's stored size too: pushes and fetches trust it
            if self.store.path(ref.oid).stat().st_size != ref.stored:
                return False
        except OSError:
            return False
        return self.store.touch(ref.oid)

    def _encode(
        self, info: TensorInfo, data: bytearray, raw: str, ctx: _CleanContext, map_fn: planes.MapFn
    ) -> codecs.Encoded:
        """A delta against the tensor's previous version when there is one and its chain stays
        within both bounds (depth, stored bytes), else a keyframe."""
        parent = ctx.parent_of(info)
        enc = None if parent is None else self._delta(info, data, raw, parent, ctx, map_fn)
        return enc if enc is not None else codecs.encode(data, info.dtype, info.shape, raw, map_fn)

    def chain_budget(self, raw_size: int) -> int:
        """The most stored bytes a tensor's delta chain (keyframe + deltas) may take: a checkout
        of it then downloads at most `max_chain_ratio` times the tensor's raw bytes."""
        return int(raw_size * self.max_chain_ratio)

    def _delta(
        self,
        info: TensorInfo,
        data: bytearray,
        raw: str,
        parent: TensorEntry,
        ctx: _CleanContext,
        map_fn: planes.MapFn,
    ) -> codecs.Encoded | None:
        """The tensor as a delta against its parent, a keyframe where the delta would break the
        chain's cost bound, or None (no delta to try: chain too deep or too costly already, the
        parent missing, part of its chain missing, or corrupt)."""
        depth = parent.obj.depth + 1
        if depth > self.max_chain_depth:
            return None
        budget = self.chain_budget(len(data))
        below = self.store.chain_bytes(parent.obj.oid, self.max_chain_depth)
        if below is None:  # part of its chain missing, unreadable or too long: a keyframe
            try:
                self.store.read_header(parent.obj.oid, f"tensor {parent.name!r}")
            except ObjectCorruptError as e:  # a corrupt parent: say so
                self.warn(f"{e}; stored as a keyframe")
            except ObjectMissingError:
                pass
            return None
        if below >= budget:
            return None
        try:
            what = f"tensor {parent.name!r}"
            base = self.store.read_raw(parent.obj.oid, what, parent.obj.raw, 0, parent.length)
        except ObjectMissingError:
            return None  # part of its chain was never fetched: store a keyframe
        except ObjectCorruptError as e:  # a corrupt or lying parent: never build on it
            self.warn(f"{e}; stored as a keyframe")
            return None
        enc = codecs.encode_delta(
            data,
            base,
            info.dtype,
            info.shape,
            raw,
            parent.obj.oid,
            depth,
            ctx.options,
            ctx.factors_for(info.name),
            room=budget - below,
            map_fn=map_fn,
        )
        if not enc.header.base:
            return enc  # the chooser found a keyframe better
        # record the base's size (fetching a chain needs (oid, size)) and the chain's cost
        params = {**enc.header.params, "base_size": parent.obj.stored}
        enc = codecs.Encoded(dataclasses.replace(enc.header, params=params), enc.parts)
        enc = enc.with_chain_bytes(below)
        if enc.header.params[CHAIN_BYTES] > budget:  # its header tipped it over: rare
            return None
        return enc

    def delta_options(self) -> codecs.DeltaOptions | None:
        if not self.deltas:
            return None
        return codecs.DeltaOptions(svd_seconds=self.svd_seconds)

    def _finish(self, fmt: str, pieces: list[_Piece], known: dict[str, ObjectRef]) -> Manifest:
        skeleton = bytearray()
        tensors: list[TensorEntry] = []
        for p in pieces:
            if p.skeleton is not None:
                skeleton += p.skeleton
            else:
                assert p.info is not None and p.future is not None
                i = p.info
                tensors.append(TensorEntry(i.name, i.dtype, i.shape, i.offset, i.length, p.future.result()))
        ref = self._store_region(
            TensorInfo("skeleton", dtypes.OPAQUE, (len(skeleton),), 0, len(skeleton)),
            skeleton,
            _CleanContext(None, None, None, known),
            map,
        )
        size = len(skeleton) + sum(t.length for t in tensors)
        manifest = Manifest(fmt, size, len(skeleton), ref, tensors)
        manifest.validate()
        return manifest

    def _replay(self, pieces: list[_Piece], leftover: bytes) -> Iterator[Buffer]:
        """The bytes of a half-parsed file, from its pieces (tensors read back from the store)."""
        for p in pieces:
            if p.skeleton is not None:
                yield p.skeleton
            else:
                assert p.future is not None and p.info is not None
                ref = p.future.result()
                yield self.store.read_raw(ref.oid, f"tensor {p.info.name!r}", ref.raw, 0, p.info.length)
        yield leftover

    def _store_whole(
        self, prefix: Iterator[Buffer], reader: ByteReader, known: dict[str, ObjectRef], path: str = ""
    ) -> Manifest:
        """Store prefix + the rest of reader as one object (a file that is not split), with a
        progress line of chunks encoded for a file that takes over PROGRESS_DELAY."""
        raw_hash = hashlib.sha256()
        label = f"Storing {display.printable(path) or 'file'} whole"
        progress = Progress(label, unit="chunks", delay=PROGRESS_DELAY)
        size = 0
        reader.journaling = False  # nothing to recover from here on: don't keep what was read

        def chunks() -> Iterator[memoryview]:
            nonlocal size
            pending = bytearray()
            for part in prefix:
                pending += part
                while len(pending) >= planes.CHUNK:
                    yield memoryview(bytes(pending[: planes.CHUNK]))
                    del pending[: planes.CHUNK]
            while True:
                need = planes.CHUNK - len(pending)
                more = reader.read_upto(need)
                pending += more
                if len(pending) == planes.CHUNK or not more:
                    if pending:
                        yield memoryview(bytes(pending))
                    if not more:
                        return
                    pending = bytearray()

        def encoded() -> Iterator[bytes]:
            nonlocal size
            window: list[tuple[Future[bytes], int]] = []  # chunks being encoded, their lengths
            for chunk in chunks():
                raw_hash.update(chunk)
                size += len(chunk)
                progress.add_total(1, len(chunk))
                window.append((self.pool.submit(planes.encode_chunk, chunk, 1), len(chunk)))
                if len(window) > 2 * self.workers:
                    f, n = window.pop(0)
                    yield f.result()
                    progress.step(n)
            for f, n in window:
                yield f.result()
                progress.step(n)

        parts = encoded()

        # The trailer depends on the raw hash and size, known once all chunks went through.
        def with_trailer() -> Iterator[Buffer]:
            yield from parts
            header = codecs.ObjectHeader(
                planes.NAME,
                dtypes.OPAQUE,
                (size,),
                size,
                raw_hash.hexdigest(),
                {"chunk": planes.CHUNK, "width": 1},
            )
            yield header.trailer()

        try:
            oid, stored = self.store.write(with_trailer())
        finally:
            progress.finish()
        raw = raw_hash.hexdigest()
        previous = known.get(raw)
        if previous is not None and self._reusable(previous, raw, size):
            ref = previous  # the previous manifest's entry: `git status` stays clean
        else:
            ref = ObjectRef(raw, oid, stored, planes.NAME)
        return Manifest(WHOLE, size, size, ref, [])

    # ---------------------------------------------------------------- smudge

    def smudge(self, manifest: Manifest, write: Callable[[Buffer], object], path: str = "") -> None:
        """Write the checkpoint file a manifest describes, through write(), in order (progress,
        for a file that takes over PROGRESS_DELAY, names it `path`)."""
        manifest.validate()
        progress = Progress(
            f"Writing {display.printable(path) or 'file'}",
            unit="tensors",
            total=len(manifest.tensors),
            total_bytes=manifest.size,
            delay=PROGRESS_DELAY,
        )
        try:
            self._smudge(manifest, write, progress)
        finally:
            progress.finish()

    def _smudge(self, manifest: Manifest, write: Callable[[Buffer], object], progress: Progress) -> None:
        skel_ref = manifest.skeleton
        if manifest.skeleton_length > BIG_REGION and not manifest.tensors:
            for chunk in self.store.iter_raw(
                skel_ref.oid, "the file", skel_ref.raw, manifest.skeleton_length
            ):
                write(chunk)
                progress.advance(len(chunk))
            return
        skeleton = memoryview(
            self.store.read_raw(skel_ref.oid, "skeleton", skel_ref.raw, 0, manifest.skeleton_length)
        )
        if len(skeleton) != manifest.skeleton_length:
            raise ThetaLikeError("skeleton object has the wrong length for its manifest")
        window: list[tuple[TensorEntry, Future[bytearray | memoryview]]] = []
        ahead = 0  # bytes being decoded ahead
        queue = list(manifest.tensors)
        nxt = 0
        pos = 0  # position in the file
        spos = 0  # position in the skeleton

        def fill() -> None:
            # decode ahead, in parallel, up to the in-flight budget (always at least one tensor)
            nonlocal nxt, ahead
            while nxt < len(queue) and (not window or ahead + queue[nxt].length <= self.inflight_bytes):
                t = queue[nxt]
                nxt += 1
                ahead += t.length
                what = f"tensor {t.name!r}"
                job = self.pool.submit(self.store.read_raw, t.obj.oid, what, t.obj.raw, 0, t.length)
                window.append((t, job))

        fill()
        while window:
            t, fut = window.pop(0)
            gap = t.offset - pos
            write(skeleton[spos : spos + gap])
            spos += gap
            data = fut.result()
            ahead -= t.length
            if len(data) != t.length:
                raise ThetaLikeError(f"tensor {t.name!r}: object decodes to the wrong length")
            fill()  # the next tensors decode while this one goes out
            write(data)
            del data
            progress.step(gap + t.length)
            pos = t.offset + t.length
        write(skeleton[spos:])
        progress.advance(len(skeleton) - spos)
