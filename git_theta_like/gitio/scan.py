"""The one scanner of manifests in trees, the index and history.

Which files of a tree or of the index hold manifests (`tracked_files`, `manifest_blobs`), the
staged manifests the filter reuses objects from (`IndexManifests`), and every manifest the
repository still needs (`reachable_manifests`: every ref of every namespace, every reflog, and
each worktree's HEAD, index and reflog), which fsck checks and gc keeps. Reads blobs through
`Repo.blob` (so a partial clone's missing blobs are fetched); imports only the bottom layer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from git_theta_like.errors import ManifestError, RevisionError, ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.progress import Progress


@dataclass
class TrackedFile:
    path: str
    manifest: Manifest | None
    error: str | None = None


def tracked_files(
    repo: Repo, rev: str | None = None, other: Callable[[str, bytes], Manifest | None] | None = None
) -> list[TrackedFile]:
    """Files whose staged content (or content at rev) is a manifest, sorted by path. With `other`,
    also the files whose blob `other(path, data)` turns into a manifest (a version of the file
    that is not a manifest: semdiff counts git-lfs pointers and empty files as files stored whole)."""
    out = []
    if rev is None:
        index = repo.git.index
        index.read(False)
        entries = [(e.path, e.id) for e in index]
    else:
        entries = list(walk_tree(resolve_commit(repo, rev).tree))
    for path, oid in sorted(entries):
        blob = repo.blob(oid)
        data = blob or b""
        if not is_manifest(data):
            if other is not None and blob is not None and (version := other(path, data)) is not None:
                out.append(TrackedFile(path, version))
            continue
        try:
            out.append(TrackedFile(path, Manifest.from_bytes(data)))
        except ManifestError as e:
            out.append(TrackedFile(path, None, str(e)))
    return out


def load_manifest(repo: Repo, path: str, rev: str | None = None) -> Manifest:
    """The manifest of path, staged (rev None) or at rev; a clear error when there is none
    (RevisionError when rev names no commit)."""
    if rev is not None:
        resolve_commit(repo, rev)
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


# Files in a worktree's git dir that name a commit an operation in progress still needs.
PSEUDO_REFS = (
    "ORIG_HEAD",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "REBASE_HEAD",
    "AUTO_MERGE",
    "BISECT_HEAD",
)


@dataclass
class Worktree:
    """One worktree's own state, as git keeps it: the main worktree in the common git dir, each
    linked one (`git worktree add`) in `<common dir>/worktrees/<id>`."""

    git_dir: Path
    path: str  # the work tree (`gitdir` file), or the git dir itself when bare / unknown
    main: bool

    @property
    def label(self) -> str:
        return "" if self.main else f" of worktree {self.path}"


def worktrees(repo: Repo) -> list[Worktree]:
    """The main worktree and every linked worktree git knows (`git worktree list`), pruned or
    not: a worktree whose directory is gone keeps its HEAD, index and reflog until
    `git worktree prune`, and so do we."""
    common = repo.common_dir
    out = [Worktree(common, str(common.parent if common.name == ".git" else common), True)]
    linked = common / "worktrees"
    if linked.is_dir():
        for d in sorted(linked.iterdir()):
            if not (d / "HEAD").is_file():
                continue
            where = str(d)
            with contextlib.suppress(OSError):
                where = str(Path((d / "gitdir").read_text().strip()).parent)
            out.append(Worktree(d, where, False))
    return out


def _hex_ids(text: str) -> Iterator[str]:
    for word in text.split():
        if len(word) in (40, 64) and all(c in "0123456789abcdef" for c in word):
            yield word


def _reflog_ids(logs: Path) -> Iterator[str]:
    """Old and new ids of every entry of every reflog under a `logs/` dir."""
    if not logs.is_dir():
        return
    for f in sorted(logs.rglob("*")):
        if not f.is_file():
            continue
        try:
            lines = f.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            yield from list(_hex_ids(" ".join(line.split(" ", 2)[:2])))


def _loose_ref_ids(refs: Path) -> Iterator[str]:
    """Ids of the loose refs under a `refs/` dir (a linked worktree's own: bisect, worktree,
    rewritten)."""
    if not refs.is_dir():
        return
    for f in sorted(refs.rglob("*")):
        if f.is_file():
            with contextlib.suppress(OSError):
                yield from list(_hex_ids(f.read_text(errors="replace")[:80]))


def _root_ids(repo: Repo, reflogs: bool = True) -> Iterator[str]:
    """Ids of the objects everything the repository keeps starts from: every ref of every
    namespace (branches, tags, remotes, notes, stash, replace, refs/original, any other), with
    (reflogs) every entry of every reflog; and of every worktree its HEAD, the commits of an
    operation in progress, its own refs and (reflogs) its HEAD reflog. Commits, tags, trees and
    blobs alike; the caller sorts them out."""
    g = repo.git
    for name in g.references:
        with contextlib.suppress(pygit2.GitError, ValueError, KeyError):
            target = g.references[name].resolve().target
            yield str(target)
    for wt in worktrees(repo):
        with contextlib.suppress(OSError):
            head = (wt.git_dir / "HEAD").read_text()
            if not head.startswith("ref:"):
                yield from list(_hex_ids(head[:80]))
        for pseudo in PSEUDO_REFS:
            with contextlib.suppress(OSError):
                yield from list(_hex_ids((wt.git_dir / pseudo).read_text()[:80]))
        yield from _loose_ref_ids(wt.git_dir / "refs")
        if reflogs:
            yield from _reflog_ids(wt.git_dir / "logs")


def _roots(repo: Repo, reflogs: bool = True) -> tuple[list[pygit2.Oid], list[pygit2.Oid]]:
    """(commits, other objects) the roots name: annotated tags peeled, ids that name no object
    here dropped (a partial clone's missing blob is an "other", read through repo.blob)."""
    g = repo.git
    commits: dict[pygit2.Oid, None] = {}
    others: dict[pygit2.Oid, None] = {}
    for hexid in dict.fromkeys(_root_ids(repo, reflogs)):
        if not hexid.strip("0"):
            continue  # a reflog's "created" entry
        try:
            oid = pygit2.Oid(hex=hexid)
            obj = g.get(oid)
            for _ in range(64):
                if not isinstance(obj, pygit2.Tag):
                    break
                oid = obj.target
                obj = g.get(oid)
        except (pygit2.GitError, ValueError, KeyError):
            continue
        if isinstance(obj, pygit2.Commit):
            commits[obj.id] = None
        elif obj is not None:
            others[obj.id] = None
        elif repo.promisor:
            others[oid] = None
    return list(commits), list(others)


def _commits(repo: Repo, roots: list[pygit2.Oid]) -> Iterator[pygit2.Commit]:
    """Every commit reachable from the roots, once (stash commits' index and untracked parents
    are ordinary parents, so they are walked too)."""
    if not roots:
        return
    walker = repo.git.walk(roots[0], pygit2.enums.SortMode.NONE)
    for r in roots[1:]:
        walker.push(r)
    yield from walker


MANIFEST_READ_LIMIT = 64 * 1024 * 1024  # larger blobs are not read to see whether they are manifests


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
    """The commit rev names; RevisionError `bad revision 'rev'` (git's words) when it names none."""
    try:
        return repo.git.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise RevisionError(f"bad revision '{rev}'") from None


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
    commits, others = _roots(repo, reflogs)
    # fsck, gc and fetch --all walk the whole history: a line once that has taken a second
    progress = Progress("Scanning history", unit="commits", show_bytes=False, delay=1.0)
    try:
        for commit in _commits(repo, commits):
            progress.add_total(1)
            for path, blob_id in walk_tree(commit.tree, "", seen_trees):
                consider(blob_id, str(commit.id)[:12], path)
            progress.step()
    finally:
        progress.finish()
    for oid in others:  # a ref (or a tag) naming a tree or a blob directly
        obj = g.get(oid)
        if isinstance(obj, pygit2.Tree):
            for path, blob_id in walk_tree(obj, "", seen_trees):
                consider(blob_id, f"tree {str(oid)[:12]}", path)
        else:
            consider(oid, f"blob {str(oid)[:12]}", "")
    for wt in worktrees(repo):
        where = f"index{wt.label}"
        try:
            index = pygit2.Index(str(wt.git_dir / "index"))
        except (pygit2.GitError, OSError, ValueError):
            continue  # no index yet (a bare repository, a fresh --no-checkout clone)
        for entry in index:
            consider(entry.id, where, entry.path)
        try:
            for conflict in index.conflicts or ():
                for side in conflict:
                    if side is not None:
                        consider(side.id, f"{where} (conflict)", side.path)
        except (pygit2.GitError, ValueError):
            pass
    for key in [k for k, fm in found.items() if fm.manifest is None]:
        if not _any_use_tracked(repo, found[key].uses):
            del found[key]  # prose that starts with the magic, at a path the filter never sees
    pushed = pushed_manifest_blobs(repo)
    for key, fm in found.items():
        fm.pushed = key in pushed
    return found


def _any_use_tracked(repo: Repo, uses: list[tuple[str, str]]) -> bool:
    """Whether a blob that looks like a manifest but does not parse is one: some use of it (of
    the few recorded) is at a path the filter attribute tracks, per that commit's (or the
    index's) `.gitattributes`. A blob a ref names directly, or a use that cannot be checked,
    counts as tracked: gc keeps what it names rather than guess."""
    for where, path in uses:
        if not path or where.startswith(("tree ", "blob ")):
            return True
        rev = None if where.startswith("index") else where
        try:
            if tracked_by_attributes(repo, [path], rev):
                return True
        except ThetaLikeError:
            return True
    return False


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
            found: dict[str, Manifest] = {}
            for entry in index:
                data = self.repo.blob(entry.id) or b""
                if is_manifest(data):
                    with contextlib.suppress(ManifestError):
                        found[entry.path] = Manifest.from_bytes(data)
            # only blobs at paths the filter attribute tracks are manifests: a text file that
            # merely looks like one (committed at an untracked path) offers nothing to reuse
            tracked = tracked_by_attributes(self.repo, sorted(found)) if found else set()
            self._by_path = {p: m for p, m in found.items() if p in tracked}
        return [m for p, m in self._by_path.items() if p != path]


# ------------------------------------------------------------------ checkpoints not converted

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"


@dataclass
class UnconvertedFile:
    """A path git-theta-like tracks (its `filter` attribute is ours) whose blob is not a
    manifest: a raw checkpoint added without the filter (a collaborator without the tool,
    `track` before `install`), or a git-lfs pointer left from before the switch."""

    path: str
    blob: str
    size: int  # bytes of the blob
    kind: str  # "raw" | "lfs-pointer"
    committed: bool  # the blob is the committed one (at rev, or the index's at HEAD too)

    @property
    def what(self) -> str:
        return "a git-lfs pointer" if self.kind == "lfs-pointer" else "the raw file"

    @property
    def fix(self) -> str:
        """The command that converts it."""
        if self.committed:
            return (
                "git theta-like migrate --fixup (rewrites history), or "
                f"git add --renormalize -- {self.path} and commit"
            )
        return f"git add --renormalize -- {self.path}"


def tracked_by_attributes(repo: Repo, paths: list[str], rev: str | None = None) -> set[str]:
    """The paths whose `filter` attribute is theta-like per the `.gitattributes` files of the
    index (rev None) or of the commit rev, as `git check-attr --cached` reads them (a commit's
    are read through a temporary index, so the working tree plays no part)."""
    from git_theta_like.gitio.attributes import DRIVER

    return {p for p, value in filter_attributes(repo, paths, rev).items() if value == DRIVER}


def filter_attributes(repo: Repo, paths: list[str], rev: str | None = None) -> dict[str, str]:
    """path -> the value of its `filter` attribute (`theta-like`, `lfs`, ...; paths without one
    are left out), read as tracked_by_attributes reads them."""
    import os
    import subprocess
    import tempfile

    if not paths:
        return {}
    cwd = repo.workdir or repo.git_dir
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="theta-like-attr-") as tmp:
        if rev is not None:
            env["GIT_INDEX_FILE"] = os.path.join(tmp, "index")
            p = subprocess.run(
                ["git", "read-tree", str(resolve_commit(repo, rev).id)], cwd=cwd, env=env, capture_output=True
            )
            if p.returncode != 0:
                err = p.stderr.decode(errors="replace").strip()
                raise ThetaLikeError(f"git read-tree {rev} failed: {err}")
        p = subprocess.run(
            ["git", "check-attr", "--cached", "-z", "--stdin", "filter"],
            cwd=cwd,
            env=env,
            input=b"".join(x.encode("utf-8", "surrogateescape") + b"\0" for x in paths),
            capture_output=True,
        )
    if p.returncode != 0:
        raise ThetaLikeError(f"git check-attr failed: {p.stderr.decode(errors='replace').strip()}")
    fields = p.stdout.decode("utf-8", "surrogateescape").split("\0")
    # -z output: path NUL attribute NUL value NUL, for each path
    return {
        fields[i]: fields[i + 2]
        for i in range(0, len(fields) - 2, 3)
        if fields[i + 2] not in ("unspecified", "unset", "set")
    }


