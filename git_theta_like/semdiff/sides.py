"""What `git theta-like diff` compares: two sides (a revision, the index or the working tree),
their manifests under a path filter, and the working-tree checkpoints cleaned as `git add` would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from git_theta_like.errors import ManifestError, ThetaLikeError
from git_theta_like.gitio.scan import resolve_commit
from git_theta_like.manifest import Manifest
from git_theta_like.semdiff.compare import diff_file
from git_theta_like.semdiff.model import DiffResult, Match, PathFilter, Side
from git_theta_like.semdiff.sharded import (
    diff_sharded,
    fold_models,
    same_model,
    shard_files,
    sharded_side,
    side_indexes,
    widened,
)
from git_theta_like.semdiff.whole import note as whole_note
from git_theta_like.semdiff.whole import tracked_version, whole_version
from git_theta_like.store import store_of
from git_theta_like.store.reader import Fetch


def resolve_sides(repo: Any, revs: list[str], cached: bool = False) -> tuple[Side, Side]:
    """git diff's rules: no revision = index vs working tree (`--cached`: HEAD vs index);
    A = A vs working tree (`--cached`: A vs index); A B, A..B = A vs B; A...B = merge base vs B."""
    if len(revs) == 1 and "..." in revs[0]:
        a, b = revs[0].split("...", 1)
        a_id = resolve_commit(repo, a or "HEAD").id
        b_id = resolve_commit(repo, b or "HEAD").id
        base = repo.git.merge_base(a_id, b_id)
        if base is None:
            raise ThetaLikeError(f"{revs[0]}: no merge base")
        return Side("rev", str(base)), Side("rev", b or "HEAD")
    if len(revs) == 1 and ".." in revs[0]:
        a, b = revs[0].split("..", 1)
        revs = [a or "HEAD", b or "HEAD"]
    for r in revs:
        resolve_commit(repo, r)
    if len(revs) > 2:
        raise ThetaLikeError("at most two revisions")
    if len(revs) == 2:
        if cached:
            raise ThetaLikeError("--cached compares a revision with the index: give at most one revision")
        return Side("rev", revs[0]), Side("rev", revs[1])
    if cached:
        return Side("rev", revs[0] if revs else "HEAD"), Side("index")
    if revs:
        return Side("rev", revs[0]), Side("worktree")
    return Side("index"), Side("worktree")


def is_revision(repo: Any, arg: str) -> bool:
    try:
        if "..." in arg or ".." in arg:
            a, _, b = arg.replace("...", "..").partition("..")
            return all(resolve_commit(repo, x) is not None for x in (a or "HEAD", b or "HEAD"))
        resolve_commit(repo, arg)
        return True
    except ThetaLikeError:
        return False


def _tracked_manifests(repo: Any, rev: str | None, match: Match) -> dict[str, Manifest]:
    """The manifests of tracked checkpoints at rev (None: the index) that match."""
    from git_theta_like.gitio.scan import tracked_files

    where = "in the index" if rev is None else f"at {rev}"
    out = {}
    for f in tracked_files(repo, rev, other=lambda p, d: tracked_version(repo, p, d)):
        if not match(f.path):
            continue
        if f.manifest is None:
            raise ManifestError(f"{f.path} {where}: {f.error}")
        out[f.path] = f.manifest
    return out


def _stat_dirty(repo: Any) -> set[str]:
    """Index entries whose working-tree file git's stat check says may have changed (or is gone)."""
    assert repo.workdir is not None
    p = subprocess.run(
        ["git", "diff-files", "--name-only", "-z", "--no-ext-diff"],
        cwd=repo.workdir,
        capture_output=True,
    )
    if p.returncode != 0:
        raise ThetaLikeError(f"git diff-files failed: {p.stderr.decode(errors='replace').strip()}")
    return {x for x in p.stdout.decode("utf-8", "surrogateescape").split("\0") if x}


