"""A sharded Hugging Face checkpoint (shards + `model.safetensors.index.json`) diffed as one
model, listed under its index's path: tensors matched by name across all shards, each with the
shard holding it on each side; same content in another shard is `moved`. A side is folded only
when its index parses and names only tracked checkpoints there; otherwise file by file, with a
note."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

from git_theta_like.gitio.scan import resolve_commit, tree_files
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry
from git_theta_like.semdiff.compare import diff_file, oids, ordered
from git_theta_like.semdiff.model import MOVED, FileDiff, Match, PathFilter, Side, TensorDiff, TensorSide
from git_theta_like.store.local import LocalStore
from git_theta_like.store.reader import Fetch


@dataclass
class ShardedSide:
    """A sharded model's index (`model.safetensors.index.json`) on one side of a diff."""

    index_path: str
    data: bytes  # the index file
    shards: list[str]  # the shard files its weight_map names (relative to the repository), sorted
    metadata: Any = None  # the index's "metadata"
    problem: str | None = None  # why this side cannot be shown as one model


def sharded_side(index_path: str, data: bytes, tracked: Match, why: Callable[[str], str]) -> ShardedSide:
    """What an index says, and whether every shard it names is a tracked checkpoint on its side
    (`tracked`); `why(shard)` says what is wrong with one that is not ("missing at HEAD")."""
    from git_theta_like.formats.sharded import read_index

    try:
        doc = json.loads(data)
        shards = sorted(set(read_index(data, index_path).values()))
    except (ValueError, TypeError, AttributeError) as e:
        return ShardedSide(
            index_path, data, [], problem=f"{index_path} {why('')} is not a readable index ({e})"
        )
    side = ShardedSide(index_path, data, shards, doc.get("metadata") if isinstance(doc, dict) else None)
    bad = [s for s in shards if not tracked(s)]
    if not shards:
        side.problem = f"{index_path} {why('')} names no shard"
    elif bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        side.problem = "; ".join(f"shard {s} is {why(s)}" for s in bad[:3]) + more
    return side


def fold_models(
    old: dict[str, ShardedSide], new: dict[str, ShardedSide]
) -> tuple[list[tuple[str, ShardedSide | None, ShardedSide | None]], dict[str, str]]:
    """The models shown as one: (index path, old side, new side), each side None where that side
    has no such index. A model that cannot be folded on a side where it exists (index unreadable,
    a shard missing or untracked) is shown file by file on both sides: the notes (shard path ->
    why) say so on its shard files."""
    folded: list[tuple[str, ShardedSide | None, ShardedSide | None]] = []
    notes: dict[str, str] = {}
    for path in sorted(set(old) | set(new)):
        sa, sb = old.get(path), new.get(path)
        problems = [s.problem for s in (sa, sb) if s is not None and s.problem]
        if not problems:
            folded.append((path, sa, sb))
            continue
        note = f"shard of {path}, shown file by file: " + "; ".join(problems)
        for s in (sa, sb):
            for shard in s.shards if s is not None else []:
                notes.setdefault(shard, note)
    return folded, notes


def shard_files(
    folded: list[tuple[str, ShardedSide | None, ShardedSide | None]],
) -> tuple[set[str], set[str]]:
    """The shard files, per side, that folded models take in."""
    return (
        {s for _, sa, _ in folded if sa is not None for s in sa.shards},
        {s for _, _, sb in folded if sb is not None for s in sb.shards},
    )


def same_model(old: ShardedSide | None, new: ShardedSide | None, same_shard: Match) -> bool:
    """Both sides have the model, with the same index and the same manifest for every shard."""
    if old is None or new is None or old.data != new.data or old.shards != new.shards:
        return False
    return all(same_shard(s) for s in old.shards)


def widened(match: PathFilter, *indexes: dict[str, bytes]) -> Match:
    """match, plus the shard files of the selected indexes (a filter naming only the index
    still needs its shards' manifests)."""
    from git_theta_like.formats.sharded import read_index

    shards: set[str] = set()
    for idx in indexes:
        for path, data in idx.items():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                shards.update(read_index(data, path).values())
    if not shards:
        return match
    return lambda p: match(p) or p in shards


def side_indexes(repo: Any, side: Side, match: Match) -> tuple[dict[str, bytes], Callable[[str], str]]:
    """The sharded-model indexes on one side that match (path -> content: from the tree of a
    revision, the git index, or the working-tree file of a staged index), and a function saying
    why a shard is not a tracked checkpoint there."""
    from git_theta_like.formats.sharded import is_index

    out: dict[str, bytes] = {}
    if side.kind == "rev":
        assert side.rev is not None
        present = tree_files(resolve_commit(repo, side.rev).tree)
        for p in sorted(present):
            if is_index(p) and match(p) and (data := repo.rev_blob(side.rev, p)) is not None:
                out[p] = data
        return out, absence_reason(f"at {side.rev}", present)
    index = repo.git.index
    index.read(False)
    staged = {e.path for e in index}
    for p in sorted(staged):
        if not (is_index(p) and match(p)):
            continue
        if side.kind == "index":
            data = repo.index_blob(p)
        else:
            full = repo.workdir / p if repo.workdir is not None else None
            data = full.read_bytes() if full is not None and full.is_file() else None
        if data is not None:
            out[p] = data
    if side.kind == "index":
        return out, absence_reason("in the index", staged)
    workdir = repo.workdir
    in_worktree = absence_reason("in the working tree", staged)

    def why(s: str) -> str:
        on_disk = bool(s) and workdir is not None and (workdir / s).is_file()
        if s and not on_disk:
            return "missing in the working tree"
        if s and s not in staged:
            return "untracked in the working tree"
        return in_worktree(s)

    return out, why


