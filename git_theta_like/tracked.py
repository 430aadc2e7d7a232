"""Tracked checkpoints of a repository: which index entries hold manifests, and their sizes."""

from __future__ import annotations

from dataclasses import dataclass

from git_theta_like.errors import ManifestError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest


@dataclass
class TrackedFile:
    path: str
    manifest: Manifest | None
    error: str | None = None


def tracked_files(repo: Repo, rev: str | None = None) -> list[TrackedFile]:
    """Files whose staged content (or content at rev) is a manifest, sorted by path."""
    out = []
    if rev is None:
        index = repo.git.index
        index.read(False)
        entries = [(e.path, e.id) for e in index]
    else:
        tree = repo.git.revparse_single(rev).peel(pygit2_commit()).tree
        entries = [(p, oid) for p, oid in _walk(tree, "")]
    for path, oid in sorted(entries):
        blob = repo.git.get(oid)
        data = getattr(blob, "data", b"")
        if not is_manifest(data):
            continue
        try:
            out.append(TrackedFile(path, Manifest.from_bytes(data)))
        except ManifestError as e:
            out.append(TrackedFile(path, None, str(e)))
    return out


def pygit2_commit() -> type:
    import pygit2

    return pygit2.Commit


def _walk(tree, prefix: str):  # type: ignore[no-untyped-def]
    import pygit2

    for entry in tree:
        path = f"{prefix}{entry.name}"
        if entry.type_str == "tree":
            yield from _walk(entry, path + "/")
        elif entry.type_str == "blob" and entry.filemode != pygit2.GIT_FILEMODE_LINK:
            yield path, entry.id


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError
