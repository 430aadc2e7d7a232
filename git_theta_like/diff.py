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

import contextlib
import fnmatch
import json
import math
import os
import subprocess
import sys
import types
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from git_theta_like import dtypes
from git_theta_like.codecs import delta as delta_codec
from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.errors import ManifestError, ObjectMissingError, ThetaLikeError
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry, is_manifest
from git_theta_like.store.local import LocalStore

SCHEMA = "git-theta-like/diff"
LOG_SCHEMA = "git-theta-like/log"
SCHEMA_VERSION = 1
WHOLE = "opaque"  # manifest format of a file stored whole (filters.WHOLE)

SPARSE_MAX = 0.10  # at most this fraction of entries changed: a sparse update
MAX_RANK = 64  # ranks above this are reported as dense
CHUNK = 1 << 22  # elements compared at a time (bounds the float64 working set)
MAX_CHAIN = 64

Buffer = bytes | bytearray | memoryview
Fetch = Callable[[list[tuple[str, int]]], None]

# added / removed / modified / renamed (content may also have changed) / moved (sharded models:
# same content, another shard)
ADDED, REMOVED, MODIFIED, RENAMED, MOVED = "added", "removed", "modified", "renamed", "moved"


# ============================================================================ data model


@dataclass(frozen=True)
class TensorSide:
    """One side of a tensor: what its manifest line says."""

    dtype: str
    shape: tuple[int, ...]
    raw: str
    oid: str
    stored: int
    codec: str
    length: int | None = None  # bytes of the raw tensor

    @classmethod
    def of(cls, t: TensorEntry) -> TensorSide:
        return cls(t.dtype, t.shape, t.obj.raw, t.obj.oid, t.obj.stored, t.obj.codec, t.length)

    @property
    def numel(self) -> int:
        return dtypes.numel(self.shape)


@dataclass
class TensorStats:
    """How a tensor changed. Norms cover the entries finite on both sides (see `nonfinite`)."""

    numel: int
    changed: int
    fraction_changed: float
    l2_delta: float | None = None
    l2_old: float | None = None
    l2_new: float | None = None
    relative_change: float | None = None  # ||delta|| / ||old||; None when ||old|| == 0
    max_abs_delta: float | None = None
    cosine: float | None = None  # None when either side is all zeros
    nonfinite: int = 0  # entries NaN or infinite on either side, left out of the norms

    @property
    def is_float(self) -> bool:
        return self.l2_delta is not None

    def magnitude(self) -> float:
        """How big the change is, for sorting: relative change, inf from an all-zero tensor,
        the fraction of changed entries for non-float tensors."""
        if self.relative_change is not None:
            return self.relative_change
        if self.l2_delta is not None:
            return math.inf if self.l2_delta > 0 else 0.0
        return self.fraction_changed


@dataclass(frozen=True)
class UpdateKind:
    kind: str  # "sparse" | "lowrank" | "dense" | "none"
    rank: int | None = None
    percent: float | None = None  # sparse: percent of entries changed

    @property
    def label(self) -> str:
        if self.kind == "sparse":
            return f"sparse {_pct(self.percent or 0.0)}"
        if self.kind == "lowrank":
            return f"rank {self.rank}"
        return self.kind


@dataclass
class TensorDiff:
    name: str
    status: str  # added | removed | modified | renamed | moved
    old: TensorSide | None
    new: TensorSide | None
    old_name: str | None = None  # renamed: the name on the old side
    stats: TensorStats | None = None
    kind: UpdateKind | None = None
    below_threshold: bool = False
    old_shard: str | None = None  # sharded models: the shard file holding it on each side
    new_shard: str | None = None

    @property
    def shard_moved(self) -> bool:
        """In a sharded model, held by another shard file on the new side."""
        return self.old_shard is not None and self.new_shard is not None and self.old_shard != self.new_shard

    @property
    def content_changed(self) -> bool:
        return self.old is None or self.new is None or self.old.raw != self.new.raw

    @property
    def shape_changed(self) -> bool:
        return self.old is not None and self.new is not None and self.old.shape != self.new.shape

    @property
    def dtype_changed(self) -> bool:
        return self.old is not None and self.new is not None and self.old.dtype != self.new.dtype

    @property
    def numel(self) -> int:
        side = self.new or self.old
        assert side is not None
        return side.numel

    @property
    def group(self) -> str:
        """Where the tensor is listed: modified, reshaped (shape/dtype), renamed, moved, added,
        removed."""
        if self.status == MODIFIED and (self.shape_changed or self.dtype_changed):
            return "reshaped"
        return self.status

    def sort_key(self) -> tuple[float, int, str]:
        mag = self.stats.magnitude() if self.stats is not None else -1.0
        return (-mag, -self.numel, self.name)


