"""The long-running filter process (`filter.theta-like.process`, gitattributes(5)).

Git starts one process per command and sends every tracked file through it: after a handshake
(`git-filter-client`, `version=2`, capabilities), each request is a list of `key=value` lines
(`command=clean|smudge`, `pathname=...`), a flush, the content, and a flush. We answer
`status=success`, the filtered content and an empty status list; on failure `status=error`
(before any content) or, mid-stream, a flush followed by `status=error`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from typing import BinaryIO

from git_theta_like.errors import ManifestError, ThetaLikeError
from git_theta_like.filters import Engine
from git_theta_like.formats import ByteReader
from git_theta_like.gitio.pktline import PktReader, PktWriter, ProtocolError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest


def _err(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


def _previous_manifest(repo: Repo, path: str) -> Manifest | None:
    """The staged manifest of path, the natural parent of what is being cleaned."""
    blob = repo.index_blob(path)
    if blob is None or not is_manifest(blob):
        return None
    try:
        return Manifest.from_bytes(blob)
    except ManifestError:
        return None


def make_engine(repo: Repo) -> Engine:
    """An Engine configured from git config (theta-like.*) and the environment."""
    lora = None
    if adapter := os.environ.get("GIT_THETA_LIKE_LORA"):
        from git_theta_like.lora import load_adapter

        lora = load_adapter(adapter)
    try:
        svd = float(repo.config_get("theta-like.svdBudget") or 30)
    except ValueError:
        svd = 30.0
    return Engine(
        repo.store,
        deltas=repo.config_bool("theta-like.deltas", True),
        max_chain_depth=repo.config_int("theta-like.maxChainDepth", 8),
        svd_seconds=svd,
        lora=lora,
    )


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


class IndexManifests:
    """The manifests staged for the repository's other tracked files, re-read only when the
    index changes: clean reuses their objects (identical tensors in two checkpoints are stored
    once; a tensor moved between shards keeps its object)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._stamp: tuple[int, int] | None = None
        self._by_path: dict[str, Manifest] = {}

    def others(self, path: str) -> list[Manifest]:
        index_file = self.repo.git_dir / "index"
        try:
            st = index_file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return []
        if stamp != self._stamp:
            self._stamp = stamp
            self._by_path = {}
            index = self.repo.git.index
            index.read(False)
            for entry in index:
                blob = self.repo.git.get(entry.id)
                data = getattr(blob, "data", b"")
                if is_manifest(data):
                    with contextlib.suppress(ManifestError):
                        self._by_path[entry.path] = Manifest.from_bytes(data)
        return [m for p, m in self._by_path.items() if p != path]


def serve(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    fin = stdin or sys.stdin.buffer
    fout = stdout or os.fdopen(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
    reader, writer = PktReader(fin), PktWriter(fout)

    hello = reader.read_text_list()
    if "git-filter-client" not in hello or "version=2" not in hello:
        raise ProtocolError(f"unexpected filter handshake {hello!r}")
    writer.text_list(["git-filter-server", "version=2"])
    writer.flush()
    caps = reader.read_text_list()
    writer.text_list([c for c in ("capability=clean", "capability=smudge") if c in caps])
    writer.flush()

    repo = Repo(".")
    _ensure_hooks(repo)
    staged = IndexManifests(repo)
    with make_engine(repo) as engine:
        while True:
            try:
                request = reader.read_text_list()
            except EOFError:
                return 0
            fields = dict(line.partition("=")[::2] for line in request)
            command, path = fields.get("command"), fields.get("pathname", "")
            content = reader.content()
            try:
                if command == "clean":
                    _clean(engine, repo, path, content, writer, staged)
                elif command == "smudge":
                    _smudge(engine, repo, path, content, writer)
                else:
                    content.drain()
                    writer.text_list(["status=error"])
            except ProtocolError:
                raise
            except Exception as e:  # one file failed: report it, keep serving the others
                if isinstance(e, ThetaLikeError | OSError):
                    _err(f"{path}: {e}")
                else:
                    _err(f"{path}: internal error: {e!r}\n{traceback.format_exc()}")
                content.drain()
                writer.text_list(["status=error"])
            writer.flush()


def _clean(engine: Engine, repo: Repo, path: str, content, writer: PktWriter, staged: IndexManifests) -> None:  # type: ignore[no-untyped-def]
    try:
        previous = _previous_manifest(repo, path)
        manifest = engine.clean(ByteReader(content), previous, path, staged.others(path))
    finally:
        content.drain()
    writer.text_list(["status=success"])
    writer.content(manifest)
    writer.flush_packet()
    writer.flush_packet()  # empty list: status stays "success"


def _for_diff() -> bool:
    """git diff/log/show smudge blobs into temporary files for the diff driver: hand it the
    manifest instead of rebuilding the checkpoint (diff_driver.smudge_is_for_diff)."""
    from git_theta_like.diff_driver import smudge_is_for_diff

    return smudge_is_for_diff()


def _smudge(engine: Engine, repo: Repo, path: str, content, writer: PktWriter) -> None:  # type: ignore[no-untyped-def]
    from git_theta_like.store import sync

    src = ByteReader(content)
    head = src.peek(64)
    if not is_manifest(head) or sync.skip_smudge(repo) or _for_diff():
        # Not ours (committed before the file was tracked, say): pass it through untouched.
        writer.text_list(["status=success"])
        while chunk := src.read_upto(1 << 20):
            writer.content(chunk)
        writer.flush_packet()
        writer.flush_packet()
        return
    data = bytes(src.read_upto(1 << 30))
    content.drain()
    manifest = Manifest.from_bytes(data)
    sync.ensure_local(repo, sync.manifest_objects(manifest), what=path)
    started = False

    def write(buf: bytes | bytearray | memoryview) -> None:
        nonlocal started
        if not started:
            writer.text_list(["status=success"])
            started = True
        writer.content(buf)

    try:
        engine.smudge(manifest, write)
    except Exception as e:
        if not started:
            raise
        # content was partly sent: end it, then report the error (git discards the content)
        _err(f"{path}: {e}" if isinstance(e, ThetaLikeError | OSError) else f"{path}: {e!r}")
        writer.flush_packet()
        writer.text_list(["status=error"])
        return
    if not started:
        writer.text_list(["status=success"])
    writer.flush_packet()
    writer.flush_packet()
