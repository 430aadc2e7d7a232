"""`git theta-like publish` and `export`: a model versioned with git-theta-like, for people without it.

`publish` writes a commit on a side branch (default `published`) whose tree is REV's tree with
every tracked checkpoint (a manifest at a path `.gitattributes` gives our filter) replaced by a
standard git-lfs pointer to the whole file, and every `.gitattributes` giving git-lfs's
attributes where it gave ours. Each whole file is one plain LFS object, as git-lfs stores it (no
header; its oid the SHA-256 of the file's bytes). The commit's parent is the branch's previous
tip (the local branch or the remote's, whichever is newer), so the branch is a readable history
of what was published. The whole files (and the objects of git-lfs files in the tree) are
uploaded to the remote's LFS server, then the branch is pushed with `--no-verify` (the pre-push
hooks would only ask the server again). `git clone -b published` with plain git-lfs,
`from_pretrained(repo, revision=...)`, `hf_hub_download` and `safetensors.load_file` then see
ordinary files.

`export` writes REV's tree into a plain directory: checkpoints byte-identical, git-lfs files
materialised when their objects can be had (else left as pointers, with a warning), executable
bits and symbolic links as in the tree.

Checkpoints are materialised by streaming (`Engine.smudge` into a temporary file, hashed as it is
written), so memory stays bounded by the engine's in-flight budget whatever a file's size.
Nothing is half-written: objects are renamed into the store complete, `export` fills a temporary
directory that becomes DIR at the end, and `publish` moves its branch only once everything the
branch needs is on the remote.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pygit2

from git_theta_like.display import human_size, printable
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import ManifestError, PublishError, ThetaLikeError
from git_theta_like.filters import engine_for
from git_theta_like.filters.engine import Engine
from git_theta_like.gitio.attributes import DRIVER, as_lfs
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import MANIFEST_READ_LIMIT, filter_attributes, resolve_commit, worktrees
from git_theta_like.lfs import sync
from git_theta_like.lfs.pointer import POINTER_MAX, LfsPointer, format_pointer, parse_pointer
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.store import store_of
from git_theta_like.store.atomic import AtomicFile, write_atomic

if TYPE_CHECKING:
    from git_theta_like.lfs.transfer import RemoteStore

PUBLISH_BRANCH = "published"
ATTRIBUTES = ".gitattributes"
ZERO = "0" * 40
CACHE_DIR = "published"  # under <common git dir>/theta-like: manifest blob -> its whole file
_CACHED = re.compile(r"([0-9a-f]{64}) (\d+)\n?")

Say = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ what a tree holds


@dataclass
class _File:
    path: str
    blob: pygit2.Oid
    manifest: Manifest | None = None  # a tracked checkpoint
    pointer: LfsPointer | None = None  # a git-lfs pointer at a path git-lfs (or our filter) smudges
    error: str | None = None  # a blob that starts like a manifest but is not a valid one


def _walk(tree: pygit2.Tree, rev: str, prefix: str = "") -> Iterator[tuple[str, pygit2.Object]]:
    """(path, entry) of everything in a tree, directories before what they hold. A name git
    itself refuses to check out (`.`, `..`, `.git`, one with a slash) is an error: a hostile tree
    never writes outside the directory it is exported to."""
    for entry in tree:
        name = entry.name or ""
        if name in ("", ".", "..") or "/" in name or "\0" in name or name.lower() == ".git":
            where = printable(prefix) or "the top"
            raise PublishError(f"the tree of {rev} has an entry named {name!r} in {where}: refused")
        path = prefix + name
        yield path, entry
        if entry.type_str == "tree":
            yield from _walk(entry, rev, path + "/")  # type: ignore[arg-type]


def _small_blob(repo: Repo, oid: pygit2.Oid) -> bytes:
    """A blob's content when it is small enough to be a manifest or a pointer, else b""."""
    with contextlib.suppress(KeyError, ValueError, pygit2.GitError):  # a partial clone's: read it
        if repo.git.odb.read_header(oid)[1] > MANIFEST_READ_LIMIT:
            return b""
    return repo.blob(oid) or b""


