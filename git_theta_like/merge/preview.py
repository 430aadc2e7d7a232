"""Merge preview: what `git merge B`, run on A, would do to each checkpoint, before merging
(`git theta-like diff A...B --merge-preview`; docs/diff.md, "Merge preview").

Per checkpoint (a path tracked at A or B), first git's own rule on the file's three blobs (the
same blob on both sides, or one side unchanged from the merge base: no merge driver runs), then
the merge driver's plan from the three manifests: `plan.plan_merge` for the file's outcome (its
conflicts, exactly those the merge would report) and `plan.plan_tensor` per tensor, the rule the
plan applies (one side, the same change on both, both changed -> the configured strategy, or a
conflict and its reason). Nothing here re-decides what the plan decides.

For each tensor both sides changed, with the same dtype and shape as in the merge base, the
interference of the two task vectors a = A - base and b = B - base (TIES's measures), in
float64, chunk by chunk, from the three versions of one tensor at a time read (verified) through
the store's ObjectReader:

- `sign_disagreement`: among the entries both task vectors change (nonzero in both), the
  fraction whose signs differ;
- `cosine`: <a, b> / (||a|| ||b||), None when either is zero.

Entries NaN or infinite in any of the three versions are left out (`nonfinite`). Per file and
overall the same measures are summed over those tensors (disagreeing entries over entries both
changed; the cosine of the concatenated task vectors). No torch is imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from git_theta_like.codecs import bits
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import (
    ManifestError,
    MergeConfigError,
    ObjectCorruptError,
    ObjectMissingError,
    ThetaLikeError,
)
from git_theta_like.filters.engine import WHOLE
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import resolve_commit, tracked_files
from git_theta_like.manifest import Manifest, TensorEntry, is_manifest
from git_theta_like.merge import config
from git_theta_like.merge.plan import (
    Conflict,
    FisherLookup,
    Plan,
    Slot,
    fisher_path,
    model_layers,
    plan_merge,
    plan_tensor,
    shape_text,
    tensors_by_name,
)
from git_theta_like.merge.strategies.base import Value
from git_theta_like.store import store_of
from git_theta_like.store.reader import Fetch, ObjectReader

SCHEMA = "git-theta-like/merge-preview"
SCHEMA_VERSION = 1

# What the merge does with a tensor (or a whole file):
OURS = "ours"  # changed (added, deleted) in ours only: ours is kept
THEIRS = "theirs"  # changed in theirs only: theirs is taken
SAME = "same"  # changed alike on both sides
BOTH = "both"  # changed differently on both sides: the configured strategy decides
CONFLICT = "conflict"  # cannot be merged automatically: the merge stops
ACTIONS = (OURS, THEIRS, SAME, BOTH, CONFLICT)

# What one side did to a tensor, against the merge base
UNCHANGED, MODIFIED, ADDED, DELETED = "unchanged", "modified", "added", "deleted"

FLOATS = ("F64", "F32", "F16", "BF16")  # dtypes statistics are computed for (codecs.bits)
CHUNK = 1 << 20  # entries compared at a time: bounds the float64 working set (5 x 8 MiB)


# ============================================================================ data model


@dataclass
class Interference:
    """How two task vectors (ours - base, theirs - base) of one tensor, or summed over several,
    interfere. Counts cover the entries finite in all three versions."""

    numel: int = 0
    changed_ours: int = 0  # entries ours changes (nonzero task vector)
    changed_theirs: int = 0
    changed_both: int = 0  # entries both change
    disagree: int = 0  # of those, entries whose signs differ
    dot: float = 0.0  # <ours - base, theirs - base>
    sq_ours: float = 0.0  # ||ours - base||^2
    sq_theirs: float = 0.0
    nonfinite: int = 0  # entries NaN or infinite in any version, left out
    tensors: int = 1  # tensors summed

    @property
    def sign_disagreement(self) -> float | None:
        return self.disagree / self.changed_both if self.changed_both else None

    @property
    def cosine(self) -> float | None:
        den = math.sqrt(self.sq_ours) * math.sqrt(self.sq_theirs)
        if not (den > 0 and math.isfinite(den) and math.isfinite(self.dot)):
            return None
        return max(-1.0, min(1.0, self.dot / den))

    @property
    def norm_ours(self) -> float:
        return math.sqrt(self.sq_ours)

    @property
    def norm_theirs(self) -> float:
        return math.sqrt(self.sq_theirs)

    def add(self, o: Interference) -> None:
        self.numel += o.numel
        self.changed_ours += o.changed_ours
        self.changed_theirs += o.changed_theirs
        self.changed_both += o.changed_both
        self.disagree += o.disagree
        self.dot += o.dot
        self.sq_ours += o.sq_ours
        self.sq_theirs += o.sq_theirs
        self.nonfinite += o.nonfinite


@dataclass
class TensorPreview:
    name: str
    action: str  # one of ACTIONS
    ours: str  # what ours did to it: unchanged | modified | added | deleted
    theirs: str
    dtype: str | None  # ours's (theirs's when ours deleted it)
    shape: tuple[int, ...] | None
    strategy: str | None = None  # both: the configured strategy (name)
    params: dict[str, Value] = field(default_factory=dict)  # its parameters
    source: str | None = None  # where the configuration chose it
    result: str | None = None  # both: merged (computed), or the version a strategy picks
    reason: str | None = None  # conflict: why
    stats: Interference | None = None
    stats_note: str | None = None  # changed on both sides without statistics: why
    entries: tuple[TensorEntry | None, TensorEntry | None, TensorEntry | None] = field(
        default=(None, None, None), repr=False
    )  # base, ours, theirs

    @property
    def changed_both(self) -> bool:
        return self.ours != UNCHANGED and self.theirs != UNCHANGED


@dataclass
class FilePreview:
    path: str
    action: str  # one of ACTIONS: what the merge does with the file
    ours: str  # what ours did to the file: unchanged | modified | added | deleted
    theirs: str
    reason: str | None = None  # a conflict of the file as a whole
    tensors: list[TensorPreview] = field(default_factory=list)  # changed on either side
    unchanged: int = 0  # tensors the same in all three versions
    conflicts: list[str] = field(default_factory=list)  # what the merge would report (Conflict.line)
    notes: list[str] = field(default_factory=list)
    stats_computed: bool = False

    def count(self, action: str) -> int:
        return sum(1 for t in self.tensors if t.action == action)

    def strategies(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tensors:
            if t.action == BOTH and t.strategy is not None:
                out[t.strategy] = out.get(t.strategy, 0) + 1
        return dict(sorted(out.items()))

    def interference(self) -> Interference | None:
        """Summed over the tensors with statistics (None: none has them)."""
        return total_interference(t.stats for t in self.tensors)


@dataclass
class MergePreview:
    ours_label: str  # A as given
    theirs_label: str  # B as given
    ours_commit: str
    theirs_commit: str
    base_commit: str
    files: list[FilePreview]
    stats_computed: bool = True

    @property
    def conflicts(self) -> bool:
        """Whether the merge would stop with a checkpoint conflict."""
        return any(f.action == CONFLICT or f.conflicts for f in self.files)

    def interference(self) -> Interference | None:
        return total_interference(t.stats for f in self.files for t in f.tensors)


def total_interference(items: Iterable[Interference | None]) -> Interference | None:
    out: Interference | None = None
    n = 0
    for st in items:
        if st is None:
            continue
        if out is None:
            out = Interference()
        out.add(st)
        n += 1
    if out is not None:
        out.tensors = n
    return out


# ============================================================================ statistics


def interference(base_raw: Buffer, ours_raw: Buffer, theirs_raw: Buffer, dtype: str) -> Interference:
    """The interference of ours - base and theirs - base (three raw tensors of one float dtype
    and size), in float64, CHUNK entries at a time."""
    b, o, t = (bits.elements(x, dtype) for x in (base_raw, ours_raw, theirs_raw))
    if not (b.size == o.size == t.size):
        raise ObjectCorruptError(f"versions of different sizes ({b.size}, {o.size}, {t.size} entries)")
    n = int(b.size)
    st = Interference(numel=n)
    for s in range(0, n, CHUNK):
        fb = bits.to_float64(b[s : s + CHUNK], dtype)
        fo = bits.to_float64(o[s : s + CHUNK], dtype)
        ft = bits.to_float64(t[s : s + CHUNK], dtype)
        finite = np.isfinite(fb) & np.isfinite(fo) & np.isfinite(ft)
        if not finite.all():
            st.nonfinite += int(finite.size - np.count_nonzero(finite))
            fb, fo, ft = fb[finite], fo[finite], ft[finite]
        with np.errstate(over="ignore", invalid="ignore"):
            da = fo - fb
            db = ft - fb
            st.dot += float(da @ db)
            st.sq_ours += float(da @ da)
            st.sq_theirs += float(db @ db)
        ca, cb = da != 0, db != 0
        both = ca & cb
        st.changed_ours += int(np.count_nonzero(ca))
        st.changed_theirs += int(np.count_nonzero(cb))
        st.changed_both += int(np.count_nonzero(both))
        st.disagree += int(np.count_nonzero(both & (np.signbit(da) != np.signbit(db))))
    return st


def _stats_note(base: TensorEntry | None, a: TensorEntry | None, t: TensorEntry | None) -> str | None:
    """Why a tensor changed on both sides has no statistics (None: it has them)."""
    if a is None or t is None:
        return "deleted on one side: no task vector there"
    if base is None:
        return "not in the merge base: no task vectors"
    if not ((base.dtype, base.shape) == (a.dtype, a.shape) == (t.dtype, t.shape)):
        return "dtype or shape differs between the versions: no task vectors"
    if a.dtype not in FLOATS:
        return f"{a.dtype}: statistics are computed for {', '.join(FLOATS)} tensors"
    return None


def compute_stats(files: list[FilePreview], repo: Repo, fetch: Fetch | None) -> None:
    """The interference of every tensor changed on both sides that has task vectors: the objects
    are fetched in one batch, then each tensor's three versions are read, compared and dropped."""
    todo = [t for f in files for t in f.tensors if t.changed_both and t.action in (BOTH, CONFLICT)]
    for t in todo:
        t.stats_note = _stats_note(*t.entries)
    todo = [t for t in todo if t.stats_note is None]
    sizes = {e.obj.oid: e.obj.stored for t in todo for e in t.entries if e is not None}
    reader = ObjectReader(store_of(repo), sizes, fetch)
    labels = ("merge base", "ours", "theirs")
    reader.ensure(
        (e.obj.oid, e.obj.stored, f"tensor {t.name!r} ({label})")
        for t in todo
        for e, label in zip(t.entries, labels, strict=True)
        if e is not None
    )
    for t in todo:
        raws = []
        for e, label in zip(t.entries, labels, strict=True):
            assert e is not None
            raws.append(reader.raw(e.obj.oid, f"tensor {t.name!r} ({label})", e.obj.raw, e.length)[0])
        try:
            t.stats = interference(raws[0], raws[1], raws[2], t.entries[0].dtype)  # type: ignore[union-attr]
        except ObjectCorruptError as e:
            raise ObjectCorruptError(f"tensor {t.name!r}: {e}") from None
        reader.clear()
    for f in files:
        f.stats_computed = True


