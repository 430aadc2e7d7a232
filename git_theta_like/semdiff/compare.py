"""Semantic diffs of checkpoints: which tensors changed, and how.

Everything is computed from two manifests and the objects they reference, never by smudging the
checkpoints: a tensor whose raw hash is the same on both sides costs nothing; for a changed
tensor both raw versions are read from the store (each object once, deltas resolved against the
other side when it is their base) and compared in float64, chunk by chunk.

Per changed tensor (see docs/diff.md for the exact definitions):
- `fraction_changed`: entries whose value changed (bit patterns for the same dtype);
- `l2_delta` ||new - old||, `relative_change` ||new - old|| / ||old||, `max_abs_delta`,
  `cosine` (old, new), over the entries that are finite on both sides;
- the update kind: `sparse` (at most SPARSE_MAX of the entries changed), `lowrank` (a 2-D delta
  of rank r: read from a `lowrank` object's header when it is a delta of the old version, else
  found by a randomized range finder), `dense` otherwise.

Tensors present on one side only are added/removed, or renamed when a removed and an added
tensor hold the same content, or have the same dtype and shape and one name is a dotted suffix
of the other (`x.weight` -> `bert.x.weight`, the rule clean uses to find a delta parent).

A sharded Hugging Face checkpoint (shards + `model.safetensors.index.json`) is diffed as one model
(diff_sharded), listed under its index's path: tensors are matched by name across all shards, each
gets the shard holding it on each side (`old_shard`, `new_shard`), and one whose content is the
same but whose shard changed is `moved`. A side is folded only when its index parses and names
only tracked checkpoints there; otherwise the model is shown file by file, with a note.

The repository-level functions resolve what `git theta-like diff` compares (revisions, the index
or the working tree) and what `git theta-like log` walks. git's diff driver (diff_driver.py) is
called per file, so `git diff` shows the shard files one by one.
"""

from __future__ import annotations

from git_theta_like.codecs import lowrank
from git_theta_like.errors import ObjectMissingError
from git_theta_like.manifest import Manifest, TensorEntry
from git_theta_like.semdiff.model import (
    ADDED,
    MODIFIED,
    REMOVED,
    RENAMED,
    FileDiff,
    FileSide,
    TensorDiff,
    TensorSide,
)
from git_theta_like.semdiff.stats import infer_kind, one_blas_thread, tensor_stats
from git_theta_like.store.local import LocalStore
from git_theta_like.store.reader import Fetch, ObjectReader

# ============================================================================ data model


# ============================================================================ statistics


# ============================================================================ reading objects


# ============================================================================ diffing two manifests


def _suffix_related(a: str, b: str) -> bool:
    return a.endswith("." + b) or b.endswith("." + a)


def match_renames(
    removed: list[TensorEntry], added: list[TensorEntry]
) -> list[tuple[TensorEntry, TensorEntry]]:
    """(old, new) pairs: same content first, then the same dtype and shape with one name a dotted
    suffix of the other, where that pairing is unambiguous."""
    pairs: list[tuple[TensorEntry, TensorEntry]] = []
    by_raw: dict[str, list[TensorEntry]] = {}
    for t in removed:
        by_raw.setdefault(t.obj.raw, []).append(t)
    left_added = []
    for t in added:
        cands = by_raw.get(t.obj.raw)
        if cands:
            best = next((c for c in cands if _suffix_related(c.name, t.name)), cands[0])
            cands.remove(best)
            pairs.append((best, t))
        else:
            left_added.append(t)
    used = {id(o) for o, _ in pairs}
    left_removed = [t for t in removed if id(t) not in used]
    for t in left_added:
        cands = [
            o
            for o in left_removed
            if (o.dtype, o.shape) == (t.dtype, t.shape) and _suffix_related(o.name, t.name)
        ]
        if len(cands) != 1:
            continue
        rivals = [
            a
            for a in left_added
            if (a.dtype, a.shape) == (t.dtype, t.shape) and _suffix_related(cands[0].name, a.name)
        ]
        if len(rivals) == 1:
            pairs.append((cands[0], t))
            left_removed.remove(cands[0])
    return pairs


def _manifest_sizes(*ms: Manifest | None) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for m in ms:
        if m is not None:
            for _, ref in m.objects():
                sizes[ref.oid] = ref.stored
    return sizes


def oids(m: Manifest | None) -> dict[str, int]:
    if m is None:
        return {}
    return {ref.oid: ref.stored for _, ref in m.objects()}


