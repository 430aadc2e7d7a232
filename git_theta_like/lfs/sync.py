"""What to move between the local store and a remote: pushes, checkouts and prefetches.

Everything is worked out from manifests (and, for delta chains, object headers): no local
bookkeeping, so a fresh clone, a merge commit or a new branch pushes like any other.
"""

from __future__ import annotations

import fnmatch
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from git_theta_like.errors import (
    ManifestError,
    ObjectCorruptError,
    ObjectMissingError,
    RemoteError,
    RemoteObjectMissingError,
    RevisionError,
    ThetaLikeError,
)
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, ObjectRef, is_manifest, is_object_id, parse_count
from git_theta_like.store import store_of

if TYPE_CHECKING:
    from git_theta_like.lfs.transfer import RemoteStore

ZERO = "0" * 40


def needed(ref: ObjectRef) -> list[tuple[str, int]]:
    """The object and, for a delta, its base as the manifest line names it."""
    out = [(ref.oid, ref.stored)]
    extra = dict(ref.extra)
    base, base_size = extra.get("base", ""), parse_count(extra.get("base-size", ""))
    if is_object_id(base) and base_size is not None:  # anything else: the header names the base
        out.append((base, base_size))
    return out


def chain_closure(repo: Repo, objs: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """objs plus, transitively, the delta bases of those that are local (read from headers)."""
    store = store_of(repo)
    result: dict[str, int] = {}
    todo = list(objs)
    while todo:
        oid, size = todo.pop()
        if oid in result:
            continue
        result[oid] = size
        if store.has(oid):
            try:
                header = store.read_header(oid)
            except ObjectCorruptError:
                continue  # fsck reports it; the transfer itself verifies what it sends
            if header.base and header.base not in result:
                todo.append((header.base, int(header.params.get("base_size", 0))))
    return list(result.items())


# ------------------------------------------------------------------ push


def _rev_list_new_blobs(
    repo: Repo, local_sha: str, remote: str, remote_sha: str, whole_history: bool = False
) -> list[str]:
    """Blob ids reachable from local_sha but not from what the remote is known to have (with
    whole_history, every blob reachable from local_sha)."""
    import pygit2

    cmd = ["git", "rev-list", "--objects", local_sha]
    if not whole_history:
        cmd += ["--not", f"--remotes={remote}"]
        if remote_sha != ZERO and repo.git.get(remote_sha) is not None:
            cmd.append(remote_sha)
    out = subprocess.run(cmd, cwd=repo.workdir or repo.git_dir, capture_output=True, text=True, check=True)
    blobs = []
    for line in out.stdout.splitlines():
        oid = line.split(" ", 1)[0]
        obj = repo.git.get(oid)
        # a partial clone's blob not fetched yet: objects_to_push reads it through repo.blob
        if isinstance(obj, pygit2.Blob) or (obj is None and repo.promisor):
            blobs.append(oid)
    return blobs


def objects_to_push(
    repo: Repo, remote: str, updates: Iterable[str], whole_history: bool = False
) -> list[tuple[str, int]]:
    """Objects of every manifest in the commits a push sends (pre-push hook input lines); with
    whole_history, in every commit the pushed refs reach, whether the remote has it or not."""
    objs: dict[str, int] = {}
    for line in updates:
        parts = line.split()
        if len(parts) != 4:
            continue
        _local_ref, local_sha, _remote_ref, remote_sha = parts
        if local_sha == ZERO:  # deleting a remote ref sends nothing
            continue
        for blob_id in _rev_list_new_blobs(repo, local_sha, remote, remote_sha, whole_history):
            data = repo.blob(blob_id) or b""
            if not is_manifest(data):
                continue
            try:
                m = Manifest.from_bytes(data)
            except ManifestError:
                continue
            for _, ref in m.objects():
                for oid, size in needed(ref):
                    objs[oid] = size
    return chain_closure(repo, objs.items())


@dataclass
class PushResult:
    objects: int = 0  # objects the pushed commits need
    uploaded: int = 0  # of them, sent (the remote lacked them)
    anchored: int = 0  # newly pointed to from the remote's anchor branch (lfs/anchors.py)
    sent: list[str] = field(default_factory=list)  # `push`: the objects uploaded
    lost: list[str] = field(default_factory=list)  # `push`: needed, but neither here nor there


def pre_push(repo: Repo, remote: str, url: str | None, updates: list[str]) -> PushResult:
    """The pre-push hook: upload what the pushed commits need, then anchor it (before git sends
    the refs, so no pushed commit's objects are ever unreferenced on the server)."""
    from git_theta_like.lfs import anchors  # pushes only: it imports pygit2
    from git_theta_like.lfs.transfer import RemoteStore

    if anchors.enabled(repo):
        for line in updates:
            parts = line.split()
            if len(parts) == 4 and parts[1] == ZERO and parts[2] == anchors.REMOTE_REF:
                raise ThetaLikeError(
                    f"this push deletes {anchors.BRANCH} on {remote}, the branch that keeps the LFS "
                    "objects of pushed checkpoints from being garbage-collected by the server; "
                    f"push with --no-verify (or `git config {anchors.SETTING} false`) to delete it"
                )
    objs = objects_to_push(repo, remote, updates)
    if not objs:
        return PushResult()
    store = store_of(repo)
    lacking = [(o, s) for o, s in objs if not store.has(o)]
    # a lazy or partial clone pushed to a new host: the objects are on the other remotes
    _fetch_for_push(repo, lacking, "this push needs are not local: fetching them first")
    uploaded = RemoteStore(repo, remote, url).upload(objs)
    return PushResult(len(objs), uploaded, anchors.anchor(repo, remote, objs, url))


def _fetch_for_push(repo: Repo, lacking: list[tuple[str, int]], why: str) -> None:
    """Fetch the objects a push needs that are not local (from the remotes that have them); a
    failure is only warned about: the upload, or the push's summary, names what is missing."""
    if not lacking:
        return
    warn(f"{len(lacking)} object(s) {why}")
    try:
        ensure_local(repo, lacking, what="push")
    except ThetaLikeError as e:
        warn(f"could not fetch them: {e}")


def push(
    repo: Repo, remote: str, refs: list[str], every: bool = False, object_ids: list[str] | None = None
) -> PushResult:
    """`git theta-like push`: upload what the remote lacks even when git says up-to-date, and
    anchor it. The objects of the commits `refs` (default: HEAD) reach and the remote-tracking
    refs of `remote` do not; with `every`, of every commit they reach (every branch and tag
    when no ref is given); with object_ids, those objects."""
    import pygit2

    store = store_of(repo)
    if object_ids is not None:
        bad = [o for o in object_ids if not is_object_id(o)]
        if bad:
            raise ThetaLikeError(f"not an object id (64 lowercase hex digits): {bad[0]!r}")
        lacking = [o for o in object_ids if not store.has(o)]
        if lacking:
            raise ObjectMissingError(
                f"cannot push: {len(lacking)} object(s) are not in the local store: {', '.join(lacking[:10])}"
            )
        objs = [(o, store.path(o).stat().st_size) for o in dict.fromkeys(object_ids)]
    else:
        if every and not refs:
            names = sorted(n for n in repo.git.references if n.startswith(("refs/heads/", "refs/tags/")))
        else:
            names = refs or ["HEAD"]
        lines = []
        for name in names:
            try:
                sha = str(repo.git.revparse_single(name).id)
            except (KeyError, ValueError, pygit2.GitError):
                raise RevisionError(f"bad revision '{name}'") from None
            lines.append(f"{name} {sha} {name} {ZERO}")
        objs = objects_to_push(repo, remote, lines, whole_history=every)
    return _repair(repo, remote, objs)


def _repair(repo: Repo, remote: str, objs: list[tuple[str, int]]) -> PushResult:
    """Upload those of objs the remote lacks (fetching from the other remotes those that are
    not local either), then anchor every one the remote now has."""
    from git_theta_like.lfs import anchors  # pushes only: it imports pygit2
    from git_theta_like.lfs.transfer import RemoteStore

    if not objs:
        return PushResult()
    rs = RemoteStore(repo, remote)
    missing = set(rs.missing_on_remote(objs))
    store = store_of(repo)
    lacking = [(o, s) for o, s in objs if o in missing and not store.has(o)]
    _fetch_for_push(repo, lacking, "the remote lacks are not local: looking for them on other remotes")
    lost = [o for o, _ in objs if o in missing and not store.has(o)]
    send = [(o, s) for o, s in objs if o in missing and o not in lost]
    uploaded = rs.upload(send)
    gone = set(lost)
    anchored = anchors.anchor(repo, remote, [(o, s) for o, s in objs if o not in gone])
    return PushResult(len(objs), uploaded, anchored, [o for o, _ in send], lost)


# ------------------------------------------------------------------ fetch / checkout


def default_remote(repo: Repo) -> str:
    """theta-like.remote, else the current branch's remote, else origin."""
    import pygit2

    configured = repo.config_get("theta-like.remote")
    if configured:
        return configured
    try:
        head = repo.git.head.shorthand
        remote = repo.config_get(f"branch.{head}.remote")
        if remote and remote != ".":
            return remote
    except (pygit2.GitError, KeyError):
        pass
    return "origin"


def ensure_local(
    repo: Repo, objs: Iterable[tuple[str, int]], remote: str | None = None, what: str = ""
) -> int:
    """Download the objects (and their delta chains) not in the local store; returns how many."""
    store = store_of(repo)
    wanted = dict(objs)
    fetched = 0
    seen: set[str] = set()
    clients = _clients(repo)  # one per remote for all chain levels and calls (endpoint, auth, connections)
    while True:
        missing = [(o, s) for o, s in wanted.items() if not store.has(o)]
        if missing:
            fetched += _download(repo, remote, what, missing, clients)
        # follow delta chains one level further
        nxt: dict[str, int] = {}
        for oid in wanted:
            if oid in seen:
                continue
            seen.add(oid)
            header = store.read_header(oid, what or "object")
            if header.base and header.base not in seen and not store.has(header.base):
                nxt[header.base] = int(header.params.get("base_size", 0))
        if not nxt:
            return fetched
        wanted = nxt


def ensure_plain(
    repo: Repo, objs: Iterable[tuple[str, int]], remote: str | None = None, what: str = ""
) -> int:
    """Download the plain git-lfs objects (whole files, as git-lfs stores them: no header, no delta
    chain) not in the local store; returns how many. Each is checked against its SHA-256."""
    store = store_of(repo)
    missing = [(o, s) for o, s in dict(objs).items() if not store.has(o)]
    if not missing:
        return 0
    fetched: int = _remote_store(repo, remote, what, missing).download(missing)
    return fetched


_CLIENTS: dict[str, dict[str, RemoteStore]] = {}


def _clients(repo: Repo) -> dict[str, RemoteStore]:
    """The RemoteStores this process made for repo, by remote name: a filter process serves
    every file of one git command, and each file's download then reuses the endpoint, the
    credentials and the kept-alive connections of the files before it."""
    return _CLIENTS.setdefault(str(repo.git_dir), {})


def search_all_remotes(repo: Repo) -> bool:
    """Whether objects the default remote lacks are looked for on the other remotes: yes unless
    `theta-like.searchAllRemotes` (or git-lfs's `lfs.remote.searchAll`) is false. A merge of a
    colleague's fork needs it: the fork's objects are on the fork, not on origin."""
    lfs = repo.config_bool("lfs.remote.searchAll", default=True)
    return repo.config_bool("theta-like.searchAllRemotes", default=lfs)


def _download(
    repo: Repo, remote: str | None, what: str, missing: list[tuple[str, int]], clients: dict[str, RemoteStore]
) -> int:
    """Download missing objects from `remote` (given) or the default remote; what the default
    remote does not have is then asked of the other remotes in turn (search_all_remotes).
    `clients` keeps the RemoteStore of each remote asked, for the caller's next call."""
    from git_theta_like.lfs.transfer import RemoteStore

    first = remote or default_remote(repo)
    try:
        if first not in clients:
            clients[first] = _remote_store(repo, remote, what, missing)
        fetched: int = clients[first].download(missing)
        return fetched
    except RemoteObjectMissingError as e:
        if remote is not None or not search_all_remotes(repo):
            raise
        first_error = e
    store = store_of(repo)
    tried = [first]
    fetched = 0
    names: list[str] = [n for n in repo.git.remotes.names() if n]
    for name in names:
        left = [(o, s) for o, s in missing if not store.has(o)]
        if not left:
            return fetched
        if name == first:
            continue
        tried.append(name)
        try:
            if name not in clients:
                clients[name] = RemoteStore(repo, name)
            fetched += clients[name].download(left)
        except RemoteError:  # missing there too, or unreachable: the next remote may have them
            continue
    still = [o for o, _ in missing if not store.has(o)]
    if not still:
        return fetched
    if len(tried) == 1:
        raise first_error
    raise RemoteObjectMissingError(f"{first_error} (nor on {', '.join(tried[1:])})", still) from None


def _remote_store(repo: Repo, remote: str | None, what: str, missing: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    from git_theta_like.lfs.transfer import RemoteStore

    name = remote or default_remote(repo)
    if repo.config_get(f"remote.{name}.url") is None and repo.config_get("lfs.url") is None:
        oids = ", ".join(o for o, _ in missing[:3])
        raise ObjectMissingError(
            f"{what + ': ' if what else ''}{len(missing)} object(s) are not in the local store "
            f"({oids}{', ...' if len(missing) > 3 else ''}) "
            f"and there is no remote {name!r} to fetch them from"
        )
    return RemoteStore(repo, name)


def manifest_objects(
    m: Manifest, include: list[str] | None = None, exclude: list[str] | None = None
) -> list[tuple[str, int]]:
    """The skeleton and the tensors selected by name globs, with their direct delta bases."""
    out = needed(m.skeleton)
    for t in m.tensors:
        if include and not any(fnmatch.fnmatchcase(t.name, g) for g in include):
            continue
        if exclude and any(fnmatch.fnmatchcase(t.name, g) for g in exclude):
            continue
        out += needed(t.obj)
    return out


@dataclass
class FetchResult:
    files: int
    objects: int
    downloaded: int
    paths: list[str] = field(default_factory=list)  # the checkpoint files fetched for


def fetch_paths(
    repo: Repo, include: list[str] | None, exclude: list[str] | None
) -> tuple[list[str], list[str]]:
    """The files fetch and pull select (include, exclude path patterns), as git-lfs selects
    them: the command line's patterns where given (each value comma-separated; an empty one
    clears the setting), else `lfs.fetchinclude` / `lfs.fetchexclude` (git config, then
    `.lfsconfig`)."""
    from git_theta_like.lfs.endpoint import lfs_setting

    def patterns(given: list[str] | None, key: str) -> list[str]:
        values = given if given is not None else [lfs_setting(repo, key) or ""]
        return [p.strip() for v in values for p in v.split(",") if p.strip()]

    return patterns(include, "lfs.fetchinclude"), patterns(exclude, "lfs.fetchexclude")


def path_selected(path: str, include: list[str], exclude: list[str]) -> bool:
    """Whether path passes the include and exclude patterns (gitignore rules: attributes.selects)."""
    from git_theta_like.gitio.attributes import selects

    if include and not any(selects(p, path) for p in include):
        return False
    return not any(selects(p, path) for p in exclude)


def fetch(
    repo: Repo,
    remote: str | None,
    revs: list[str],
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    paths: list[str] | None = None,
    every_ref: bool = False,
    exclude_paths: list[str] | None = None,
) -> FetchResult:
    """Prefetch the objects that checking out `revs` needs (optionally only some tensors, by
    name: include / exclude); with every_ref, those of every commit reachable from any ref (git
    lfs fetch --all). The files are those `paths` and `exclude_paths` select, or when they are
    None, `lfs.fetchinclude` and `lfs.fetchexclude` (fetch_paths); every_ref ignores those
    settings, as git-lfs does."""
    import pygit2

    from git_theta_like.gitio.scan import reachable_manifests, tracked_files

    if every_ref:
        path_in, path_out = list(paths or []), list(exclude_paths or [])
    else:
        path_in, path_out = fetch_paths(repo, paths, exclude_paths)
    objs: dict[str, int] = {}
    chosen: set[str] = set()
    files = 0
    if every_ref:
        for found in reachable_manifests(repo, reflogs=False).values():
            if found.manifest is None:
                continue
            used = [p for _, p in found.uses if path_selected(p, path_in, path_out)]
            if not used:
                continue
            files += 1
            chosen.update(used)
            objs.update(manifest_objects(found.manifest, include, exclude))
    for rev in revs or ([] if every_ref else ["HEAD"]):
        try:
            repo.git.revparse_single(rev)
        except (KeyError, ValueError, pygit2.GitError):
            raise RevisionError(f"bad revision '{rev}'") from None
        for f in tracked_files(repo, rev):
            if f.manifest is None or not path_selected(f.path, path_in, path_out):
                continue
            files += 1
            chosen.add(f.path)
            objs.update(manifest_objects(f.manifest, include, exclude))
    downloaded = ensure_local(repo, objs.items(), remote)
    return FetchResult(files, len(objs), downloaded, sorted(chosen))


# git-lfs's reading of a boolean environment variable (config.Bool): these are true, anything
# else (0, false, no, off, f, or any other word) is false; unset or empty is the default
_LFS_TRUE = frozenset({"true", "1", "on", "yes", "t"})


def skip_smudge(repo: Repo) -> bool:
    """Whether checkout leaves manifests (and git-lfs pointers) in the working tree:
    GIT_THETA_LIKE_SKIP_SMUDGE when set (any value but 0/false/no), else GIT_LFS_SKIP_SMUDGE read as
    git-lfs reads it (so `GIT_LFS_SKIP_SMUDGE=1 git clone` skips both), else theta-like.skipSmudge."""
    env = os.environ.get("GIT_THETA_LIKE_SKIP_SMUDGE", "")
    if env:
        return env.lower() not in ("0", "false", "no")
    lfs = os.environ.get("GIT_LFS_SKIP_SMUDGE", "")
    if lfs:
        return lfs.lower() in _LFS_TRUE
    return repo.config_bool("theta-like.skipSmudge", default=False)


def warn(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)