# ============================================================================ the plan


class RevFisher(FisherLookup):
    """fisher's Fisher tensors as the merge would find them: `model.fisher.safetensors` next to
    the checkpoint in ours's commit and in theirs's (plan.FisherFiles, for commits named)."""

    def __init__(self, repo: Repo, path: str, revs: dict[str, str]) -> None:
        self.repo = repo
        self.path = fisher_path(path)
        self.revs = revs
        self._loaded: dict[str, dict[str, TensorEntry] | None] = {}

    def _tensors(self, side: str) -> dict[str, TensorEntry] | None:
        if side not in self._loaded:
            blob = self.repo.rev_blob(self.revs[side], self.path)
            found = None
            if blob is not None and is_manifest(blob):
                try:
                    found = {t.name: t for t in Manifest.from_bytes(blob).tensors}
                except ThetaLikeError:
                    found = None
            self._loaded[side] = found
        return self._loaded[side]

    def get(self, side: str, name: str) -> TensorEntry | None:
        tensors = self._tensors(side)
        return tensors.get(name) if tensors else None

    def where(self, side: str) -> str:
        return f"{self.path} at {self.revs[side][:12]}"


def _same(x: TensorEntry | None, y: TensorEntry | None) -> bool:
    if x is None or y is None:
        return x is None and y is None
    return (x.dtype, x.shape, x.obj.raw) == (y.dtype, y.shape, y.obj.raw)