@dataclass
class FileSide:
    format: str
    size: int  # a sharded model: the sum of its shard files' sizes
    tensors: int
    params: int
    shards: int | None = None  # a sharded model: number of shard files; None for a single file

    @classmethod
    def of(cls, m: Manifest) -> FileSide:
        return cls(m.format, m.size, len(m.tensors), sum(dtypes.numel(t.shape) for t in m.tensors))


@dataclass
class FileDiff:
    path: str
    old: FileSide | None
    new: FileSide | None
    tensors: list[TensorDiff] = field(default_factory=list)  # biggest changes first, by group
    unchanged: int = 0  # tensors with the same name and content on both sides
    unchanged_names: list[str] = field(default_factory=list, repr=False)
    header_changed: bool = False  # skeleton bytes (header, metadata, padding) differ
    stored_bytes: int = 0  # bytes of objects the new version references and the old does not
    stats_computed: bool = True
    threshold: float | None = None
    note: str | None = None  # e.g. why statistics are missing
    old_shards: list[str] | None = None  # a sharded model (path: its index): shard files per side
    new_shards: list[str] | None = None

    @property
    def sharded(self) -> bool:
        return self.old_shards is not None or self.new_shards is not None

    @property
    def status(self) -> str:
        if self.old is None:
            return ADDED
        if self.new is None:
            return REMOVED
        return MODIFIED if self.differs else "unchanged"

    @property
    def whole(self) -> bool:
        """Stored whole (not split into tensors) on either side."""
        return (self.old is not None and self.old.format == WHOLE) or (
            self.new is not None and self.new.format == WHOLE
        )

    @property
    def differs(self) -> bool:
        """Content differs, leaving out tensors whose change is below the threshold."""
        if self.old is None or self.new is None or self.header_changed:
            return True
        return any(not t.below_threshold for t in self.tensors)

    def count(self, group: str) -> int:
        return sum(1 for t in self.tensors if t.group == group and not t.below_threshold)

    @property
    def below_threshold(self) -> int:
        return sum(1 for t in self.tensors if t.below_threshold)

    @property
    def params_changed(self) -> int | None:
        """Entries whose value changed, in tensors present on both sides; None without stats."""
        if not self.stats_computed:
            return None
        return sum(t.stats.changed for t in self.tensors if t.stats is not None and not t.below_threshold)

    @property
    def l2_delta(self) -> float | None:
        """sqrt of the sum of ||delta||^2 over the float tensors compared."""
        vals = [
            t.stats.l2_delta for t in self.tensors if t.stats is not None and t.stats.l2_delta is not None
        ]
        return math.sqrt(sum(v * v for v in vals)) if vals else None


@dataclass
class DiffResult:
    old_label: str
    new_label: str
    files: list[FileDiff]
    threshold: float | None = None

    @property
    def differs(self) -> bool:
        return any(f.differs for f in self.files)


# ============================================================================ statistics