def absence_reason(where: str, present: Container[str]) -> Callable[[str], str]:
    """why(shard): "missing at REV" or "not a tracked checkpoint at REV" (a shard that is there
    but is no manifest); why(""): "at REV"."""

    def why(s: str) -> str:
        if not s:
            return where
        return f"{'not a tracked checkpoint' if s in present else 'missing'} {where}"

    return why


def _combined(side: ShardedSide, manifests: Mapping[str, Manifest]) -> tuple[Manifest, dict[str, str]]:
    """One manifest holding the tensors of every shard (a name held twice: the first shard's),
    and tensor name -> shard. Its skeleton is a stand-in: shards' skeletons are compared one by
    one (diff_sharded)."""
    tensors: list[TensorEntry] = []
    where: dict[str, str] = {}
    shards = [manifests[s] for s in side.shards]
    for path, m in zip(side.shards, shards, strict=True):
        for t in m.tensors:
            if t.name not in where:
                where[t.name] = path
                tensors.append(t)
    fmt = "+".join(sorted({m.format for m in shards}))
    stand_in = ObjectRef("0" * 64, "0" * 64, 0, "raw")
    return Manifest(fmt, sum(m.size for m in shards), 0, stand_in, tensors), where


def diff_sharded(
    store: LocalStore,
    path: str,
    old: ShardedSide | None,
    old_manifests: Mapping[str, Manifest],
    new: ShardedSide | None,
    new_manifests: Mapping[str, Manifest],
    *,
    stats: bool = True,
    threshold: float | None = None,
    fetch: Fetch | None = None,
) -> FileDiff:
    """The diff of a sharded model (`path`: its index) as one checkpoint: tensors are matched by
    name across all shards (diff_manifests on the shards combined). Each tensor gets the shard
    holding it on each side; one with the same content in another shard is `moved`.
    `stored_bytes` counts the objects (skeletons included) of the new side's shards that the old
    side's do not reference; `header_changed` says that the index's metadata changed, or the
    skeleton of a shard present on both sides with the same tensors."""
    co, where_old = _combined(old, old_manifests) if old is not None else (None, {})
    cn, where_new = _combined(new, new_manifests) if new is not None else (None, {})
    fd = diff_file(store, path, co, cn, stats=stats, threshold=threshold, fetch=fetch)
    if old is not None and fd.old is not None:
        fd.old.shards, fd.old_shards = len(old.shards), list(old.shards)
    if new is not None and fd.new is not None:
        fd.new.shards, fd.new_shards = len(new.shards), list(new.shards)
    old_shards = [old_manifests[s] for s in old.shards] if old is not None else []
    new_shards = [new_manifests[s] for s in new.shards] if new is not None else []
    old_oids = {o: n for m in old_shards for o, n in oids(m).items()}
    new_oids = {o: n for m in new_shards for o, n in oids(m).items()}
    fd.stored_bytes = sum(n for o, n in new_oids.items() if o not in old_oids)
    if old is not None and new is not None:
        fd.header_changed = old.metadata != new.metadata or any(
            [t.name for t in old_manifests[s].tensors] == [t.name for t in new_manifests[s].tensors]
            and old_manifests[s].skeleton.raw != new_manifests[s].skeleton.raw
            for s in set(old.shards) & set(new.shards)
        )
    for e in fd.tensors:
        e.old_shard = where_old.get(e.old_name or e.name) if e.old is not None else None
        e.new_shard = where_new.get(e.name) if e.new is not None else None
    if co is not None and cn is not None:
        old_t = {t.name: t for t in co.tensors}
        new_t = {t.name: t for t in cn.tensors}
        moved = [n for n in fd.unchanged_names if where_old[n] != where_new[n]]
        fd.tensors = ordered(
            fd.tensors
            + [
                TensorDiff(
                    n,
                    MOVED,
                    TensorSide.of(old_t[n]),
                    TensorSide.of(new_t[n]),
                    old_shard=where_old[n],
                    new_shard=where_new[n],
                )
                for n in moved
            ]
        )
        gone = set(moved)
        fd.unchanged_names = [n for n in fd.unchanged_names if n not in gone]
        fd.unchanged -= len(moved)
    return fd