def _change(base: TensorEntry | None, side: TensorEntry | None) -> str:
    if _same(base, side):
        return UNCHANGED
    if base is None:
        return ADDED
    return DELETED if side is None else MODIFIED


def tensor_rows(
    plan: Plan,
    base: Manifest | None,
    ours: Manifest,
    theirs: Manifest,
    cfg: config.MergeConfig,
    fisher: FisherLookup,
) -> tuple[list[TensorPreview], int]:
    """Per tensor changed on either side, what the plan does with it (plan_tensor, as plan_merge
    calls it); and the number of tensors unchanged. Empty when tensors cannot be matched by name
    (plan_merge then conflicts on the file as a whole)."""
    a, t, b = tensors_by_name(ours), tensors_by_name(theirs), tensors_by_name(base)
    if a is None or t is None or b is None or ours.format != theirs.format or ours.format == WHOLE:
        return [], 0
    if base is not None and base.format != ours.format:
        b = {}
    names = list(a) + [n for n in t if n not in a] + [n for n in b if n not in a and n not in t]
    rows: list[TensorPreview] = []
    unchanged = 0
    for name in names:
        ea, et, eb = a.get(name), t.get(name), b.get(name)
        co, ct = _change(eb, ea), _change(eb, et)
        if co == UNCHANGED and ct == UNCHANGED:
            unchanged += 1
            continue
        shown = ea or et or eb
        assert shown is not None
        row = TensorPreview(name, SAME, co, ct, shown.dtype, shown.shape, entries=(eb, ea, et))
        slot = plan_tensor(plan, name, ea, et, eb, cfg, fisher)
        _classify(row, slot, ea, et)
        rows.append(row)
    return rows, unchanged