def float_view(bits: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values of a dtype's bit patterns (F64/F32/F16/BF16 and the 8-bit floats)."""
    if dtype in _F8:
        return _f8_table(dtype)[bits.view(np.uint8)]
    return delta_codec.to_float64(bits, dtype)


def is_float(dtype: str) -> bool:
    return dtype in ("F64", "F32", "F16", "BF16") or dtype in _F8


_F8 = {  # 8-bit floats: exponent bits, bias, kind of special values
    "F8_E4M3": (4, 7, "fn"),  # no infinities; S.1111.111 is NaN
    "F8_E5M2": (5, 15, "ieee"),
    "F8_E4M3FNUZ": (4, 8, "fnuz"),  # only 0x80 is NaN; no negative zero
    "F8_E5M2FNUZ": (5, 16, "fnuz"),
    "F8_E8M0": (8, 127, "e8m0"),  # exponent only; 0xFF is NaN
}
_F8_TABLES: dict[str, np.ndarray] = {}


def _f8_table(dtype: str) -> np.ndarray:
    table = _F8_TABLES.get(dtype)
    if table is not None:
        return table
    ebits, bias, kind = _F8[dtype]
    mbits = 8 - 1 - ebits if kind != "e8m0" else 0
    out = np.empty(256, np.float64)
    for b in range(256):
        if kind == "e8m0":
            out[b] = math.nan if b == 0xFF else math.ldexp(1.0, b - bias)
            continue
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> mbits) & ((1 << ebits) - 1)
        m = b & ((1 << mbits) - 1)
        if kind == "fnuz" and b == 0x80:
            out[b] = math.nan
            continue
        if kind == "fn" and e == (1 << ebits) - 1 and m == (1 << mbits) - 1:
            out[b] = math.nan
            continue
        if kind == "ieee" and e == (1 << ebits) - 1:
            out[b] = sign * math.inf if m == 0 else math.nan
            continue
        if e == 0:
            out[b] = sign * math.ldexp(m, 1 - bias - mbits)
        else:
            out[b] = sign * math.ldexp((1 << mbits) + m, e - bias - mbits)
    _F8_TABLES[dtype] = out
    return out


def tensor_stats(old_raw: Buffer, old_dtype: str, new_raw: Buffer, new_dtype: str) -> TensorStats | None:
    """Statistics of new against old (same number of entries), or None when they are not
    comparable (different sizes; different non-float dtypes)."""
    old = delta_codec.elements(old_raw, old_dtype)
    new = delta_codec.elements(new_raw, new_dtype)
    if old.size != new.size:
        return None
    n = int(old.size)
    floats = is_float(old_dtype) and is_float(new_dtype)
    if not floats:
        if old_dtype != new_dtype:
            return None
        changed = sum(
            int(np.count_nonzero(old[s : s + CHUNK] != new[s : s + CHUNK])) for s in range(0, n, CHUNK)
        )
        return TensorStats(n, changed, changed / n if n else 0.0)
    same_dtype = old_dtype == new_dtype
    changed = nonfinite = 0
    d2 = a2 = b2 = ab = 0.0
    dmax = 0.0
    for s in range(0, n, CHUNK):
        ob, nb = old[s : s + CHUNK], new[s : s + CHUNK]
        a, b = float_view(ob, old_dtype), float_view(nb, new_dtype)
        if same_dtype:
            diff = ob != nb
        else:
            with np.errstate(invalid="ignore"):
                diff = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        changed += int(np.count_nonzero(diff))
        finite = np.isfinite(a) & np.isfinite(b)
        if not finite.all():
            nonfinite += int(finite.size - np.count_nonzero(finite))
            a, b = a[finite], b[finite]
        d = b - a
        d2 += float(d @ d)
        a2 += float(a @ a)
        b2 += float(b @ b)
        ab += float(a @ b)
        if d.size:
            dmax = max(dmax, float(np.max(np.abs(d))))
    l2d, l2a, l2b = math.sqrt(d2), math.sqrt(a2), math.sqrt(b2)
    rel = l2d / l2a if l2a > 0 else None
    cos = max(-1.0, min(1.0, ab / (l2a * l2b))) if l2a > 0 and l2b > 0 else None
    return TensorStats(n, changed, changed / n if n else 0.0, l2d, l2a, l2b, rel, dmax, cos, nonfinite)