def _scan(repo: Repo, commit: pygit2.Commit) -> dict[str, _File]:
    """The tracked checkpoints and the git-lfs pointers of a commit's tree, by path. A manifest
    counts where that commit's attributes give our filter (elsewhere git checks it out as the
    text it is); a pointer where they give git-lfs's filter or ours (both smudge it)."""
    rev = str(commit.id)
    found: dict[str, _File] = {}
    for path, entry in _walk(commit.tree, rev[:12]):
        if entry.type_str != "blob" or entry.filemode == pygit2.enums.FileMode.LINK:
            continue
        data = _small_blob(repo, entry.id)
        if is_manifest(data):
            try:
                found[path] = _File(path, entry.id, manifest=Manifest.from_bytes(data))
            except ManifestError as e:
                found[path] = _File(path, entry.id, error=str(e))
        elif len(data) < POINTER_MAX and (ptr := parse_pointer(data)) is not None and not ptr.extensions:
            found[path] = _File(path, entry.id, pointer=ptr)
    attrs = filter_attributes(repo, sorted(found), rev)
    out: dict[str, _File] = {}
    for path, f in sorted(found.items()):
        value = attrs.get(path)
        if f.pointer is not None and value in ("lfs", DRIVER):
            out[path] = f
        elif f.pointer is None and value == DRIVER:
            if f.error is not None:
                raise PublishError(f"{printable(path)} at {rev[:12]} is not a valid manifest: {f.error}")
            out[path] = f
    return out


def _checkpoints(files: dict[str, _File]) -> list[tuple[_File, Manifest]]:
    return [(f, f.manifest) for f in files.values() if f.manifest is not None]


def _pointers(files: dict[str, _File]) -> list[tuple[_File, LfsPointer]]:
    return [(f, f.pointer) for f in files.values() if f.pointer is not None]


# ------------------------------------------------------------------ whole files


def _cache_path(repo: Repo, blob: pygit2.Oid) -> Path:
    return repo.common_dir / "theta-like" / CACHE_DIR / str(blob)


def _cached_whole(repo: Repo, blob: pygit2.Oid, m: Manifest) -> tuple[str, int] | None:
    """The whole-file object a manifest blob was materialised into before, while the store still
    holds it (a file of the manifest's size under that oid); None otherwise."""
    try:
        found = _CACHED.fullmatch(_cache_path(repo, blob).read_text())
    except (OSError, UnicodeDecodeError):
        return None
    if found is None or int(found.group(2)) != m.size:
        return None
    oid = found.group(1)
    try:
        if store_of(repo).path(oid).stat().st_size != m.size:
            return None
    except OSError:
        return None
    return oid, m.size


def whole_file(repo: Repo, engine: Engine, path: str, blob: pygit2.Oid, m: Manifest) -> tuple[str, int]:
    """The checkpoint a manifest describes, as one plain git-lfs object in the local store (oid =
    SHA-256 of the file's bytes, no header); returns (oid, size). Streamed: smudged into a
    temporary file under the store's tmp dir while it is hashed, then renamed into place; its
    objects must be local (sync.ensure_local)."""
    cached = _cached_whole(repo, blob, m)
    if cached is not None:
        return cached
    store = engine.store
    with store.lock.shared(), AtomicFile(store.tmp, prefix="gtl-publish-", durable=store.durable) as out:
        sha = hashlib.sha256()
        size = 0

        def write(chunk: Buffer) -> None:
            nonlocal size
            view = memoryview(chunk)
            sha.update(view)
            out.write(view)
            size += view.nbytes

        engine.smudge(m, write)
        if size != m.size:
            raise PublishError(
                f"{printable(path)}: its checkpoint came out {size} bytes, its manifest says {m.size}"
            )
        oid = sha.hexdigest()
        out.commit(store.path(oid))
    write_atomic(_cache_path(repo, blob), f"{oid} {size}\n".encode())
    return oid, size


# ------------------------------------------------------------------ publish


@dataclass
class Published:
    path: str
    oid: str
    size: int


@dataclass
class PublishResult:
    rev: str  # the full id of the commit published
    subject: str
    branch: str
    remote: str | None  # None with --no-push
    commit: str  # the branch's tip now
    parent: str | None  # its previous tip
    created: bool  # whether a new commit was written
    files: list[Published] = field(default_factory=list)
    materialised: int = 0  # whole files written into the store by this run
    uploaded: int = 0  # objects sent to the LFS server
    pushed: bool = False  # whether the branch was pushed (the remote lacked this tip)


def _git(repo: Repo, *args: str) -> str:
    return repo.run_git(*args, error=PublishError)