def _classify(
    row: TensorPreview, slot: Slot | Conflict | None, ea: TensorEntry | None, et: TensorEntry | None
) -> None:
    if isinstance(slot, Conflict):
        row.action, row.reason = CONFLICT, slot.reason
    elif slot is None:  # not in the result: deleted by one side, or by both
        row.action = SAME if ea is None and et is None else THEIRS if ea is not None else OURS
    elif slot.choice is not None:
        s = slot.choice.strategy
        row.action, row.strategy, row.source = BOTH, s.name, slot.choice.source
        row.params = dict(s.recorded())
        row.result = slot.side
    elif slot.side == "both":
        row.action = SAME
    else:
        row.action = OURS if slot.side == "ours" else THEIRS


def preview_file(
    path: str,
    blobs: tuple[bytes | None, bytes | None, bytes | None],
    cfg: config.MergeConfig,
    fisher: FisherLookup,
    n_layers: int = 0,
) -> FilePreview | None:
    """What the merge does with one path, from its blobs at the merge base, ours and theirs
    (None: not there); None when it is the same in all three."""
    bb, bo, bt = blobs

    def change(side: bytes | None) -> str:
        if side == bb:
            return UNCHANGED
        return ADDED if bb is None else DELETED if side is None else MODIFIED

    co, ct = change(bo), change(bt)
    if co == UNCHANGED and ct == UNCHANGED:
        return None
    if bo == bt:
        action = SAME
    elif co == UNCHANGED:
        action = THEIRS
    elif ct == UNCHANGED:
        action = OURS
    else:
        action = BOTH
    fp = FilePreview(path, action, co, ct)
    if bo is None or bt is None:
        if action == BOTH:  # git's modify/delete conflict: the merge driver is not called
            fp.action = CONFLICT
            fp.reason = (
                "deleted in ours, changed in theirs" if bo is None else "changed in ours, deleted in theirs"
            )
        return fp
    if not (is_manifest(bo) and is_manifest(bt)):
        if action == BOTH:
            fp.action = CONFLICT
            fp.reason = "changed on both sides, and not a tracked checkpoint on both (git merges it as text)"
        return fp
    ours, theirs = Manifest.from_bytes(bo), Manifest.from_bytes(bt)
    base = Manifest.from_bytes(bb) if bb is not None and is_manifest(bb) else None
    plan = plan_merge(path, base, ours, theirs, cfg, fisher, n_layers=n_layers)
    fp.tensors, fp.unchanged = tensor_rows(plan, base, ours, theirs, cfg, fisher)
    if action == BOTH:
        fp.conflicts = [c.line() for c in plan.conflicts]
        fp.notes = list(plan.notes)
        file_level = [c.reason for c in plan.conflicts if c.tensor is None]
        if plan.conflicts:
            fp.action = CONFLICT
            fp.reason = "; ".join(file_level) if file_level else None
    return fp


