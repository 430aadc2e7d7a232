"""Which manifests a repository still needs: reachable from any ref, reflog entry, stash or the
index. fsck checks their objects; gc keeps them (and their delta chains) and nothing else."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pygit2

from git_theta_like.errors import ManifestError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest


def looks_like_manifest(data: bytes) -> bool:
    """A manifest, or one that a text merge left conflict markers in (reported, not parsed)."""
    return is_manifest(data) or (
        data.startswith(b"<<<<<<<") and b"\ngit-theta-like manifest v" in data[:4096]
    )


@dataclass
class FoundManifest:
    blob: str
    manifest: Manifest | None
    error: str | None = None
    pushed: bool = False  # also reachable from a remote-tracking ref: the remote should have it
    # where it is used: (commit or "index", path), a few examples for messages
    uses: list[tuple[str, str]] = field(default_factory=list)


def _roots(repo: Repo, reflogs: bool = True) -> Iterator[pygit2.Oid]:
    """Commit ids to walk from: every ref, HEAD, and (with reflogs) every reflog entry."""
    g = repo.git
    for name in g.references:
        try:
            ref = g.references[name]
            target = ref.peel(pygit2.Commit).id
        except (pygit2.GitError, ValueError, KeyError):
            continue
        yield target
        if reflogs:
            try:
                for entry in ref.log():
                    yield entry.oid_new
                    if entry.oid_old != pygit2.Oid(hex="0" * 40):
                        yield entry.oid_old
            except (pygit2.GitError, KeyError, ValueError):
                pass
    with contextlib.suppress(pygit2.GitError, ValueError):
        yield g.head.peel(pygit2.Commit).id
    if reflogs:
        try:
            for entry in g.references["HEAD"].log():
                yield entry.oid_new
        except (pygit2.GitError, KeyError, ValueError):
            pass


def _commits(repo: Repo, reflogs: bool) -> Iterator[pygit2.Commit]:
    """Every commit reachable from the roots, once (stash commits' index and untracked parents
    are ordinary parents, so they are walked too)."""
    g = repo.git
    roots = list(dict.fromkeys(r for r in _roots(repo, reflogs) if isinstance(g.get(r), pygit2.Commit)))
    if not roots:
        return
    walker = g.walk(roots[0], pygit2.enums.SortMode.NONE)
    for r in roots[1:]:
        walker.push(r)
    yield from walker


def _tree_blobs(
    tree: pygit2.Tree, prefix: str, seen_trees: set[pygit2.Oid]
) -> Iterator[tuple[str, pygit2.Oid]]:
    if tree.id in seen_trees:
        return
    seen_trees.add(tree.id)
    for entry in tree:
        if entry.type_str == "tree":
            yield from _tree_blobs(entry, f"{prefix}{entry.name}/", seen_trees)  # type: ignore[arg-type]
        elif entry.type_str == "blob" and entry.filemode != pygit2.enums.FileMode.LINK:
            yield f"{prefix}{entry.name}", entry.id


def _remote_roots(repo: Repo) -> list[pygit2.Oid]:
    out = []
    for name in repo.git.references:
        if name.startswith("refs/remotes/"):
            with contextlib.suppress(pygit2.GitError, ValueError, KeyError):
                out.append(repo.git.references[name].peel(pygit2.Commit).id)
    return out


def pushed_manifest_blobs(repo: Repo) -> set[str]:
    """Manifest blobs in the history of remote-tracking refs (what the remotes should hold)."""
    g = repo.git
    roots = _remote_roots(repo)
    blobs: set[str] = set()
    if not roots:
        return blobs
    walker = g.walk(roots[0], pygit2.enums.SortMode.NONE)
    for r in roots[1:]:
        walker.push(r)
    seen_trees: set[pygit2.Oid] = set()
    for commit in walker:
        for _path, blob_id in _tree_blobs(commit.tree, "", seen_trees):
            blobs.add(str(blob_id))
    return blobs


def reachable_manifests(repo: Repo, reflogs: bool = True) -> dict[str, FoundManifest]:
    """Every manifest blob the repository can reach, keyed by blob id."""
    g = repo.git
    found: dict[str, FoundManifest] = {}
    checked: set[pygit2.Oid] = set()

    def consider(blob_id: pygit2.Oid, where: str, path: str) -> None:
        key = str(blob_id)
        if key in found:
            if len(found[key].uses) < 5:
                found[key].uses.append((where, path))
            return
        if blob_id in checked:
            return
        checked.add(blob_id)
        obj = g.get(blob_id)
        data = getattr(obj, "data", b"")
        if not looks_like_manifest(data):
            return
        try:
            fm = FoundManifest(key, Manifest.from_bytes(data))
        except ManifestError as e:
            fm = FoundManifest(key, None, str(e))
        fm.uses.append((where, path))
        found[key] = fm

    seen_trees: set[pygit2.Oid] = set()
    for commit in _commits(repo, reflogs):
        for path, blob_id in _tree_blobs(commit.tree, "", seen_trees):
            consider(blob_id, str(commit.id)[:12], path)
    index = g.index
    index.read(False)
    for entry in index:
        consider(entry.id, "index", entry.path)
    try:
        for conflict in index.conflicts or ():
            for side in conflict:
                if side is not None:
                    consider(side.id, "index (conflict)", side.path)
    except (pygit2.GitError, ValueError):
        pass
    pushed = pushed_manifest_blobs(repo)
    for key, fm in found.items():
        fm.pushed = key in pushed
    return found
