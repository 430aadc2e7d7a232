"""The one scanner of manifests in trees, the index and history.

Which files of a tree or of the index hold manifests (`tracked_files`, `manifest_blobs`), the
staged manifests the filter reuses objects from (`IndexManifests`), and every manifest the
repository still needs (`reachable_manifests`: refs, reflogs, stash, the index), which fsck
checks and gc keeps. Reads blobs through pygit2; imports only the bottom layer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pygit2

from git_theta_like.errors import ManifestError, ThetaLikeError
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
        entries = list(walk_tree(commit_tree(repo, rev)))
    for path, oid in sorted(entries):
        data = repo.blob(oid) or b""
        if not is_manifest(data):
            continue
        try:
            out.append(TrackedFile(path, Manifest.from_bytes(data)))
        except ManifestError as e:
            out.append(TrackedFile(path, None, str(e)))
    return out


def load_manifest(repo: Repo, path: str, rev: str | None = None) -> Manifest:
    """The manifest of path, staged (rev None) or at rev; a clear error when there is none."""
    from git_theta_like.errors import ThetaLikeError

    blob = repo.index_blob(path) if rev is None else repo.rev_blob(rev, path)
    where = "in the index" if rev is None else f"at {rev}"
    if blob is None:
        raise ThetaLikeError(f"{path} does not exist {where}")
    if not is_manifest(blob):
        raise ThetaLikeError(f"{path} {where} is not a tracked checkpoint (no manifest)")
    return Manifest.from_bytes(blob)


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


def walk_tree(
    tree: pygit2.Tree, prefix: str = "", seen_trees: set[pygit2.Oid] | None = None
) -> Iterator[tuple[str, pygit2.Oid]]:
    """(path, blob id) of every regular file in a tree (symbolic links and submodules skipped).
    With seen_trees, a subtree already walked (in another commit) is skipped."""
    if seen_trees is not None:
        if tree.id in seen_trees:
            return
        seen_trees.add(tree.id)
    for entry in tree:
        if entry.type_str == "tree":
            yield from walk_tree(entry, f"{prefix}{entry.name}/", seen_trees)  # type: ignore[arg-type]
        elif entry.type_str == "blob" and entry.filemode != pygit2.enums.FileMode.LINK:
            yield f"{prefix}{entry.name}", entry.id


def commit_tree(repo: Repo, rev: str) -> pygit2.Tree:
    """The tree of the commit rev names (KeyError / ValueError / GitError when it names none)."""
    return repo.git.revparse_single(rev).peel(pygit2.Commit).tree


def resolve_commit(repo: Repo, rev: str) -> pygit2.Commit:
    """The commit rev names; ThetaLikeError `unknown revision` when it names none."""
    try:
        return repo.git.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise ThetaLikeError(f"unknown revision {rev!r}") from None


def tree_files(tree: pygit2.Tree) -> dict[str, pygit2.Oid]:
    """path -> blob id for the files of a tree."""
    return dict(walk_tree(tree))


def index_files(repo: Repo) -> dict[str, pygit2.Oid]:
    """path -> blob id for the stage-0 entries of the index (re-read from disk)."""
    index = repo.git.index
    index.read(False)
    return {e.path: e.id for e in index}


def manifest_blobs(
    repo: Repo, files: dict[str, pygit2.Oid], match: Callable[[str], bool] | None = None
) -> dict[str, tuple[str, bytes]]:
    """path -> (blob id, bytes) for the files (tree_files / index_files) whose blob is a manifest."""
    out = {}
    for path, oid in files.items():
        if match is not None and not match(path):
            continue
        data = repo.blob(oid) or b""
        if is_manifest(data):
            out[path] = (str(oid), data)
    return out


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
        for _path, blob_id in walk_tree(commit.tree, "", seen_trees):
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
        data = repo.blob(blob_id) or b""
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
        for path, blob_id in walk_tree(commit.tree, "", seen_trees):
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
                data = self.repo.blob(entry.id) or b""
                if is_manifest(data):
                    with contextlib.suppress(ManifestError):
                        self._by_path[entry.path] = Manifest.from_bytes(data)
        return [m for p, m in self._by_path.items() if p != path]
