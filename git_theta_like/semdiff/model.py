"""The data model of semantic diffs: per-tensor sides and statistics, per-file and whole-diff
results, log entries, and the JSON schema names (docs/diff.md defines every field)."""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from git_theta_like import dtypes
from git_theta_like.manifest import Manifest, TensorEntry

SCHEMA = "git-theta-like/diff"


LOG_SCHEMA = "git-theta-like/log"


SCHEMA_VERSION = 1


WHOLE = "opaque"  # manifest format of a file stored whole (filters.WHOLE)


SPARSE_MAX = 0.10  # at most this fraction of entries changed: a sparse update


# added / removed / modified / renamed (content may also have changed) / moved (sharded models:
# same content, another shard)
ADDED = "added"


REMOVED = "removed"


MODIFIED = "modified"


RENAMED = "renamed"


MOVED = "moved"


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


def _pct(p: float) -> str:
    if p == 0:
        return "0%"
    if p >= 99.995 or p >= 10:
        return f"{p:.1f}%"
    if p >= 0.01:
        return f"{p:.2f}%"
    return f"{p:.1e}%"


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
