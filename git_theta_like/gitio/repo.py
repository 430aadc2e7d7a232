"""Repository access through pygit2: where git and git-lfs keep things, index and revision
blobs, config. Builds no object store (store.store_of does, from `lfs_dir`)."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import pygit2

from git_theta_like.errors import NotARepositoryError

CONFIG_SECTION = "theta-like"


class Repo:
    """A Git repository, discovered from a path inside its work tree (or its git dir)."""

    def __init__(self, path: str | os.PathLike[str] = ".") -> None:
        found = pygit2.discover_repository(str(path))
        if found is None:
            raise NotARepositoryError(f"not a git repository: {os.path.abspath(path)}")
        self.git = pygit2.Repository(found)

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

    def index_blob(self, path: str) -> bytes | None:
        """The staged (stage 0) content of path, as git stores it, or None."""
        index = self.git.index
        index.read(False)
        try:
            entry = index[path]
        except (KeyError, ValueError):
            return None
        obj = self.git.get(entry.id)
        return obj.data if isinstance(obj, pygit2.Blob) else None

    def rev_blob(self, rev: str, path: str) -> bytes | None:
        """Content of path at revision rev, or None when it does not exist there."""
        try:
            commit = self.git.revparse_single(rev).peel(pygit2.Commit)
            obj = commit.tree[path]
        except (KeyError, ValueError, pygit2.GitError):
            return None
        return obj.data if isinstance(obj, pygit2.Blob) else None
