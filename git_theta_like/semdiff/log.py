"""`git theta-like log`: the commits that changed tracked checkpoints, each with its per-file
diff against its first parent (stats optional)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pygit2

from git_theta_like.errors import ManifestError
from git_theta_like.gitio.scan import resolve_commit, tree_files
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.semdiff.compare import diff_file
from git_theta_like.semdiff.model import FileDiff, LogEntry, Match, PathFilter
from git_theta_like.semdiff.sharded import (
    absence_reason,
    diff_sharded,
    fold_models,
    same_model,
    shard_files,
    sharded_side,
    widened,
)
from git_theta_like.semdiff.whole import note as whole_note
from git_theta_like.semdiff.whole import tracked_version, whole_version
from git_theta_like.store import store_of
from git_theta_like.store.reader import Fetch


def iter_log(
    repo: Any,
    rev: str = "HEAD",
    paths: Iterable[str] = (),
    *,
    max_count: int | None = None,
    stats: bool = True,
    fetch: Fetch | None = None,
    cwd: Path | None = None,
) -> Iterator[LogEntry]:
    """Commits reachable from rev (newest first) that change a tracked checkpoint, each diffed
    against its first parent (a sharded model as one, as in diff_sides). `rev` may be a range
    A..B."""
    match = PathFilter(paths, repo.workdir, cwd)
    hide, sep, tip = rev.rpartition("..")
    walker = repo.git.walk(resolve_commit(repo, tip or "HEAD").id)
    walker.sort(pygit2.GIT_SORT_TOPOLOGICAL | pygit2.GIT_SORT_TIME)
    if sep:
        walker.hide(resolve_commit(repo, hide.rstrip(".") or "HEAD").id)
    shown = 0
    for commit in walker:
        if max_count is not None and shown >= max_count:
            return
        parent = commit.parents[0] if commit.parents else None
        files = _commit_files(repo, commit, parent, match, stats, fetch)
        if not files:
            continue
        shown += 1
        yield LogEntry(
            str(commit.id),
            [str(p) for p in commit.parent_ids],
            commit.author.name,
            commit.commit_time,
            commit.message.split("\n", 1)[0],
            files,
        )


def _commit_files(
    repo: Any, commit: Any, parent: Any, match: PathFilter, stats: bool, fetch: Fetch | None
) -> list[FileDiff]:
    """The checkpoints a commit changes against its parent (sharded models as one, as in
    diff_sides)."""
    new_at, old_at = str(commit.id)[:12], str(parent.id)[:12] if parent is not None else ""
    new_paths = tree_files(commit.tree)
    old_paths = tree_files(parent.tree) if parent is not None else {}
    idx_new = _tree_indexes(repo, new_paths, match)
    idx_old = _tree_indexes(repo, old_paths, match)
    wide = widened(match, {p: d for p, (_, d) in idx_old.items()}, {p: d for p, (_, d) in idx_new.items()})
    new = _tree_manifests(repo, new_paths, wide)
    old = _tree_manifests(repo, old_paths, wide)

    folded, notes = fold_models(
        {
            p: sharded_side(p, d, old.__contains__, absence_reason(f"at {old_at}", old_paths))
            for p, (_, d) in idx_old.items()
        },
        {
            p: sharded_side(p, d, new.__contains__, absence_reason(f"at {new_at}", new_paths))
            for p, (_, d) in idx_new.items()
        },
    )
    files = []
    for path, sa, sb in folded:
        if same_model(sa, sb, lambda s: old[s][0] == new[s][0]):
            continue  # same blobs
        ma = {s: m for s in (sa.shards if sa else []) if (m := _parse(s, old[s], old_at)) is not None}
        mb = {s: m for s in (sb.shards if sb else []) if (m := _parse(s, new[s], new_at)) is not None}
        fd = diff_sharded(store_of(repo), path, sa, ma, sb, mb, stats=stats, fetch=fetch)
        if fd.differs:
            files.append(fd)
    in_old, in_new = shard_files(folded)
    for path in sorted((set(old) - in_old) | (set(new) - in_new)):
        a = old.get(path) if path not in in_old else None
        b = new.get(path) if path not in in_new else None
        if a is not None and b is not None and a[0] == b[0]:
            continue  # same blob
        old_m, new_m = _parse(path, a, old_at), _parse(path, b, new_at)
        fd = diff_file(store_of(repo), path, old_m, new_m, stats=stats, fetch=fetch)
        fd.note = fd.note or notes.get(path) or whole_note(old_m, new_m)
        if fd.differs:
            files.append(fd)
    files.sort(key=lambda f: f.path)
    return files


def _parse(path: str, blob: tuple[str, bytes] | None, where: str) -> Manifest | None:
    if blob is None:
        return None
    if not is_manifest(blob[1]):
        return whole_version(blob[1])  # _tree_manifests let in only such versions
    try:
        return Manifest.from_bytes(blob[1])
    except ManifestError as e:
        raise ManifestError(f"{path} at {where}: {e}") from None


def _tree_indexes(repo: Any, paths: dict[str, Any], match: Match) -> dict[str, tuple[str, bytes]]:
    """path -> (blob id, content) for the sharded-model indexes among a tree's files that match."""
    from git_theta_like.formats.sharded import is_index

    out = {}
    for path, oid in paths.items():
        if is_index(path) and match(path):
            out[path] = (str(oid), repo.blob(oid) or b"")
    return out


def _tree_manifests(repo: Any, paths: dict[str, Any], match: Match) -> dict[str, tuple[str, bytes]]:
    """path -> (blob id, manifest bytes) for the manifests among a tree's files (_tree_paths), and
    the git-lfs pointers and empty files at tracked paths (versions stored whole, whole.py)."""
    out = {}
    for path, oid in paths.items():
        if not match(path):
            continue
        data = repo.blob(oid)  # through git cat-file in a partial clone
        if data is None:
            continue
        if is_manifest(data) or tracked_version(repo, path, data):
            out[path] = (str(oid), data)
    return out