def _ref_target(repo: Repo, ref: str) -> pygit2.Oid | None:
    try:
        obj = repo.git.lookup_reference(ref).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        return None
    return obj.id


def _check_not_checked_out(repo: Repo, ref: str, branch: str) -> None:
    for wt in worktrees(repo):
        with contextlib.suppress(OSError):
            if (wt.git_dir / "HEAD").read_text().strip() == f"ref: {ref}":
                raise PublishError(
                    f"branch {branch!r} is checked out in {wt.path}: publish writes it without a work "
                    "tree; switch that work tree to another branch first (or name another --branch)"
                )


def _remote_tip(repo: Repo, remote: str, ref: str) -> pygit2.Oid | None:
    """The remote's tip of ref, fetched when it is not here (None when the remote has no such
    branch)."""
    out = _git(repo, "ls-remote", "--", remote, ref)
    tip = next((line.split()[0] for line in out.splitlines() if line.endswith(f"\t{ref}")), None)
    if tip is None:
        return None
    oid = pygit2.Oid(hex=tip)
    if repo.git.get(oid) is None:
        _git(repo, "fetch", "-q", "--no-tags", "--", remote, ref)
        if repo.git.get(oid) is None:
            raise PublishError(f"could not fetch {ref} ({tip[:12]}) from {remote}")
    return oid


def _newer(repo: Repo, branch: str, a: pygit2.Oid | None, b: pygit2.Oid | None) -> pygit2.Oid | None:
    """Of the local tip a and the remote's tip b, the one that contains the other."""
    if a is None or b is None or a == b:
        return a or b
    if repo.git.descendant_of(a, b):
        return a
    if repo.git.descendant_of(b, a):
        return b
    raise PublishError(
        f"the local branch {branch!r} ({str(a)[:12]}) and the remote's ({str(b)[:12]}) have diverged: "
        f"make one contain the other (e.g. `git branch -f {branch} <remote>/{branch}`), then publish again"
    )


def _published_tree(
    repo: Repo, engine: Engine, commit: pygit2.Commit, say: Say
) -> tuple[pygit2.Oid, list[Published], list[tuple[str, int]], int]:
    """The tree of the published commit, the checkpoints in it (as whole files), every LFS object
    it points to (oid, size) and how many whole files were materialised now."""
    files = _scan(repo, commit)
    todo = [(f, m) for f, m in _checkpoints(files) if _cached_whole(repo, f.blob, m) is None]
    if todo:
        objs = [o for _, m in todo for o in sync.manifest_objects(m)]
        sync.ensure_local(repo, objs, what=f"publish of {str(commit.id)[:12]}")
    index = pygit2.Index()
    index.read_tree(commit.tree)
    mode = {e.path: e.mode for e in index}
    published: list[Published] = []
    for f, m in _checkpoints(files):
        if _cached_whole(repo, f.blob, m) is None:
            say(f"materialising {printable(f.path)} ({human_size(m.size)})")
        oid, size = whole_file(repo, engine, f.path, f.blob, m)
        blob = repo.git.create_blob(format_pointer(oid, size))
        index.add(pygit2.IndexEntry(f.path, blob, mode[f.path]))
        published.append(Published(f.path, oid, size))
    for path, blob_id in [(e.path, e.id) for e in index]:
        if path.rsplit("/", 1)[-1] != ATTRIBUTES:
            continue
        text = (repo.blob(blob_id) or b"").decode("utf-8", "surrogateescape")
        new = as_lfs(text)
        if new != text:
            blob = repo.git.create_blob(new.encode("utf-8", "surrogateescape"))
            index.add(pygit2.IndexEntry(path, blob, mode[path]))
    objects = [(p.oid, p.size) for p in published] + [(p.oid, p.size) for _, p in _pointers(files)]
    return index.write_tree(repo.git), published, objects, len(todo)


def _upload(repo: Repo, client: RemoteStore, remote: str, objects: list[tuple[str, int]]) -> int:
    """Upload what the remote lacks of the objects the published tree points to. An object that
    is neither here nor on the remote (a git-lfs file never fetched here) is an error: a clone
    of the branch would fail on it."""
    store = store_of(repo)
    absent = [(o, s) for o, s in objects if not store.has(o)]
    lacking = client.missing_on_remote(absent) if absent else []
    if lacking:
        raise PublishError(
            f"{len(lacking)} git-lfs object(s) the published tree points to are neither in the local "
            f"store nor on {remote}: {', '.join(lacking[:5])}; fetch them (git lfs fetch) first. "
            "Nothing was pushed"
        )
    uploaded: int = client.upload([(o, s) for o, s in objects if store.has(o)])
    return uploaded


