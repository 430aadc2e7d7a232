"""The long-running filter process (`filter.theta-like.process`): one per git command, every
tracked file goes through it. Clean turns a checkpoint into a manifest (reusing objects of the
other staged checkpoints), smudge turns a manifest back into the checkpoint, downloading missing
objects first. The protocol's framing is gitio/filter_protocol.py."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from git_theta_like.dtypes import Buffer
from git_theta_like.errors import ProtocolError, ThetaLikeError
from git_theta_like.filters import engine_for, recent_manifests, staged_previous
from git_theta_like.filters.engine import Engine
from git_theta_like.formats import ByteReader
from git_theta_like.gitio.filter_protocol import FilterChannel, Request
from git_theta_like.gitio.pktline import ContentSource, grow_pipe
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.pointer import LFS_VERSION, POINTER_MAX, parse_pointer
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.store import store_of

if TYPE_CHECKING:
    from git_theta_like.gitio.scan import IndexManifests

POLL = 0.01  # seconds between looks for an object a background download has not brought yet
SPOOL_MEMORY = 8 << 20  # content passed through is held in memory up to this, then in a temp file


def _err(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


def _ensure_hooks(repo: Repo) -> None:
    """Install our hooks in a repository the filter runs in but that lacks them (a fresh clone
    with a global install), as git-lfs does; `theta-like.autoHooks=false` turns this off."""
    if not repo.config_bool("theta-like.autoHooks", default=True):
        return
    from git_theta_like.gitio import install

    try:
        install.install_hooks(repo, quiet_if_present=True)
    except (OSError, FileExistsError) as e:
        _err(f"could not install hooks: {e}")


def run() -> int:
    """`git-theta-like filter-process`: serve git on stdin/stdout; the exit status. An error
    outside any one file (the handshake, opening the repository) is one line on stderr, status
    1, as every command reports its errors."""
    try:
        return serve()
    except (ThetaLikeError, OSError) as e:
        _err(f"error: {e}")
        return 1
    except Exception as e:  # pygit2.GitError (pygit2 is imported only when first needed)
        pygit2 = sys.modules.get("pygit2")
        if pygit2 is None or not isinstance(e, pygit2.GitError):
            raise
        _err(f"error: {e}")
        return 1


def serve(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    fin = stdin or sys.stdin.buffer
    fout = stdout or os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
    if stdin is None:  # git's pipes, not a test's streams
        grow_pipe(fin.fileno())
        grow_pipe(fout.fileno())
    channel = FilterChannel(fin, fout)
    agreed = channel.handshake(("clean", "smudge", "delay"))

    repo = Repo(".")
    _ensure_hooks(repo)
    staged = _Staged(repo)
    later = Delayed(repo) if "delay" in agreed else None
    with engine_for(repo) as engine:
        while (request := channel.next_request()) is not None:
            path, content = request.pathname, request.content
            try:
                if request.command == "clean":
                    _clean(engine, repo, path, content, channel, staged)
                elif request.command == "smudge":
                    _smudge(engine, repo, request, channel, later)
                elif request.command == "list_available_blobs" and later is not None:
                    channel.available(later.fetch_all())  # no content section follows
                else:
                    content.drain()
                    channel.error()
            except ProtocolError:
                raise
            except Exception as e:  # one file failed: report it, keep serving the others
                if isinstance(e, ThetaLikeError | OSError):
                    _err(f"{path}: {e}")
                else:
                    _err(f"{path}: internal error: {e!r}\n{traceback.format_exc()}")
                content.drain()
                channel.error()
    return 0


def _clean(
    engine: Engine,
    repo: Repo,
    path: str,
    content: ContentSource,
    channel: FilterChannel,
    staged: _Staged,
) -> None:
    try:
        previous, pointer = staged_previous(repo, path)
        others = recent_manifests(repo, path) + staged.get().others(path)
        manifest = engine.clean(ByteReader(content), previous, path, others, lfs_pointer=pointer)
    finally:
        content.drain()
    channel.success(manifest)


class _Staged:
    """The IndexManifests of this process, made on the first clean: a checkout that only
    smudges never reads the index (nor imports pygit2, which reading it needs)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._index: IndexManifests | None = None

    def get(self) -> IndexManifests:
        if self._index is None:
            from git_theta_like.gitio.scan import IndexManifests

            self._index = IndexManifests(self.repo)
        return self._index


