"""Repository access: where git and git-lfs keep things, index and revision blobs, config.
Builds no object store (store.store_of does, from `lfs_dir`).

A Repo is found with one `git rev-parse` and reads config from one `git config --list` (so `git
-c key=value` reaches us as it reaches git), re-read only when a config file changes; pygit2 is
imported on the first use of `Repo.git` (objects, index, references), not before: a checkout
that only smudges never loads it (about a quarter of the filter's start-up).

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
from typing import IO, TYPE_CHECKING

from git_theta_like.errors import NotARepositoryError, ThetaLikeError

if TYPE_CHECKING:
    import pygit2

CONFIG_SECTION = "theta-like"


class Repo:
    """A Git repository, discovered from a path inside its work tree (or its git dir)."""

    def __init__(self, path: str | os.PathLike[str] = ".") -> None:
        start = Path(path)
        if not start.is_dir():
            start = start.parent if start.parent.is_dir() else start
        # rev-parse answers in order and stops at the first question it cannot answer (the top
        # level of a bare repository, or from inside the git dir): read what it printed
        try:
            p = subprocess.run(
                ["git", "rev-parse", "--absolute-git-dir", "--is-bare-repository", "--show-toplevel"],
                cwd=start,
                env=discovery_env(),
                capture_output=True,
                text=True,
            )
        except OSError as e:
            raise NotARepositoryError(f"not a git repository: {os.path.abspath(path)} ({e})") from None
        lines = p.stdout.splitlines()
        if not lines:
            raise NotARepositoryError(f"not a git repository: {os.path.abspath(path)}")
        self._git_dir = Path(lines[0])
        self._bare = len(lines) > 1 and lines[1] == "true"
        self._top = Path(lines[2]) if len(lines) > 2 and not self._bare else None
        self._cat_file: _CatFile | None = None
        self._cat_lock = threading.Lock()
        self._config: dict[str, str | None] | None = None
        self._config_stamp: tuple[object, ...] | None = None

    @cached_property
    def git(self) -> pygit2.Repository:
        """The pygit2 repository (imported and opened on first use)."""
        import pygit2

        return pygit2.Repository(str(self._git_dir))

    @property
    def git_dir(self) -> Path:
        return self._git_dir

    @cached_property
    def common_dir(self) -> Path:
        """The git dir shared by all worktrees (where git-lfs keeps objects)."""
        marker = self.git_dir / "commondir"
        if marker.is_file():
            return (self.git_dir / marker.read_text().strip()).resolve()
        return self.git_dir

    @property
    def workdir(self) -> Path | None:
        if self._bare:
            return None
        if self._top is not None:
            return self._top
        return Path(self.git.workdir) if self.git.workdir else None  # asked from inside .git

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

    def _config_files_stamp(self) -> tuple[object, ...]:
        home = os.environ.get("HOME", "")
        xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
        files = [
            self.common_dir / "config",
            self.git_dir / "config.worktree",
            Path(home, ".gitconfig"),
            Path(xdg, "git", "config"),
            Path(os.environ.get("GIT_CONFIG_GLOBAL") or os.devnull),
            Path(os.environ.get("GIT_CONFIG_SYSTEM") or "/etc/gitconfig"),
        ]
        stamp: list[object] = [os.environ.get("GIT_CONFIG_PARAMETERS"), os.environ.get("GIT_CONFIG_COUNT")]
        for f in files:
            try:
                st = f.stat()
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def config_entries(self) -> dict[str, str | None]:
        """Every config entry git sees here (system, global, repository, worktree, `git -c`):
        normalized key -> last value (None: a key given without `=`, which git reads as true).
        One `git config --list`, re-read only when a config file or `git -c` changed."""
        stamp = self._config_files_stamp()
        if self._config is None or stamp != self._config_stamp:
            p = subprocess.run(
                ["git", f"--git-dir={self.git_dir}", "config", "--list", "-z"],
                cwd=self.workdir or self.git_dir,
                env=discovery_env(),
                capture_output=True,
            )
            entries: dict[str, str | None] = {}
            for item in p.stdout.split(b"\0"):
                if not item:
                    continue
                key, sep, value = item.partition(b"\n")
                entries[key.decode(errors="replace")] = value.decode(errors="replace") if sep else None
            self._config, self._config_stamp = entries, stamp
        return self._config

    def config_get(self, key: str) -> str | None:
        entries = self.config_entries()
        norm = config_key(key)
        if norm not in entries:
            return None
        value = entries[norm]
        return "true" if value is None else value

    def config_bool(self, key: str, default: bool) -> bool:
        value = self.config_get(key)
        if value is None:
            return default
        text = value.strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0", ""):
            return False
        try:
            return int(text, 0) != 0
        except ValueError:
            return default

    def config_int(self, key: str, default: int) -> int:
        value = self.config_get(key)
        if value is None:
            return default
        text = value.strip().lower()
        scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:], 1)
        try:
            return int(text[:-1] if scale > 1 else text, 0) * scale
        except ValueError:
            return default

    @cached_property
    def promisor(self) -> bool:
        """Whether this is a partial clone: objects may be missing locally and fetched on
        demand from a promisor remote (`extensions.partialClone`, `remote.<name>.promisor`)."""
        if self.config_get("extensions.partialclone"):
            return True
        return any(
            n.startswith("remote.") and n.endswith(".promisor") and self.config_bool(n, False)
            for n in self.config_entries()
        )

    def blob(self, oid: pygit2.Oid | str) -> bytes | None:
        """The content of the blob oid, or None when there is no blob by that id.

        The one path every blob is read through: pygit2, and in a partial clone, for a blob not
        fetched yet, `git cat-file --batch` (git's promisor remote fetches it)."""
        import pygit2

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
        import pygit2

        try:
            commit = self.git.revparse_single(rev).peel(pygit2.Commit)
            entry = commit.tree[path]
        except (KeyError, ValueError, pygit2.GitError):
            return None
        return self.blob(entry.id) if entry.type_str == "blob" else None


# set by git for hooks and the commands it runs: they name the repository git is working in,
# which is not necessarily the one a Repo is opened at (a local remote, another clone)
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_INDEX_FILE", "GIT_PREFIX")


def discovery_env() -> dict[str, str]:
    """The environment for finding a repository from a path, as pygit2 does: the path decides,
    not a GIT_DIR inherited from the git command that started us."""
    return {k: v for k, v in os.environ.items() if k not in _REPO_ENV}


def config_key(key: str) -> str:
    """A config key as `git config --list` prints it: section and variable lowercased, the
    subsection (between them) as written."""
    section, _, rest = key.partition(".")
    sub, dot, var = rest.rpartition(".")
    return f"{section.lower()}.{sub}{dot}{var.lower()}" if rest else key.lower()


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
