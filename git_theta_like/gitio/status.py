"""What `git theta-like status` reports, as `git lfs status` does for LFS files: the tracked
checkpoints staged for the next commit, those modified in the working tree, and those whose
blob is not a manifest (not converted: added without the filter).

`git status --porcelain=v2` says what changed (it refreshes the index as `git status` does, so a
touched but unchanged checkpoint is not "modified"); the manifests give the sizes."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass, field

import pygit2

from git_theta_like.errors import ManifestError, ThetaLikeError, WorkTreeRequiredError
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import (
    MANIFEST_READ_LIMIT,
    UnconvertedFile,
    tracked_by_attributes,
    unconverted_files,
)
from git_theta_like.manifest import Manifest, is_manifest


@dataclass
class Version:
    """One side of a change: a checkpoint in git (manifest or raw blob) or a working-tree file."""

    where: str  # "Theta" (a manifest) | "Git" (a blob that is not a manifest) | "File"
    oid: str  # blob id ("" for a working-tree file)
    size: int  # logical bytes of the checkpoint
    tensors: int | None = None


@dataclass
class Change:
    path: str
    status: str  # new | modified | deleted | renamed
    old: Version | None
    new: Version | None
    from_path: str | None = None  # for renames


@dataclass
class CheckpointStatus:
    branch: str  # "On branch main" / "HEAD detached at abc1234" / "No commits yet on main"
    branch_name: str | None = None  # "main"; None when HEAD is detached
    staged: list[Change] = field(default_factory=list)
    unstaged: list[Change] = field(default_factory=list)
    unconverted: list[UnconvertedFile] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.staged or self.unstaged or self.unconverted)

    def porcelain(self) -> list[tuple[str, str]]:
        """(path, XY) per checkpoint, sorted by path, as `git status --porcelain` codes them: X
        the index against HEAD, Y the working tree against the index (space: unchanged); Y is
        `N` for a checkpoint not converted whose working tree has no other change."""
        codes: dict[str, list[str]] = {}
        for c in self.staged:
            codes.setdefault(c.path, [" ", " "])[0] = _CODE[c.status]
        for c in self.unstaged:
            xy = codes.setdefault(c.path, [" ", " "])
            xy[1] = _CODE[c.status]
            if c.status == "unmerged":
                xy[0] = "U"
        for u in self.unconverted:
            xy = codes.setdefault(u.path, [" ", " "])
            if xy[1] == " ":
                xy[1] = "N"
        return [(path, "".join(xy)) for path, xy in sorted(codes.items())]

    def as_json(self) -> dict[str, object]:
        """`status --json`: the same three lists, every entry with the same keys."""

        def change(c: Change) -> dict[str, object]:
            return {
                "path": c.path,
                "status": c.status,
                "from_path": c.from_path,
                "old": asdict(c.old) if c.old else None,
                "new": asdict(c.new) if c.new else None,
            }

        return {
            "version": 1,
            "branch": self.branch_name,
            "staged": [change(c) for c in self.staged],
            "unstaged": [change(c) for c in self.unstaged],
            "not_converted": [
                {
                    "path": u.path,
                    "oid": u.blob,
                    "size": u.size,
                    "stored_as": u.kind,
                    "committed": u.committed,
                    "fix": u.fix,
                }
                for u in self.unconverted
            ],
        }


_CODE = {"new": "A", "modified": "M", "deleted": "D", "renamed": "R", "unmerged": "U"}


_STATUS = {"A": "new", "M": "modified", "D": "deleted", "R": "renamed", "C": "new", "T": "modified"}


def _blob_version(repo: Repo, oid: str) -> Version | None:
    if set(oid) == {"0"}:
        return None
    try:
        _, size = repo.git.odb.read_header(oid)
    except (KeyError, ValueError, pygit2.GitError):
        size = 0
    # a blob larger than any manifest is a raw file: its size is all we need, never its bytes
    data = (repo.blob(oid) or b"") if size <= MANIFEST_READ_LIMIT else b""
    if is_manifest(data):
        try:
            m = Manifest.from_bytes(data)
            return Version("Theta", oid, m.size, len(m.tensors))
        except ManifestError:
            pass
    return Version("Git", oid, size or len(data))


def worktree_raw_id(repo: Repo, path: str) -> str | None:
    """The blob id of a working-tree file as it is, without filters (None when unreadable)."""
    assert repo.workdir is not None
    p = subprocess.run(
        ["git", "hash-object", "--no-filters", "--", path], cwd=repo.workdir, capture_output=True, text=True
    )
    return p.stdout.strip() if p.returncode == 0 else None


def _branch(repo: Repo) -> tuple[str, str | None]:
    """git status's first line, and the branch's name (None when HEAD is detached)."""
    g = repo.git
    if g.head_is_unborn:
        name = str(g.references["HEAD"].target).removeprefix("refs/heads/")
        return f"No commits yet on {name}", name
    if g.head_is_detached:
        return f"HEAD detached at {str(g.head.target)[:7]}", None
    return f"On branch {g.head.shorthand}", g.head.shorthand


def checkpoint_status(repo: Repo) -> CheckpointStatus:
    if repo.workdir is None:
        raise WorkTreeRequiredError("this operation must be run in a work tree (status)")
    p = subprocess.run(
        ["git", "status", "--porcelain=v2", "-z", "--untracked-files=no", "--no-renames"],
        cwd=repo.workdir,
        capture_output=True,
    )
    if p.returncode != 0:
        raise ThetaLikeError(f"git status failed: {p.stderr.decode(errors='replace').strip()}")
    entries: list[tuple[str, str, str, str]] = []  # XY, head blob, index blob, path
    for rec in p.stdout.decode("utf-8", "surrogateescape").split("\0"):
        if rec.startswith("1 "):
            parts = rec.split(" ", 8)
            entries.append((parts[1], parts[6], parts[7], parts[8]))
        elif rec.startswith("u "):
            parts = rec.split(" ", 10)
            entries.append(("UU", parts[8], parts[9], parts[10]))
    out = CheckpointStatus(*_branch(repo))
    out.unconverted = unconverted_files(repo)
    raw_staged = {u.path: u.blob for u in out.unconverted}
    tracked = tracked_by_attributes(repo, sorted({e[3] for e in entries}))
    for xy, head_oid, index_oid, path in entries:
        head_v = _blob_version(repo, head_oid)
        index_v = _blob_version(repo, index_oid)
        if path not in tracked and not any(v and v.where == "Theta" for v in (head_v, index_v)):
            continue
        x, y = xy[0], xy[1]
        if x == "U" or y == "U":
            out.unstaged.append(Change(path, "unmerged", head_v, index_v))
            continue
        if x != ".":
            out.staged.append(Change(path, _STATUS.get(x, "modified"), head_v, index_v))
        if y != ".":
            full = repo.workdir / path
            if y == "D" or not full.is_file():
                out.unstaged.append(Change(path, "deleted", index_v, None))
                continue
            if path in raw_staged and worktree_raw_id(repo, path) == raw_staged[path]:
                continue  # "modified" only because the staged blob is not converted: listed there
            out.unstaged.append(Change(path, "modified", index_v, Version("File", "", os.path.getsize(full))))
    return out