class Delayed:
    """Smudges answered later (git's `delay` capability): while git checks out many files, the
    objects they lack are collected, then downloaded in one batched, concurrent transfer when git
    asks which files are ready, instead of one download per file. The transfer runs in the
    background: every waiting file is reported ready at once, and each file's smudge decodes
    and writes its tensors as their objects arrive (the store waits for an object the transfer
    has not brought yet), so decoding overlaps the download instead of following it."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.waiting: dict[str, Manifest] = {}
        self.ready: dict[str, Manifest] = {}
        self.arrivals: Arrivals | None = None

    def fetch_all(self) -> list[str]:
        """Start downloading what every waiting file lacks; the paths git may now ask for again."""
        from git_theta_like.lfs import sync

        waiting, self.waiting = self.waiting, {}
        if waiting:
            objs = [o for m in waiting.values() for o in sync.manifest_objects(m)]
            if self.arrivals is not None:
                self.arrivals.thread.join()  # one transfer at a time (git asks again only when done)
            self.arrivals = Arrivals(self.repo, objs, f"{len(waiting)} checkpoint(s)")
        self.ready.update(waiting)
        return list(waiting)

    def downloading(self) -> bool:
        return self.arrivals is not None and not self.arrivals.done.is_set()


class Arrivals:
    """A background download of objects into the store, which waits for them (LocalStore.arriving)
    while it runs. A failed download is reported by each file's own smudge: objects still
    missing once the transfer has ended are asked for once more, and a second failure is the
    error of the file that reads them."""

    def __init__(self, repo: Repo, objs: list[tuple[str, int]], what: str) -> None:
        self.repo, self.what = repo, what
        self.sizes = dict(objs)
        self.store = store_of(repo)
        self.done = threading.Event()
        self.retry_lock = threading.Lock()
        self.retried = False
        self.thread = threading.Thread(
            target=self._run, args=(objs,), name="gtl-delayed-download", daemon=True
        )
        self.store.arriving = self.wait
        self.thread.start()

    def _run(self, objs: list[tuple[str, int]]) -> None:
        from git_theta_like.lfs import sync

        # never raise here: nobody waits for this thread's errors (each smudge finds its own)
        with contextlib.suppress(Exception):
            sync.ensure_local(self.repo, objs, what=self.what)
        self.done.set()

    def wait(self, oid: str) -> None:
        """Until oid is in the store or the transfer has ended. A read that still misses an
        object then runs the whole transfer once more (what it lacks, delta chains followed;
        once, whichever read misses first): an error there is the reader's, as it was when each
        file downloaded its own objects."""
        while not self.store.has(oid):
            if self.done.wait(POLL):
                if not self.store.has(oid):
                    self._retry()
                return

    def _retry(self) -> None:
        from git_theta_like.lfs import sync

        with self.retry_lock:
            if not self.retried:
                self.retried = True
                sync.ensure_local(self.repo, list(self.sizes.items()), what=self.what)


def _smudge(engine: Engine, repo: Repo, request: Request, chan: FilterChannel, later: Delayed | None) -> None:
    """One smudge; with `later` (git offered delay), a file whose objects are missing waits for
    the others when git marked the request can-delay."""
    from git_theta_like.gitio.process import smudge_is_for_diff
    from git_theta_like.lfs import sync

    path, content = request.pathname, request.content
    can_delay = request.fields.get("can-delay") == "1"

    if later is not None and path in later.ready:  # asked again after list_available_blobs
        content.drain()
        manifest = later.ready.pop(path)
        if not later.downloading():  # else the store waits for each object as it is read
            sync.ensure_local(repo, sync.manifest_objects(manifest), what=path)
        _send(path, chan, lambda write: engine.smudge(manifest, write, path))
        return
    src = ByteReader(content)
    head = src.peek(64)
    pointer = None
    if head.startswith(LFS_VERSION):
        whole = src.peek(POINTER_MAX)
        pointer = parse_pointer(whole) if len(whole) < POINTER_MAX else None
    ours = is_manifest(head) or (pointer is not None and not pointer.extensions)
    if not ours or sync.skip_smudge(repo) or smudge_is_for_diff():
        # Not ours (committed before the file was tracked, say), or git preparing a temporary
        # file for a diff command (see gitio/process.py): pass it through untouched. Git sends
        # the whole request before it reads the answer, so read it all first (answering while
        # git still writes blocks both once the pipes fill up).
        with _spool(src, engine.store.tmp) as held:
            chan.begin_success()
            while chunk := held.read(1 << 20):
                chan.content(chunk)
            chan.end_success()
        return
    if pointer is not None:
        # a version from when the path was plain git-lfs: its file, from the same store git-lfs
        # uses (or downloaded), streamed and verified against the pointer's SHA-256 and size
        content.drain()
        sync.ensure_plain(repo, [(pointer.oid, pointer.size)], what=path)
        _send(
            path,
            chan,
            lambda write: _write_all(engine.store.iter_plain(pointer.oid, pointer.size, path), write),
        )
        return
    data = bytes(src.read_upto(1 << 30))
    content.drain()
    manifest = Manifest.from_bytes(data)
    needed = sync.manifest_objects(manifest)
    if can_delay and later is not None and not all(engine.store.has(o) for o, _ in needed):
        later.waiting[path] = manifest  # downloaded with the others, see Delayed
        chan.delayed()
        return
    sync.ensure_local(repo, needed, what=path)
    _send(path, chan, lambda write: engine.smudge(manifest, write, path))


def _spool(src: ByteReader, tmpdir: Path) -> tempfile.SpooledTemporaryFile[bytes]:
    """The rest of src, read to its end: in memory up to SPOOL_MEMORY, beyond that in an
    unnamed temporary file in tmpdir (the LFS tmp dir), which vanishes when closed or on a crash."""
    tmpdir.mkdir(parents=True, exist_ok=True)
    held: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(
        max_size=SPOOL_MEMORY, mode="w+b", dir=str(tmpdir), prefix="gtl-spool-"
    )
    src.journaling = False  # nothing to recover: the bytes go out as they came in
    try:
        while chunk := src.read_upto(1 << 20):
            held.write(chunk)
        held.seek(0)
    except BaseException:
        held.close()
        raise
    return held


def _write_all(chunks: Iterable[bytes], write: Callable[[Buffer], object]) -> None:
    for chunk in chunks:
        write(chunk)


def _send(path: str, channel: FilterChannel, produce: Callable[[Callable[[Buffer], object]], None]) -> None:
    """Stream what produce(write) writes as the response; an error once content was sent ends the
    response as failed (git then discards what it got)."""
    started = False

    def write(buf: bytes | bytearray | memoryview) -> None:
        nonlocal started
        if not started:
            channel.begin_success()
            started = True
        channel.content(buf)

    try:
        produce(write)
    except Exception as e:
        if not started:
            raise
        # content was partly sent: end it, then report the error (git discards the content)
        _err(f"{path}: {e}" if isinstance(e, ThetaLikeError | OSError) else f"{path}: {e!r}")
        channel.error(started=True)
        return
    if not started:
        channel.begin_success()
    channel.end_success()
