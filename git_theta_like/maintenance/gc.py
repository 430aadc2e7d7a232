"""`git theta-like gc`: delete local objects that nothing reachable needs.

Kept: every object of every manifest reachable from a ref, a reflog entry, the stash or the
index, and, transitively, the delta bases of those objects. Objects written in the last
`--grace` seconds are kept too (a `git add` running right now has written objects that no index
entry names yet). Files in the LFS store that are not ours (git-lfs's own objects) are never
touched: `git lfs prune` is the tool for those.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field

from git_theta_like.codecs.container import MAGIC, TRAILER
from git_theta_like.errors import ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import reachable_manifests
from git_theta_like.lfs import sync
from git_theta_like.store import store_of

DEFAULT_GRACE = 3600.0
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


def gc(repo: Repo, dry_run: bool = False, grace: float = DEFAULT_GRACE) -> GcReport:
    store = store_of(repo)
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