# ============================================================================ repository level


def merge_config(repo: Repo, theirs_label: str, commits: tuple[str, str]) -> config.MergeConfig:
    """The configuration a `git merge THEIRS` run now would use (driver.bind_theirs's binding:
    per-model tables name ours and theirs as given)."""
    cfg = config.load_lenient(repo)
    if not isinstance(cfg, config.FailedConfig):
        try:
            config.bind(repo, cfg, ["ours", theirs_label], list(commits))
        except MergeConfigError as e:
            cfg.bind_error = e
    return cfg


def split_range(spec: str) -> tuple[str, str]:
    """`A...B` as (A, B), HEAD where a side is left out (as git)."""
    if "..." not in spec:
        raise ThetaLikeError(f"--merge-preview compares A...B (the branch merged into A is B), not {spec!r}")
    a, b = spec.split("...", 1)
    return a or "HEAD", b or "HEAD"


def preview_merge(
    repo: Repo,
    ours_rev: str,
    theirs_rev: str,
    match: Callable[[str], bool] = lambda p: True,
    *,
    stats: bool = True,
    fetch: Fetch | None = None,
) -> MergePreview:
    """What merging theirs_rev into ours_rev would do to the tracked checkpoints that match."""
    ours_c, theirs_c = resolve_commit(repo, ours_rev), resolve_commit(repo, theirs_rev)
    base_id = repo.git.merge_base(ours_c.id, theirs_c.id)
    if base_id is None:
        raise ThetaLikeError(f"{ours_rev}...{theirs_rev}: no merge base (unrelated histories)")
    revs = {"base": str(base_id), "ours": str(ours_c.id), "theirs": str(theirs_c.id)}
    cfg = merge_config(repo, theirs_rev, (revs["ours"], revs["theirs"]))
    paths = sorted(
        {f.path for rev in (revs["ours"], revs["theirs"]) for f in tracked_files(repo, rev) if match(f.path)}
    )
    files = []
    for path in paths:
        blobs = (
            repo.rev_blob(revs["base"], path),
            repo.rev_blob(revs["ours"], path),
            repo.rev_blob(revs["theirs"], path),
        )
        try:
            fp = preview_file(path, blobs, cfg, RevFisher(repo, path, revs), model_layers(repo, path))
        except (MergeConfigError, ManifestError) as e:
            raise type(e)(f"{path}: {e}") from None
        if fp is not None:
            files.append(fp)
    if stats:
        try:
            compute_stats(files, repo, fetch)
        except ObjectMissingError as e:
            raise ObjectMissingError(f"merge preview: {e}") from None
    return MergePreview(
        ours_rev, theirs_rev, revs["ours"], revs["theirs"], revs["base"], files, stats_computed=stats
    )


def shape_str(shape: tuple[int, ...] | None) -> str:
    return "-" if shape is None else shape_text(shape)
