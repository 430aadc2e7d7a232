"""`git theta-like gc`: delete local objects that nothing reachable needs.

Kept: every object of every manifest reachable from a ref, a reflog entry, the stash or the
index, and, transitively, the delta bases of those objects. Objects written in the last
`--grace` seconds are kept too (a `git add` running right now has written objects that no index
entry names yet). Files in the LFS store that are not ours (git-lfs's own objects) are never
touched: `git lfs prune` is the tool for those.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from git_theta_like.codecs.container import MAGIC, TRAILER
from git_theta_like.errors import ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import reachable_manifests
from git_theta_like.lfs import sync
from git_theta_like.store import store_of

DEFAULT_GRACE = 3600.0


@dataclass
class GcReport:
    kept: int
    deleted: int
    freed: int
    skipped_foreign: int
    tmp_removed: int


def _is_ours(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-TRAILER.size, os.SEEK_END)
            return f.read(TRAILER.size)[-4:] == MAGIC
    except OSError:
        return False


def gc(repo: Repo, dry_run: bool = False, grace: float = DEFAULT_GRACE) -> GcReport:
    store = store_of(repo)
    keep: dict[str, int] = {}
    for fm in reachable_manifests(repo).values():
        if fm.manifest is None:
            where = ", ".join(f"{w} {p}" for w, p in fm.uses[:3])
            raise ThetaLikeError(
                f"gc stopped: the manifest {fm.blob} ({where}) is invalid ({fm.error}), so what it "
                "needs is unknown; nothing was deleted. Fix or remove it, then run gc again"
            )
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
    return GcReport(len(keep_set), deleted, freed, foreign, tmp_removed)