def publish(
    repo: Repo,
    rev: str = "HEAD",
    branch: str = PUBLISH_BRANCH,
    remote: str | None = None,
    push: bool = True,
    say: Say = _stderr,
) -> PublishResult:
    """Write REV's tree, with its checkpoints as plain git-lfs files, as a new commit on `branch`
    (see the module docstring), upload what it needs and push it to `remote` (default: as fetch)
    unless `push` is false. The same tree again makes no commit. The branch moves only once the
    remote has everything (or, without push, once the commit is written)."""
    commit = resolve_commit(repo, rev)
    ref = f"refs/heads/{branch}"
    if not branch or not pygit2.reference_is_valid_name(ref):
        raise PublishError(f"{branch!r} is not a valid branch name")
    _check_not_checked_out(repo, ref, branch)
    name = remote or sync.default_remote(repo)
    client = None
    if push:
        from git_theta_like.lfs.transfer import RemoteStore

        client = RemoteStore(repo, name)
        client.endpoint("upload")  # a remote without an LFS endpoint fails here, before any work
    sha = str(commit.id)
    subject = commit.message.split("\n", 1)[0].strip()
    with store_of(repo).lock.shared():
        local = _ref_target(repo, ref)
        theirs = _remote_tip(repo, name, ref) if push else _ref_target(repo, f"refs/remotes/{name}/{branch}")
        parent = _newer(repo, branch, local, theirs)
        if parent is not None:
            held = _checkpoints(_scan(repo, repo.git[parent].peel(pygit2.Commit)))
            if held:
                raise PublishError(
                    f"branch {branch!r} ({str(parent)[:12]}) holds git-theta-like checkpoints "
                    f"({', '.join(printable(f.path) for f, _ in held[:3])}): it is a working branch, "
                    "not one publish wrote; name another --branch"
                )
        with engine_for(repo) as engine:
            tree, files, objects, materialised = _published_tree(repo, engine, commit, say)
        created = parent is None or repo.git[parent].peel(pygit2.Commit).tree_id != tree
        if created:
            message = (
                f"Publish {sha}: {subject}\n\nThe tree of {sha} with its checkpoints as git-lfs files "
                "(git theta-like publish).\n"
            )
            args = ["commit-tree", str(tree), *(["-p", str(parent)] if parent else []), "-m", message]
            new = pygit2.Oid(hex=_git(repo, *args).strip())
        else:
            assert parent is not None
            new = parent
        result = PublishResult(
            sha, subject, branch, name if push else None, str(new), str(parent) if parent else None, created
        )
        result.files, result.materialised = files, materialised
        if client is not None and theirs != new:
            result.uploaded = _upload(repo, client, name, objects)
            _git(repo, "push", "--no-verify", "-q", "--", name, f"{new}:{ref}")
            result.pushed = True
        if local != new:
            old = str(local) if local is not None else ZERO
            _git(repo, "update-ref", "-m", f"theta-like publish {sha[:12]}", ref, str(new), old)
    return result


def summary(r: PublishResult) -> list[str]:
    """What publish did, for people."""
    lines = []
    if r.created:
        parent = f", parent {r.parent[:12]}" if r.parent else ", the branch's first commit"
        lines.append(f"{r.branch}: new commit {r.commit[:12]} publishes {r.rev[:12]} ({r.subject}){parent}")
    else:
        lines.append(f"{r.branch} ({r.commit[:12]}) already has the tree of {r.rev[:12]}: no new commit")
    total = sum(f.size for f in r.files)
    lines.append(
        f"{len(r.files)} checkpoint(s) as git-lfs files, {human_size(total)} "
        f"({r.materialised} materialised now)"
    )
    for f in r.files:
        lines.append(f"  {printable(f.path)}: {human_size(f.size)}, sha256 {f.oid[:16]}…")
    if r.remote is None:
        lines.append(f"not pushed (--no-push): git theta-like publish --branch {r.branch} pushes it")
    elif r.pushed:
        lines.append(f"uploaded {r.uploaded} LFS object(s), pushed {r.branch} to {r.remote}")
    else:
        lines.append(f"{r.remote} already has {r.branch} at {r.commit[:12]}: nothing pushed")
    return lines