def unconverted_files(repo: Repo, rev: str | None = None) -> list[UnconvertedFile]:
    """Tracked paths of the index (rev None) or of rev whose blob is not a manifest, sorted by
    path. Empty blobs are not counted (git never runs a filter on an empty file), nor manifests
    that a text merge left conflict markers in."""
    head: dict[str, pygit2.Oid] = {}
    if rev is None:
        files = index_files(repo)
        if not repo.git.head_is_unborn:
            head = tree_files(repo.git.head.peel(pygit2.Commit).tree)
    else:
        files = tree_files(resolve_commit(repo, rev).tree)
    out = []
    odb = repo.git.odb
    for path in sorted(tracked_by_attributes(repo, sorted(files), rev)):
        oid = files[path]
        _, size = odb.read_header(oid)
        if size == 0:
            continue
        # a blob this large is no manifest (about 200 bytes a tensor): never read a raw checkpoint
        data = (repo.blob(oid) or b"") if size <= MANIFEST_READ_LIMIT else b""
        if looks_like_manifest(data):
            continue
        kind = "lfs-pointer" if size < 1024 and data.startswith(LFS_POINTER_PREFIX) else "raw"
        committed = rev is not None or head.get(path) == oid
        out.append(UnconvertedFile(path, str(oid), size, kind, committed))
    return out