def diff_manifests(
    old: Manifest | None,
    new: Manifest | None,
    store: LocalStore,
    path: str = "",
    *,
    stats: bool = True,
    threshold: float | None = None,
    fetch: Fetch | None = None,
) -> FileDiff:
    """The diff of one file. With `stats`, reads the objects of the changed tensors (only)."""
    fd = FileDiff(
        path,
        FileSide.of(old) if old is not None else None,
        FileSide.of(new) if new is not None else None,
        stats_computed=stats,
        threshold=threshold,
    )
    old_oids, new_oids = oids(old), oids(new)
    fd.stored_bytes = sum(s for o, s in new_oids.items() if o not in old_oids)
    if old is not None and new is not None:
        fd.header_changed = old.skeleton.raw != new.skeleton.raw
    old_t = {t.name: t for t in old.tensors} if old is not None else {}
    new_t = {t.name: t for t in new.tensors} if new is not None else {}
    pairs: list[tuple[TensorEntry, TensorEntry, str]] = []
    for name, nt in new_t.items():
        ot = old_t.get(name)
        if ot is None:
            continue
        if ot.obj.raw == nt.obj.raw and (ot.dtype, ot.shape) == (nt.dtype, nt.shape):
            fd.unchanged += 1
            fd.unchanged_names.append(name)
        else:
            pairs.append((ot, nt, MODIFIED))
    removed = [t for n, t in old_t.items() if n not in new_t]
    added = [t for n, t in new_t.items() if n not in old_t]
    renames = match_renames(removed, added)
    pairs += [(o, n, RENAMED) for o, n in renames]
    gone = {id(o) for o, _ in renames} | {id(n) for _, n in renames}
    entries: list[TensorDiff] = []
    entries += [TensorDiff(t.name, REMOVED, TensorSide.of(t), None) for t in removed if id(t) not in gone]
    entries += [TensorDiff(t.name, ADDED, None, TensorSide.of(t)) for t in added if id(t) not in gone]
    for ot, nt, status in pairs:
        entries.append(
            TensorDiff(
                nt.name, status, TensorSide.of(ot), TensorSide.of(nt), ot.name if status == RENAMED else None
            )
        )
    if stats:
        reader = ObjectReader(store, _manifest_sizes(old, new), fetch)
        todo = [e for e in entries if e.status in (MODIFIED, RENAMED) and e.content_changed]
        reader.ensure(
            (s.oid, s.stored, f"tensor {n!r}")
            for e in todo
            for s, n in ((e.old, e.old_name or e.name), (e.new, e.name))
            if s is not None
        )
        with one_blas_thread():
            for e in todo:
                _compute(e, reader, threshold)
                reader.clear()
    fd.tensors = ordered(entries)
    return fd


_GROUPS = ["modified", "reshaped", "renamed", "moved", "added", "removed"]


def ordered(entries: list[TensorDiff]) -> list[TensorDiff]:
    """By group, biggest change first within a group."""
    return sorted(entries, key=lambda e: (_GROUPS.index(e.group), *e.sort_key()))


def _compute(e: TensorDiff, reader: ObjectReader, threshold: float | None) -> None:
    assert e.old is not None and e.new is not None
    old_raw, _ = reader.raw(e.old.oid, f"tensor {e.old_name or e.name!r} (old)", e.old.raw, e.old.length)
    new_raw, header = reader.raw(e.new.oid, f"tensor {e.name!r} (new)", e.new.raw, e.new.length)
    st = tensor_stats(old_raw, e.old.dtype, new_raw, e.new.dtype)
    if st is None:
        return
    e.stats = st
    codec_rank = None
    if header.codec == lowrank.NAME and header.base == e.old.oid:
        rank = header.params.get("rank")
        codec_rank = int(rank) if isinstance(rank, int) else None
    e.kind = infer_kind(st, old_raw, e.old, new_raw, e.new, codec_rank)
    if threshold is not None and st.relative_change is not None and not (e.shape_changed or e.dtype_changed):
        e.below_threshold = st.relative_change < threshold


# ============================================================================ repository level


def diff_file(
    store: LocalStore,
    path: str,
    old: Manifest | None,
    new: Manifest | None,
    *,
    stats: bool = True,
    threshold: float | None = None,
    fetch: Fetch | None = None,
) -> FileDiff:
    try:
        return diff_manifests(old, new, store, path, stats=stats, threshold=threshold, fetch=fetch)
    except ObjectMissingError as e:
        raise ObjectMissingError(f"{path}: {e}") from None


# ============================================================================ sharded models


# ============================================================================ log


# ============================================================================ small helpers