# ------------------------------------------------------------------ export


@dataclass
class ExportResult:
    rev: str
    dest: Path
    files: int = 0  # files written (symbolic links included)
    checkpoints: int = 0
    lfs_files: int = 0  # git-lfs pointers materialised
    pointers_left: list[str] = field(default_factory=list)  # git-lfs pointers whose object was not had
    size: int = 0  # bytes written


def _plain_available(repo: Repo, pointers: list[tuple[_File, LfsPointer]], say: Say) -> set[str]:
    """The git-lfs objects of pointers that are in the local store, downloading those that are
    not from the remote when it has them (a failure is a warning: those files stay pointers)."""
    store = store_of(repo)
    missing = [(p.oid, p.size) for _, p in pointers if not store.has(p.oid)]
    if missing:
        try:
            sync.ensure_plain(repo, missing, what="export")
        except ThetaLikeError as e:
            say(f"warning: git-lfs objects could not be downloaded: {e}")
    return {p.oid for _, p in pointers if store.has(p.oid)}


def _check_empty(dest: Path) -> None:
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise PublishError(f"{dest} exists and is not a directory; export writes into a new or empty one")
    if dest.is_dir() and any(dest.iterdir()):
        raise PublishError(f"{dest} is not empty; export writes into a new or empty directory")


def export(repo: Repo, rev: str, dest: str | os.PathLike[str], say: Say = _stderr) -> ExportResult:
    """Write the tree of rev into the directory dest (new, or empty): tracked checkpoints
    byte-identical, git-lfs files materialised when their objects are here or on the remote,
    everything else as the tree holds it (executable bits, symbolic links; a submodule is an
    empty directory). Written into a temporary directory next to dest, renamed at the end: an
    error leaves dest as it was."""
    commit = resolve_commit(repo, rev)
    target = Path(os.path.abspath(dest))
    _check_empty(target)
    sha = str(commit.id)
    files = _scan(repo, commit)
    objs = [o for _, m in _checkpoints(files) for o in sync.manifest_objects(m)]
    sync.ensure_local(repo, objs, what=f"export of {sha[:12]}")
    have = _plain_available(repo, _pointers(files), say)
    result = ExportResult(sha, target)
    store = store_of(repo)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.gtl-export-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    try:
        with engine_for(repo) as engine:
            for path, entry in _walk(commit.tree, sha[:12]):
                out_path = tmp / path
                if entry.type_str in ("tree", "commit"):  # a submodule: empty, as a plain clone leaves it
                    out_path.mkdir()
                    continue
                if entry.filemode == pygit2.enums.FileMode.LINK:
                    os.symlink(os.fsdecode(repo.blob(entry.id) or b""), out_path)
                    result.files += 1
                    continue
                executable = entry.filemode == pygit2.enums.FileMode.BLOB_EXECUTABLE
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(out_path, flags, 0o777 if executable else 0o666)
                with os.fdopen(fd, "wb") as out:
                    f = files.get(path)
                    if f is not None and f.manifest is not None:
                        engine.smudge(f.manifest, out.write)
                        result.checkpoints += 1
                    elif f is not None and f.pointer is not None and f.pointer.oid in have:
                        for chunk in store.iter_plain(f.pointer.oid, f.pointer.size, path):
                            out.write(chunk)
                        result.lfs_files += 1
                    else:
                        if f is not None:
                            result.pointers_left.append(path)
                        out.write(repo.blob(entry.id) or b"")
                    result.size += out.tell()
                result.files += 1
        tmp.chmod(0o777 & ~umask)
        if target.is_dir():
            target.rmdir()  # empty, checked above
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for path in result.pointers_left:
        say(f"warning: {printable(path)} left as a git-lfs pointer: its object is not here nor on the remote")
    return result


def export_summary(r: ExportResult) -> list[str]:
    lfs = f", {r.lfs_files} git-lfs file(s)" if r.lfs_files else ""
    left = f", {len(r.pointers_left)} left as git-lfs pointers" if r.pointers_left else ""
    return [
        f"exported {r.rev[:12]} to {r.dest}: {r.files} file(s), {human_size(r.size)}, "
        f"{r.checkpoints} checkpoint(s){lfs}{left}"
    ]
