"""Repository access through pygit2: where git and git-lfs keep things, index and revision
blobs, config. Builds no object store (store.store_of does, from `lfs_dir`).

Every blob is read through `Repo.blob`: pygit2 first; in a partial clone (a promisor remote,
`git clone --filter=blob:none`) a blob that was not fetched yet is read through one long-running
`git cat-file --batch` per Repo, which makes git's promisor fetch it, so every command answers
as it would in a full clone."""

from __future__ import annotations

import os
import subprocess
import threading
import weakref
from functools import cached_property
from pathlib import Path
from typing import IO

import pygit2

from git_theta_like.errors import NotARepositoryError, ThetaLikeError

CONFIG_SECTION = "theta-like"


class Repo:
    """A Git repository, discovered from a path inside its work tree (or its git dir)."""

    def __init__(self, path: str | os.PathLike[str] = ".") -> None:
        found = pygit2.discover_repository(str(path))
        if found is None:
            raise NotARepositoryError(f"not a git repository: {os.path.abspath(path)}")
        self.git = pygit2.Repository(found)
        self._cat_file: _CatFile | None = None
        self._cat_lock = threading.Lock()

    @property
    def git_dir(self) -> Path:
        return Path(self.git.path)

    @cached_property
    def common_dir(self) -> Path:
        """The git dir shared by all worktrees (where git-lfs keeps objects)."""
        marker = self.git_dir / "commondir"
        if marker.is_file():
            return (self.git_dir / marker.read_text().strip()).resolve()
        return self.git_dir

    @property
    def workdir(self) -> Path | None:
        return Path(self.git.workdir) if self.git.workdir else None

    @cached_property
    def lfs_dir(self) -> Path:
        """git-lfs's storage directory: `lfs.storage` if set, else `<common dir>/lfs`."""
        custom = self.config_get("lfs.storage")
        if custom:
            p = Path(os.path.expanduser(custom))
            return p if p.is_absolute() else self.common_dir / p
        return self.common_dir / "lfs"

    def run_git(
        self, *args: str, input: str | None = None, error: type[ThetaLikeError] = ThetaLikeError
    ) -> str:
        """`git ARGS` here (in the working tree, else the git directory); its stdout. A failure
        raises `error` with git's message."""
        cwd = self.workdir or self.git_dir
        p = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, text=True)
        if p.returncode != 0:
            raise error(f"git {' '.join(args)} failed: {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def config_get(self, key: str) -> str | None:
        try:
            return str(self.git.config[key])
        except KeyError:
            return None

    def config_bool(self, key: str, default: bool) -> bool:
        try:
            return self.git.config.get_bool(key)
        except (KeyError, pygit2.GitError, ValueError):
            return default

    def config_int(self, key: str, default: int) -> int:
        try:
            return self.git.config.get_int(key)
        except (KeyError, pygit2.GitError, ValueError):
            return default

    @cached_property
    def promisor(self) -> bool:
        """Whether this is a partial clone: objects may be missing locally and fetched on
        demand from a promisor remote (`extensions.partialClone`, `remote.<name>.promisor`)."""
        if self.config_get("extensions.partialclone"):
            return True
        try:
            names = {entry.name.lower() for entry in self.git.config}
        except pygit2.GitError:
            return False
        return any(
            n.startswith("remote.") and n.endswith(".promisor") and self.config_bool(n, False) for n in names
        )

    def blob(self, oid: pygit2.Oid | str) -> bytes | None:
        """The content of the blob oid, or None when there is no blob by that id.

        The one path every blob is read through: pygit2, and in a partial clone, for a blob not
        fetched yet, `git cat-file --batch` (git's promisor remote fetches it)."""
        try:
            obj = self.git.get(oid)
        except (ValueError, TypeError, pygit2.GitError):
            return None
        if obj is not None:
            return obj.data if isinstance(obj, pygit2.Blob) else None
        if not self.promisor:
            return None
        with self._cat_lock:
            if self._cat_file is None:
                self._cat_file = _CatFile(self.git_dir)
                weakref.finalize(self, self._cat_file.close)
            return self._cat_file.blob(str(oid))

    def index_blob(self, path: str) -> bytes | None:
        """The staged (stage 0) content of path, as git stores it, or None."""
        index = self.git.index
        index.read(False)
        try:
            entry = index[path]
        except (KeyError, ValueError):
            return None
        return self.blob(entry.id)

    def rev_blob(self, rev: str, path: str) -> bytes | None:
        """Content of path at revision rev, or None when it does not exist there."""
        try:
            commit = self.git.revparse_single(rev).peel(pygit2.Commit)
            entry = commit.tree[path]
        except (KeyError, ValueError, pygit2.GitError):
            return None
        return self.blob(entry.id) if entry.type_str == "blob" else None


class _CatFile:
    """One `git cat-file --batch` for the life of a Repo: a request per blob, its reply read
    back in full. In a partial clone git fetches a missing object from the promisor remote
    before it answers."""

    def __init__(self, git_dir: Path) -> None:
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["git", f"--git-dir={git_dir}", "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        except OSError as e:
            raise ThetaLikeError(f"cannot run git cat-file to read objects of a partial clone: {e}") from None

    def blob(self, oid: str) -> bytes | None:
        proc = self.proc
        if proc is None:
            raise ThetaLikeError("git cat-file (reading objects of a partial clone) was closed")
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        try:
            stdin.write(oid.encode() + b"\n")
            stdin.flush()
            header = stdout.readline()
        except OSError as e:
            raise ThetaLikeError(f"git cat-file failed while reading object {oid}: {e}") from None
        fields = header.split()
        if len(fields) == 2 and fields[1] in (b"missing", b"ambiguous"):
            return None
        if len(fields) != 3 or not fields[2].isdigit():
            self.close()
            raise ThetaLikeError(
                f"git cat-file could not read object {oid}"
                + (f": {header.decode(errors='replace').strip()}" if header else " (it exited)")
            )
        data = _read_exactly(stdout, int(fields[2]) + 1)[:-1]  # content, then a newline
        return data if fields[1] == b"blob" else None

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
        finally:
            if proc.stdout is not None:
                proc.stdout.close()


def _read_exactly(f: IO[bytes], n: int) -> bytes:
    parts = []
    while n > 0:
        chunk = f.read(n)
        if not chunk:
            raise ThetaLikeError("git cat-file stopped in the middle of an object")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
