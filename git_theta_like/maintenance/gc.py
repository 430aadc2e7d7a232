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
from git_theta_like.errors import StoreBusyError, ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import reachable_manifests, worktrees
from git_theta_like.lfs import sync
from git_theta_like.store import store_of
from git_theta_like.store.local import LocalStore
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


def gc(
    repo: Repo, dry_run: bool = False, grace: float = DEFAULT_GRACE, wait: float = DEFAULT_WAIT
) -> GcReport:
    """Delete the objects no root needs (dry_run: only count them). Waits up to `wait` seconds
    for the git commands writing objects (StoreBusyError after that; nothing deleted)."""
    store = store_of(repo)
    if dry_run:
        return _collect(repo, store, True, grace)
    deadline = time.monotonic() + wait
    said = False
    while True:
        with store.lock.exclusive(max(0.0, deadline - time.monotonic())):
            busy = index_locks(repo)
            if not busy:
                return _collect(repo, store, False, grace)
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


def _collect(repo: Repo, store: LocalStore, dry_run: bool, grace: float) -> GcReport:
    keep: dict[str, int] = {}
    invalid: list[str] = []
    for fm in reachable_manifests(repo).values():
        if fm.manifest is None:
            where = ", ".join(f"{w} {p}" for w, p in fm.uses[:3])
            named = named_object_ids(repo, fm.blob)
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
    for oid in sorted(store.all_oids() - keep_set):
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
        deleted += 1
        freed += st.st_size
        if not dry_run:
            store.delete(oid)
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