def _delta_rows(
    old: np.ndarray, old_dtype: str, new: np.ndarray, new_dtype: str, n: int, r0: int, r1: int
) -> np.ndarray:
    a = float_view(old[r0 * n : r1 * n], old_dtype)
    b = float_view(new[r0 * n : r1 * n], new_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        d = b - a
    d[~np.isfinite(d)] = 0.0
    rows: np.ndarray = d.reshape(r1 - r0, n)
    return rows


def probe_rank(
    old_raw: Buffer,
    old_dtype: str,
    new_raw: Buffer,
    new_dtype: str,
    shape2d: tuple[int, int],
    max_rank: int = MAX_RANK,
    seed: int = 0,
) -> int | None:
    """The rank of the delta when it is clearly low (a gap of 8x in its spectrum), else None.

    A randomized range finder with one power iteration (as codecs/delta.lowrank_probe), computed
    over row blocks so that memory stays O((m + n) k) beside one block of the delta.
    """
    m, n = shape2d
    old = delta_codec.elements(old_raw, old_dtype)
    new = delta_codec.elements(new_raw, new_dtype)
    k = min(max_rank + 8, m, n)
    if k < 4:
        return None
    step = max(1, CHUNK // n)
    blocks = [(r, min(m, r + step)) for r in range(0, m, step)]

    def rows(r0: int, r1: int) -> np.ndarray:
        return _delta_rows(old, old_dtype, new, new_dtype, n, r0, r1)

    omega = np.random.default_rng(seed).standard_normal((n, k))
    y = np.vstack([rows(r0, r1) @ omega for r0, r1 in blocks])
    q, _ = np.linalg.qr(y)
    z = np.zeros((n, k))
    for r0, r1 in blocks:
        z += rows(r0, r1).T @ q[r0:r1]
    y = np.vstack([rows(r0, r1) @ z for r0, r1 in blocks])
    q, _ = np.linalg.qr(y)
    small = np.zeros((q.shape[1], n))
    for r0, r1 in blocks:
        small += q[r0:r1].T @ rows(r0, r1)
    s = np.linalg.svd(small, compute_uv=False)
    if not np.all(np.isfinite(s)):
        return None
    r = delta_codec._gap_rank(s, max_rank)
    return r if r is not None and r < min(m, n) / 2 else None


def infer_kind(
    stats: TensorStats,
    old_raw: Buffer,
    old: TensorSide,
    new_raw: Buffer,
    new: TensorSide,
    codec_rank: int | None = None,
) -> UpdateKind:
    """sparse k% / rank r / dense (see the module docstring)."""
    if stats.changed == 0:
        return UpdateKind("none")
    if stats.fraction_changed <= SPARSE_MAX:
        return UpdateKind("sparse", percent=100.0 * stats.fraction_changed)
    shape2d = delta_codec.shape_2d(new.shape) if old.shape == new.shape else None
    if stats.is_float and shape2d is not None:
        if codec_rank is not None and codec_rank < min(shape2d) / 2:
            return UpdateKind("lowrank", rank=codec_rank)
        plausible = True
        if old.dtype == new.dtype and old.dtype in delta_codec.LOWRANK_DTYPES:
            plausible = delta_codec.lowrank_plausible(
                delta_codec.elements(new_raw, new.dtype),
                delta_codec.elements(old_raw, old.dtype),
                new.dtype,
                shape2d,
                MAX_RANK,
            )
        if plausible:
            r = probe_rank(old_raw, old.dtype, new_raw, new.dtype, shape2d)
            if r is not None:
                return UpdateKind("lowrank", rank=r)
    return UpdateKind("dense")


# ============================================================================ reading objects


class ObjectReader:
    """Reads and verifies raw tensor contents, each object once per `session`.

    A delta whose base is the other side of the comparison (the usual case: the new version is
    stored against the old one) is decoded against the raw bytes already in hand, so a changed
    tensor costs the reads of exactly the objects of its two versions' chains.
    """

    def __init__(self, store: LocalStore, sizes: dict[str, int] | None = None, fetch: Fetch | None = None):
        self.store = store
        self.sizes = sizes if sizes is not None else {}
        self.fetch = fetch
        self._cache: dict[str, tuple[Buffer, ObjectHeader]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def ensure(self, items: Iterable[tuple[str, int, str]]) -> None:
        """Fetch, in one batch, the objects among items ((oid, size, what)) the store lacks."""
        missing: dict[str, tuple[int, str]] = {}
        for oid, size, what in items:
            if oid not in missing and not self.store.has(oid):
                missing[oid] = (size, what)
        if missing and self.fetch is not None:
            try:
                self.fetch(sorted((o, s) for o, (s, _) in missing.items()))
            except ThetaLikeError as e:
                named = ", ".join(f"{what} (object {oid})" for oid, (_, what) in list(missing.items())[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise ObjectMissingError(
                    f"{named}{more}: not in the local store, and downloading failed: {e}"
                ) from None

    def raw(
        self,
        oid: str,
        what: str,
        expect_raw: str | None = None,
        expect_size: int | None = None,
        _depth: int = 0,
    ) -> tuple[Buffer, ObjectHeader]:
        """Raw bytes and header of an object, verified (sizes are checked before decoding, so a
        crafted header cannot make us allocate more than the tensor it claims to be)."""
        hit = self._cache.get(oid)
        if hit is not None:
            return hit
        if not self.store.has(oid):
            self.ensure([(oid, self.sizes.get(oid, 0), what)])
        data = self.store.read(oid, what)

        def base_of(header: ObjectHeader) -> Buffer:
            assert header.base is not None
            if header.base not in self.sizes:
                self.sizes[header.base] = int(header.params.get("base_size", 0))
            return self.raw(header.base, f"{what} (delta base)", None, header.size, _depth + 1)[0]

        raw, header = self.store.decode_verified(oid, data, what, expect_raw, expect_size, base_of, _depth)
        self._cache[oid] = (raw, header)
        return raw, header


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


def _oids(m: Manifest | None) -> dict[str, int]:
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
    old_oids, new_oids = _oids(old), _oids(new)
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
    fd.tensors = _ordered(entries)
    return fd


_GROUPS = ["modified", "reshaped", "renamed", "moved", "added", "removed"]


def _ordered(entries: list[TensorDiff]) -> list[TensorDiff]:
    """By group, biggest change first within a group."""
    return sorted(entries, key=lambda e: (_GROUPS.index(e.group), *e.sort_key()))


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread: the products here are small or memory-bound, and a threaded BLAS
    on a busy machine turns a 2 ms SVD into a 300 ms one (threads spinning for cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: BLAS keeps its threads (see OPENBLAS_NUM_THREADS)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _compute(e: TensorDiff, reader: ObjectReader, threshold: float | None) -> None:
    assert e.old is not None and e.new is not None
    old_raw, _ = reader.raw(e.old.oid, f"tensor {e.old_name or e.name!r} (old)", e.old.raw, e.old.length)
    new_raw, header = reader.raw(e.new.oid, f"tensor {e.name!r} (new)", e.new.raw, e.new.length)
    st = tensor_stats(old_raw, e.old.dtype, new_raw, e.new.dtype)
    if st is None:
        return
    e.stats = st
    codec_rank = None
    if header.codec == delta_codec.LOWRANK and header.base == e.old.oid:
        rank = header.params.get("rank")
        codec_rank = int(rank) if isinstance(rank, int) else None
    e.kind = infer_kind(st, old_raw, e.old, new_raw, e.new, codec_rank)
    if threshold is not None and st.relative_change is not None and not (e.shape_changed or e.dtype_changed):
        e.below_threshold = st.relative_change < threshold


# ============================================================================ repository level


@dataclass(frozen=True)
class Side:
    """What one side of a diff is: a revision, the index, or the working tree."""

    kind: str  # "rev" | "index" | "worktree"
    rev: str | None = None

    @property
    def label(self) -> str:
        if self.kind == "rev":
            assert self.rev is not None
            return self.rev
        return "index" if self.kind == "index" else "working tree"


def resolve_sides(repo: Any, revs: list[str], cached: bool = False) -> tuple[Side, Side]:
    """git diff's rules: no revision = index vs working tree (`--cached`: HEAD vs index);
    A = A vs working tree (`--cached`: A vs index); A B, A..B = A vs B; A...B = merge base vs B."""
    if len(revs) == 1 and "..." in revs[0]:
        a, b = revs[0].split("...", 1)
        a_id = _commit(repo, a or "HEAD").id
        b_id = _commit(repo, b or "HEAD").id
        base = repo.git.merge_base(a_id, b_id)
        if base is None:
            raise ThetaLikeError(f"{revs[0]}: no merge base")
        return Side("rev", str(base)), Side("rev", b or "HEAD")
    if len(revs) == 1 and ".." in revs[0]:
        a, b = revs[0].split("..", 1)
        revs = [a or "HEAD", b or "HEAD"]
    for r in revs:
        _commit(repo, r)
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


def _commit(repo: Any, rev: str) -> Any:
    import pygit2

    try:
        return repo.git.revparse_single(rev).peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise ThetaLikeError(f"unknown revision {rev!r}") from None


def is_revision(repo: Any, arg: str) -> bool:
    try:
        if "..." in arg or ".." in arg:
            a, _, b = arg.replace("...", "..").partition("..")
            return all(_commit(repo, x) is not None for x in (a or "HEAD", b or "HEAD"))
        _commit(repo, arg)
        return True
    except ThetaLikeError:
        return False


class PathFilter:
    """Paths (relative to the repository root) matching git-like pathspecs: a file, a directory,
    or a glob. Specs are relative to `cwd` (the directory the command runs in)."""

    def __init__(self, specs: Iterable[str], root: Path | None, cwd: Path | None = None) -> None:
        self.specs: list[str] = []
        cwd = cwd or Path.cwd()
        for s in specs:
            if root is not None:
                absolute = Path(os.path.normpath(cwd / s))
                try:
                    s = absolute.relative_to(root.resolve()).as_posix()
                except ValueError:
                    s = absolute.as_posix()
                if s == ".":
                    s = ""
            self.specs.append(s.rstrip("/"))

    def __call__(self, path: str) -> bool:
        if not self.specs:
            return True
        for s in self.specs:
            if s == "" or path == s or path.startswith(s + "/") or fnmatch.fnmatchcase(path, s):
                return True
        return False


Match = Callable[[str], bool]  # a PathFilter, or one widened to the shards of selected models


def _rev_manifests(repo: Any, rev: str, match: Match) -> dict[str, Manifest]:
    from git_theta_like.tracked import tracked_files

    out = {}
    for f in tracked_files(repo, rev):
        if not match(f.path):
            continue
        if f.manifest is None:
            raise ManifestError(f"{f.path} at {rev}: {f.error}")
        out[f.path] = f.manifest
    return out


def _index_manifests(repo: Any, match: Match) -> dict[str, Manifest]:
    from git_theta_like.tracked import tracked_files

    out = {}
    for f in tracked_files(repo):
        if not match(f.path):
            continue
        if f.manifest is None:
            raise ManifestError(f"{f.path} in the index: {f.error}")
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
    stored, as git-lfs does for `git diff`); its staged version is the delta parent."""
    from git_theta_like.formats import ByteReader
    from git_theta_like.gitio.filter_process import _previous_manifest, make_engine

    with make_engine(repo) as engine, open(path, "rb") as f:
        data = engine.clean(ByteReader(f), _previous_manifest(repo, rel), rel)
    return Manifest.from_bytes(data)


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
        return _rev_manifests(repo, side.rev, match)
    staged = _index_manifests(repo, match)
    return staged if side.kind == "index" else _worktree_manifests(repo, match, staged)


def remote_fetcher(repo: Any) -> Fetch:
    """Downloads missing objects (and their delta bases) from the remote, as checkout would:
    theta-like.remote, else the branch's remote, else origin."""

    def fetch(oids: list[tuple[str, int]]) -> None:
        from git_theta_like.store import sync

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
    wide = _widened(match, idx_a, idx_b)
    a = side_manifests(repo, old, wide)
    b = side_manifests(repo, new, wide)
    folded, notes = fold_models(
        {p: sharded_side(p, d, a.__contains__, why_a) for p, d in idx_a.items()},
        {p: sharded_side(p, d, b.__contains__, why_b) for p, d in idx_b.items()},
    )
    files = []
    for path, sa, sb in folded:
        if _same_model(sa, sb, lambda s: a[s].to_bytes() == b[s].to_bytes()):
            continue
        fd = diff_sharded(repo.store, path, sa, a, sb, b, stats=stats, threshold=threshold, fetch=fetch)
        if fd.status != "unchanged" or fd.tensors:
            files.append(fd)
    in_a, in_b = _shard_files(folded)
    for path in sorted((set(a) - in_a) | (set(b) - in_b)):
        ma = a.get(path) if path not in in_a else None
        mb = b.get(path) if path not in in_b else None
        if ma is not None and mb is not None and ma.to_bytes() == mb.to_bytes():
            continue
        fd = diff_file(repo.store, path, ma, mb, stats=stats, threshold=threshold, fetch=fetch)
        fd.note = fd.note or notes.get(path)
        if fd.status != "unchanged" or fd.tensors:
            files.append(fd)
    files.sort(key=lambda f: f.path)
    return DiffResult(old.label, new.label, files, threshold)


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
    from git_theta_like.sharded import read_index

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


def _shard_files(
    folded: list[tuple[str, ShardedSide | None, ShardedSide | None]],
) -> tuple[set[str], set[str]]:
    """The shard files, per side, that folded models take in."""
    return (
        {s for _, sa, _ in folded if sa is not None for s in sa.shards},
        {s for _, _, sb in folded if sb is not None for s in sb.shards},
    )


def _same_model(old: ShardedSide | None, new: ShardedSide | None, same_shard: Match) -> bool:
    """Both sides have the model, with the same index and the same manifest for every shard."""
    if old is None or new is None or old.data != new.data or old.shards != new.shards:
        return False
    return all(same_shard(s) for s in old.shards)


def _widened(match: PathFilter, *indexes: dict[str, bytes]) -> Match:
    """match, plus the shard files of the selected indexes (a filter naming only the index
    still needs its shards' manifests)."""
    from git_theta_like.sharded import read_index

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
    from git_theta_like.sharded import is_index

    out: dict[str, bytes] = {}
    if side.kind == "rev":
        assert side.rev is not None
        present = _tree_paths(_commit(repo, side.rev).tree)
        for p in sorted(present):
            if is_index(p) and match(p) and (data := repo.rev_blob(side.rev, p)) is not None:
                out[p] = data
        return out, _why(f"at {side.rev}", present)
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
        return out, _why("in the index", staged)
    workdir = repo.workdir
    in_worktree = _why("in the working tree", staged)

    def why(s: str) -> str:
        on_disk = bool(s) and workdir is not None and (workdir / s).is_file()
        if s and not on_disk:
            return "missing in the working tree"
        if s and s not in staged:
            return "untracked in the working tree"
        return in_worktree(s)

    return out, why


def _why(where: str, present: Container[str]) -> Callable[[str], str]:
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
    old_oids = {o: n for m in old_shards for o, n in _oids(m).items()}
    new_oids = {o: n for m in new_shards for o, n in _oids(m).items()}
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
        fd.tensors = _ordered(
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


# ============================================================================ log


@dataclass
class LogEntry:
    commit: str
    parents: list[str]
    author: str
    date: int  # seconds since the epoch
    subject: str
    files: list[FileDiff]

    @property
    def stored_bytes(self) -> int:
        return sum(f.stored_bytes for f in self.files)


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
    import pygit2

    match = PathFilter(paths, repo.workdir, cwd)
    hide, sep, tip = rev.rpartition("..")
    walker = repo.git.walk(_commit(repo, tip or "HEAD").id)
    walker.sort(pygit2.GIT_SORT_TOPOLOGICAL | pygit2.GIT_SORT_TIME)
    if sep:
        walker.hide(_commit(repo, hide.rstrip(".") or "HEAD").id)
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
    new_paths = _tree_paths(commit.tree)
    old_paths = _tree_paths(parent.tree) if parent is not None else {}
    idx_new = _tree_indexes(repo, new_paths, match)
    idx_old = _tree_indexes(repo, old_paths, match)
    wide = _widened(match, {p: d for p, (_, d) in idx_old.items()}, {p: d for p, (_, d) in idx_new.items()})
    new = _tree_manifests(repo, new_paths, wide)
    old = _tree_manifests(repo, old_paths, wide)

    folded, notes = fold_models(
        {
            p: sharded_side(p, d, old.__contains__, _why(f"at {old_at}", old_paths))
            for p, (_, d) in idx_old.items()
        },
        {
            p: sharded_side(p, d, new.__contains__, _why(f"at {new_at}", new_paths))
            for p, (_, d) in idx_new.items()
        },
    )
    files = []
    for path, sa, sb in folded:
        if _same_model(sa, sb, lambda s: old[s][0] == new[s][0]):
            continue  # same blobs
        ma = {s: m for s in (sa.shards if sa else []) if (m := _parse(s, old[s], old_at)) is not None}
        mb = {s: m for s in (sb.shards if sb else []) if (m := _parse(s, new[s], new_at)) is not None}
        fd = diff_sharded(repo.store, path, sa, ma, sb, mb, stats=stats, fetch=fetch)
        if fd.differs:
            files.append(fd)
    in_old, in_new = _shard_files(folded)
    for path in sorted((set(old) - in_old) | (set(new) - in_new)):
        a = old.get(path) if path not in in_old else None
        b = new.get(path) if path not in in_new else None
        if a is not None and b is not None and a[0] == b[0]:
            continue  # same blob
        fd = diff_file(
            repo.store, path, _parse(path, a, old_at), _parse(path, b, new_at), stats=stats, fetch=fetch
        )
        fd.note = fd.note or notes.get(path)
        if fd.differs:
            files.append(fd)
    files.sort(key=lambda f: f.path)
    return files


def _parse(path: str, blob: tuple[str, bytes] | None, where: str) -> Manifest | None:
    if blob is None:
        return None
    try:
        return Manifest.from_bytes(blob[1])
    except ManifestError as e:
        raise ManifestError(f"{path} at {where}: {e}") from None


def _tree_paths(tree: Any) -> dict[str, Any]:
    """path -> blob id for the files of a tree."""
    from git_theta_like.tracked import _walk

    return dict(_walk(tree, ""))


def _tree_indexes(repo: Any, paths: dict[str, Any], match: Match) -> dict[str, tuple[str, bytes]]:
    """path -> (blob id, content) for the sharded-model indexes among a tree's files that match."""
    from git_theta_like.sharded import is_index

    out = {}
    for path, oid in paths.items():
        if is_index(path) and match(path):
            out[path] = (str(oid), getattr(repo.git.get(oid), "data", b""))
    return out


def _tree_manifests(repo: Any, paths: dict[str, Any], match: Match) -> dict[str, tuple[str, bytes]]:
    """path -> (blob id, manifest bytes) for the manifests among a tree's files (_tree_paths)."""
    out = {}
    for path, oid in paths.items():
        if not match(path):
            continue
        blob = repo.git.get(oid)
        data = getattr(blob, "data", b"")
        if is_manifest(data):
            out[path] = (str(oid), data)
    return out


# ============================================================================ small helpers


def _pct(p: float) -> str:
    if p == 0:
        return "0%"
    if p >= 99.995 or p >= 10:
        return f"{p:.1f}%"
    if p >= 0.01:
        return f"{p:.2f}%"
    return f"{p:.1e}%"


def human_count(n: float) -> str:
    """1234567 -> 1.23M (parameter counts)."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


class _CallableModule(types.ModuleType):
    """`git_theta_like.diff` names both this module and the Python API's `diff()`
    (git_theta_like.api.diff): once this module is imported, Python makes it the package's
    `diff` attribute, so calling the module calls the API function."""

    def __call__(self, *args: Any, **kwargs: Any) -> DiffResult:
        from git_theta_like.api import diff

        return diff(*args, **kwargs)  # type: ignore[no-any-return]


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "DiffResult",
    "FileDiff",
    "TensorDiff",
    "TensorStats",
    "UpdateKind",
    "diff_manifests",
    "diff_sides",
    "iter_log",
    "resolve_sides",
    "tensor_stats",
]
