"""`git theta-like gc`: delete local objects that nothing reachable needs.

Kept: every object of every manifest reachable from any ref (every namespace: branches, tags,
remotes, notes, stash, replace, refs/original, ...), any reflog entry, and every worktree's
HEAD, index and reflog (gitio/scan.py's roots), and, transitively, the delta bases of those
objects.

Safe against git commands running meanwhile: gc holds the store's lock exclusively for its scan
and its deletes (store/lock.py); every writer (a clean in flight, for the life of its git
command; a download; any object write) holds it shared, so gc waits for them, up to `wait`
seconds, then stops with an error and deletes nothing. gc also waits while a git command holds
any worktree's `index.lock` (a merge driver or a one-shot clean has written objects its git
command has not put in the index yet). Objects written in the last `--prune` seconds are kept
too, a second line of defence. Files in the LFS store that are not ours (git-lfs's own objects)
are never touched: `git lfs prune` is the tool for those.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from git_theta_like.codecs.container import MAGIC, TRAILER
from git_theta_like.display import printable
from git_theta_like.errors import SharedStorageError, StoreBusyError, ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import reachable_manifests, worktrees
from git_theta_like.lfs import sync
from git_theta_like.progress import Progress
from git_theta_like.store import store_of
from git_theta_like.store.local import USERS_FILE, LocalStore
from git_theta_like.store.lock import BUSY

DEFAULT_GRACE = 3600.0
DEFAULT_WAIT = 30.0  # how long gc waits for the git commands writing objects (seconds)
_OID_WORD = re.compile(rb"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


@dataclass
class GcReport:
    kept: int
    deleted: int
    freed: int
    skipped_foreign: int
    tmp_removed: int
    # invalid manifests gc went past, each a message: every object id their text names was kept
    invalid: list[str] = field(default_factory=list)


def _is_ours(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-TRAILER.size, os.SEEK_END)
            return f.read(TRAILER.size)[-4:] == MAGIC
    except OSError:
        return False


def index_locks(repo: Repo) -> list[Path]:
    """The `index.lock` files of the worktrees where a git command is updating the index now."""
    return [wt.git_dir / "index.lock" for wt in worktrees(repo) if (wt.git_dir / "index.lock").exists()]


def sharing_repos(repo: Repo, store: LocalStore, shared_storage: bool) -> list[Repo]:
    """The repositories whose roots gc must keep: this one and every other recorded in the
    store's `theta-like-repos` file (store/local.py register_user) that still uses this store.
    Others found without `shared_storage`: SharedStorageError, as when one cannot be opened."""
    store.register_user(repo.common_dir)
    me = repo.common_dir.resolve()
    root = store.root.resolve()
    others: list[Repo] = []
    for recorded in store.users_recorded():
        path = Path(recorded)
        if path == me or not path.is_dir():
            continue  # this one, or a repository deleted since
        try:
            other = Repo(path)
            uses_it = other.lfs_dir.resolve() == root
        except ThetaLikeError:
            uses_it = True  # cannot tell: treat it as a user
            other = None
        if not uses_it:
            continue  # it moved to another store since
        if not shared_storage:
            names = ", ".join(printable(u) for u in store.users_recorded() if Path(u) != me)
            raise SharedStorageError(
                f"the object store {printable(str(store.root))} is shared with other repositories "
                f"({names}; lfs.storage): gc here would delete their objects. Run "
                "git theta-like gc --shared-storage to keep what every one of them needs; "
                "nothing was deleted"
            )
        if other is None:
            raise SharedStorageError(
                f"the object store {printable(str(store.root))} is shared with {printable(recorded)}, "
                "which cannot be opened as a repository: its roots are unknown, so gc deletes "
                f"nothing (remove its line from {printable(str(store.root / USERS_FILE))} if it "
                "no longer uses this store)"
            )
        others.append(other)
    return [repo, *others]


def gc(
    repo: Repo,
    dry_run: bool = False,
    grace: float = DEFAULT_GRACE,
    wait: float = DEFAULT_WAIT,
    shared_storage: bool = False,
) -> GcReport:
    """Delete the objects no root needs (dry_run: only count them). Waits up to `wait` seconds
    for the git commands writing objects (StoreBusyError after that; nothing deleted). A store
    other repositories use too (lfs.storage) needs `shared_storage`: then the roots of every
    one of them are kept (SharedStorageError without it)."""
    store = store_of(repo)
    repos = sharing_repos(repo, store, shared_storage)
    if dry_run:
        return _collect(repos, store, True, grace)
    deadline = time.monotonic() + wait
    said = False
    while True:
        with store.lock.exclusive(max(0.0, deadline - time.monotonic())):
            busy = [lock for r in repos for lock in index_locks(r)]
            if not busy:
                return _collect(repos, store, False, grace)
        if not said and wait > 0:
            said = True
            print(
                f"git-theta-like: waiting for the git command holding {busy[0]}", file=sys.stderr, flush=True
            )
        if time.monotonic() >= deadline:
            raise StoreBusyError(
                f"{BUSY} (a git command holds {busy[0]}; if none is running, remove that file); "
                "nothing was deleted"
            )
        time.sleep(0.1)


def _collect(repos: list[Repo], store: LocalStore, dry_run: bool, grace: float) -> GcReport:
    keep: dict[str, int] = {}
    invalid: list[str] = []
    found = [(r, fm) for r in repos for fm in reachable_manifests(r).values()]
    repo = repos[0]
    for owner, fm in found:
        if fm.manifest is None:
            where = ", ".join(f"{w} {p}" for w, p in fm.uses[:3])
            named = named_object_ids(owner, fm.blob)
            keep.update(dict.fromkeys(named, 0))
            invalid.append(
                f"manifest {fm.blob} ({where}) is invalid ({fm.error}); kept the {len(named)} "
                "object(s) its text names"
            )
            continue
        for _, ref in fm.manifest.objects():
            for oid, size in sync.needed(ref):
                keep[oid] = size
    keep_set = {o for o, _ in sync.chain_closure(repo, keep.items())}
    now = time.time()
    deleted = freed = foreign = 0
    candidates = sorted(store.all_oids() - keep_set)
    # unreferenced objects looked at of N, bytes freed
    label = "Pruning objects" + (" (dry run)" if dry_run else "")
    progress = Progress(label, total=len(candidates), delay=1.0)
    for oid in candidates:
        progress.step()
        path = store.path(oid)
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if not _is_ours(str(path)):
            foreign += 1
            continue
        if now - st.st_mtime < grace:
            continue
        # re-check: a write or a clean that found this object since the scan freshened it
        if not dry_run and not store.delete_if_older(oid, time.time() - grace):
            continue
        deleted += 1
        freed += st.st_size
        progress.advance(st.st_size)
    progress.finish()
    tmp_removed = 0
    if store.tmp.is_dir():
        for p in store.tmp.iterdir():
            try:
                if p.name.startswith("gtl-") and now - p.stat().st_mtime >= grace:
                    tmp_removed += 1
                    if not dry_run:
                        p.unlink()
            except FileNotFoundError:
                pass
    return GcReport(len(keep_set), deleted, freed, foreign, tmp_removed, invalid)


def named_object_ids(repo: Repo, blob: str) -> set[str]:
    """Every 64-hex-digit word in a blob: all an invalid manifest could need, so gc keeps them."""
    obj = repo.git.get(blob)
    data = getattr(obj, "data", None)
    if not isinstance(data, bytes):
        raise ThetaLikeError(f"gc stopped: cannot read the manifest blob {blob}; nothing was deleted")
    return {m.decode() for m in _OID_WORD.findall(data)}