def clean_file(repo: Any, path: Path, rel: str) -> Manifest:
    """The manifest of a checkpoint in the working tree: cleaned as `git add` would (objects are
    stored, as git-lfs does for `git diff`); its staged version is the delta parent. An empty file,
    or one whose staged git-lfs pointer clean keeps, is a file stored whole (semdiff/whole.py)."""
    from git_theta_like.filters import engine_for, staged_previous
    from git_theta_like.formats import ByteReader

    previous, pointer = staged_previous(repo, rel)
    with engine_for(repo) as engine, open(path, "rb") as f:
        data = engine.clean(ByteReader(f), previous, rel, lfs_pointer=pointer)
    version = whole_version(data)
    return version if version is not None else Manifest.from_bytes(data)


def _worktree_manifests(repo: Any, match: Match, staged: dict[str, Manifest]) -> dict[str, Manifest]:
    if repo.workdir is None:
        raise ThetaLikeError("comparing with the working tree needs a repository with one")
    dirty = _stat_dirty(repo)
    out: dict[str, Manifest] = {}
    for path, m in staged.items():
        if path not in dirty:
            out[path] = m
            continue
        full = repo.workdir / path
        if full.is_file():
            out[path] = clean_file(repo, full, path)
    return out


def side_manifests(repo: Any, side: Side, match: Match) -> dict[str, Manifest]:
    if side.kind == "rev":
        assert side.rev is not None
        return _tracked_manifests(repo, side.rev, match)
    staged = _tracked_manifests(repo, None, match)
    return staged if side.kind == "index" else _worktree_manifests(repo, match, staged)


def remote_fetcher(repo: Any) -> Fetch:
    """Downloads missing objects (and their delta bases) from the remote, as checkout would:
    theta-like.remote, else the branch's remote, else origin."""

    def fetch(oids: list[tuple[str, int]]) -> None:
        from git_theta_like.lfs import sync

        sync.ensure_local(repo, oids)

    return fetch


def diff_sides(
    repo: Any,
    old: Side,
    new: Side,
    paths: Iterable[str] = (),
    *,
    stats: bool = True,
    threshold: float | None = None,
    fetch: Fetch | None = None,
    cwd: Path | None = None,
) -> DiffResult:
    """The diff of the checkpoints selected by `paths` (all when empty) between two sides. A
    sharded model whose index is selected is one FileDiff (see diff_sharded); its shard files are
    then not listed on their own."""
    match = PathFilter(paths, repo.workdir, cwd)
    idx_a, why_a = side_indexes(repo, old, match)
    idx_b, why_b = side_indexes(repo, new, match)
    wide = widened(match, idx_a, idx_b)
    a = side_manifests(repo, old, wide)
    b = side_manifests(repo, new, wide)
    folded, notes = fold_models(
        {p: sharded_side(p, d, a.__contains__, why_a) for p, d in idx_a.items()},
        {p: sharded_side(p, d, b.__contains__, why_b) for p, d in idx_b.items()},
    )
    files = []
    for path, sa, sb in folded:
        if same_model(sa, sb, lambda s: a[s].to_bytes() == b[s].to_bytes()):
            continue
        fd = diff_sharded(store_of(repo), path, sa, a, sb, b, stats=stats, threshold=threshold, fetch=fetch)
        if fd.status != "unchanged" or fd.tensors:
            files.append(fd)
    in_a, in_b = shard_files(folded)
    for path in sorted((set(a) - in_a) | (set(b) - in_b)):
        ma = a.get(path) if path not in in_a else None
        mb = b.get(path) if path not in in_b else None
        if ma is not None and mb is not None and ma.to_bytes() == mb.to_bytes():
            continue
        fd = diff_file(store_of(repo), path, ma, mb, stats=stats, threshold=threshold, fetch=fetch)
        fd.note = fd.note or notes.get(path) or whole_note(ma, mb)
        if fd.status != "unchanged" or fd.tensors:
            files.append(fd)
    files.sort(key=lambda f: f.path)
    return DiffResult(old.label, new.label, files, threshold)
