"""The three-way plan of a checkpoint merge, from the three manifests alone (no tensor data).

Per tensor (matched by name), with `same` meaning equal dtype, shape and raw content:

- ours same as theirs -> keep it (also: deleted on both sides -> deleted);
- ours same as base -> take theirs (their change, addition or deletion);
- theirs same as base -> keep ours;
- otherwise changed on both sides -> the configured strategy, unless that cannot work: shape
  or dtype differ, deleted on one side and changed on the other, a non-float tensor with an
  arithmetic strategy, a task-vector strategy without the tensor in the base, fisher without
  Fisher tensors. Those are conflicts, each with its reason.

Then the layout: the result is written in ours's file layout (skeleton and offsets) when its
tensors fit it, else in theirs's; a safetensors header is written anew when neither fits
(tensors added or removed on both sides).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from git_theta_like.errors import ManifestError
from git_theta_like.filters.engine import WHOLE
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, TensorEntry, is_manifest
from git_theta_like.merge.compute import TORCH_DTYPES
from git_theta_like.merge.config import Choice, MergeConfig
from git_theta_like.merge.strategies.basic import Average

MERGEABLE = frozenset(TORCH_DTYPES)  # float dtypes strategies compute on
FISHER_INFIX = ".fisher"


def shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


@dataclass(frozen=True)
class Conflict:
    tensor: str | None  # None: the file as a whole
    reason: str

    def line(self) -> str:
        return f"{self.tensor}: {self.reason}" if self.tensor is not None else f"(file): {self.reason}"


@dataclass
class Job:
    """A tensor changed on both sides, to be computed by a strategy."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    choice: Choice
    base: TensorEntry | None
    ours: TensorEntry
    theirs: TensorEntry
    fisher: tuple[TensorEntry, TensorEntry] | None = None


@dataclass
class Slot:
    """One tensor of the result."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    side: str  # ours, theirs, base, both (unchanged or the same change), merged
    entry: TensorEntry | None = None  # the version taken as it is
    job: Job | None = None  # or: computed by a strategy
    choice: Choice | None = None  # a strategy chose it (changed on both sides)

    @property
    def raw(self) -> str | None:
        return self.entry.obj.raw if self.entry is not None else None


@dataclass
class Plan:
    path: str
    base: Manifest | None
    ours: Manifest
    theirs: Manifest
    whole: Manifest | None = None  # the result is exactly this manifest
    slots: list[Slot] = field(default_factory=list)  # in the result's file order
    layout: Manifest | None = None  # whose skeleton and offsets the result uses
    synthesize: bool = False  # write a new safetensors header instead
    conflicts: list[Conflict] = field(default_factory=list)
    fallbacks: list[Conflict] = field(default_factory=list)  # conflicts resolved as ours
    notes: list[str] = field(default_factory=list)
    previous: Manifest | None = None  # delta parents for clean (default: build.parents of the three)

    @property
    def jobs(self) -> list[Job]:
        return [s.job for s in self.slots if s.job is not None]

    @property
    def format(self) -> str:
        return self.ours.format

    def needs_bytes(self) -> bool:
        """Whether the result has content no existing object holds (merged tensors, a new
        header, zip CRCs to update) and must be streamed through clean."""
        if self.whole is not None:
            return False
        if self.synthesize or self.jobs:
            return True
        if self.format == "pytorch":
            assert self.layout is not None
            raws = {t.name: t.obj.raw for t in self.layout.tensors}
            return any(s.raw != raws.get(s.name) for s in self.slots)
        return False

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.slots:
            key = s.side if s.choice is None else f"{s.side}:{s.choice.strategy.name}"
            out[key] = out.get(key, 0) + 1
        return out


class FisherLookup:
    """Where fisher finds the diagonal Fisher tensors of each side (see driver.FisherFiles)."""

    def get(self, side: str, name: str) -> TensorEntry | None:
        return None

    def where(self, side: str) -> str:
        return "no Fisher file"


def fisher_path(path: str) -> str:
    """The documented convention: `dir/model.safetensors` -> `dir/model.fisher.safetensors`."""
    head, slash, base = path.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    name = f"{stem}{FISHER_INFIX}.{ext}" if dot and stem else f"{base}{FISHER_INFIX}"
    return f"{head}{slash}{name}"


def is_fisher_path(path: str) -> bool:
    base = path.rpartition("/")[2]
    return f"{FISHER_INFIX}." in base or base.endswith(FISHER_INFIX)


def _same(x: TensorEntry | None, y: TensorEntry | None) -> bool:
    if x is None or y is None:
        return x is None and y is None
    return (x.dtype, x.shape, x.obj.raw) == (y.dtype, y.shape, y.obj.raw)


def _content_key(m: Manifest) -> tuple[object, ...]:
    return (
        m.format,
        m.size,
        m.skeleton.raw,
        tuple((t.name, t.dtype, t.shape, t.offset, t.length, t.obj.raw) for t in m.tensors),
    )


def _struct(m: Manifest) -> list[tuple[str, str, tuple[int, ...]]]:
    return [(t.name, t.dtype, t.shape) for t in m.tensors]


def _by_name(m: Manifest | None) -> dict[str, TensorEntry] | None:
    """Tensors by name, or None when names repeat (no per-tensor matching then)."""
    if m is None:
        return {}
    out = {t.name: t for t in m.tensors}
    return out if len(out) == len(m.tensors) else None


def plan_merge(
    path: str,
    base: Manifest | None,
    ours: Manifest,
    theirs: Manifest,
    cfg: MergeConfig,
    fisher: FisherLookup | None = None,
    *,
    fallback_ours: bool = False,
) -> Plan:
    """The plan for merging one checkpoint. With fallback_ours, tensor conflicts take ours
    (listed in `fallbacks`) so that a best-effort result can be built (mergetool's MERGED)."""
    plan = Plan(path, base, ours, theirs)
    key_o, key_t = _content_key(ours), _content_key(theirs)
    if key_o == key_t or (base is not None and _content_key(base) == key_t):
        plan.whole = ours
        return plan
    if base is not None and _content_key(base) == key_o:
        plan.whole = theirs
        return plan
    if ours.format != theirs.format:
        plan.conflicts.append(
            Conflict(
                None,
                f"changed on both sides, in different formats (ours {ours.format}, theirs {theirs.format})",
            )
        )
        return plan
    if ours.format == WHOLE:
        plan.conflicts.append(
            Conflict(None, "changed on both sides, and it is stored whole (not a checkpoint format we split)")
        )
        return plan
    if base is None and not is_fisher_path(path):
        # no merge base (unrelated histories, or the file added on both sides): two checkpoints
        # made independently have nothing in common to merge against (Fisher files, which each
        # side adds next to its checkpoint, are averaged: see plan_tensor)
        plan.conflicts.append(
            Conflict(
                None, "added on both sides with different content (there is no merge base to merge from)"
            )
        )
        return plan
    a, t = _by_name(ours), _by_name(theirs)
    b = _by_name(base) if base is not None and base.format == ours.format else {}
    if a is None or t is None or b is None:
        plan.conflicts.append(Conflict(None, "changed on both sides, and tensor names repeat in the file"))
        return plan

    names = list(a) + [n for n in t if n not in a] + [n for n in b if n not in a and n not in t]
    slots: dict[str, Slot] = {}
    for name in names:
        slot = plan_tensor(plan, name, a.get(name), t.get(name), b.get(name), cfg, fisher or FisherLookup())
        if isinstance(slot, Conflict):
            if not fallback_ours:
                plan.conflicts.append(slot)
                continue
            plan.fallbacks.append(slot)
            ae = a.get(name)
            slot = Slot(name, ae.dtype, ae.shape, "ours", ae) if ae is not None else None
        if slot is not None:
            slots[name] = slot
    if plan.conflicts:
        return plan
    choose_layout(plan, slots, base, ours, theirs)
    return plan


def plan_tensor(
    plan: Plan,
    name: str,
    a: TensorEntry | None,
    t: TensorEntry | None,
    b: TensorEntry | None,
    cfg: MergeConfig,
    fisher: FisherLookup,
) -> Slot | Conflict | None:
    """The slot of one tensor (None: not in the result), or why it conflicts."""

    def take(e: TensorEntry | None, side: str) -> Slot | None:
        return Slot(e.name, e.dtype, e.shape, side, e) if e is not None else None

    if _same(a, t):
        return take(a, "both")
    if _same(a, b):
        return take(t, "theirs")
    if _same(t, b):
        return take(a, "ours")
    if a is None:
        return Conflict(name, "deleted in ours, changed in theirs")
    if t is None:
        return Conflict(name, "changed in ours, deleted in theirs")
    added = " (added on both sides)" if b is None else ""
    if a.shape != t.shape:
        return Conflict(
            name, f"shape differs: ours {shape_text(a.shape)}, theirs {shape_text(t.shape)}{added}"
        )
    if a.dtype != t.dtype:
        return Conflict(name, f"dtype differs: ours {a.dtype}, theirs {t.dtype}{added}")
    if cfg.replay is not None and cfg.pick_strategy == "conflict":
        return Conflict(
            name, f"changed on both sides, replaying a {cfg.replay} (theta-like.pickStrategy=conflict)"
        )
    choice = cfg.choose(plan.path, name)
    s = choice.strategy
    via = f"{s.name} (from {choice.source})"
    if s.selects is not None:
        picked = {"ours": a, "theirs": t, "base": b}[s.selects]
        if picked is None:
            return Conflict(
                name, f"added on both sides with different values; {via} needs it in the merge base"
            )
        return Slot(name, picked.dtype, picked.shape, s.selects, picked, choice=choice)
    if a.dtype not in MERGEABLE and not s.bitwise:
        return Conflict(
            name,
            f"{a.dtype} tensor changed on both sides: {via} works on float tensors only "
            "(a rule with strategy ours, theirs or base can choose a version)",
        )
    if s.needs_fisher and is_fisher_path(plan.path):
        # a Fisher file itself: its tensors are merged by plain averaging
        choice = Choice(Average(), f"{choice.source}, averaged: this is a Fisher file")
        s = choice.strategy
    if s.needs_base:
        if b is None:
            return Conflict(
                name, f"added on both sides with different values; {via} needs it in the merge base"
            )
        if (b.dtype, b.shape) != (a.dtype, a.shape):
            return Conflict(
                name,
                f"changed on both sides from a base of another shape or dtype "
                f"({b.dtype}{shape_text(b.shape)}); {via} needs task vectors",
            )
    pair = None
    if s.needs_fisher:
        got = []
        for side in ("ours", "theirs"):
            f = fisher.get(side, name)
            if f is None:
                return Conflict(name, f"{via}: no Fisher tensor for it in {fisher.where(side)} ({side})")
            if f.shape != a.shape or f.dtype not in MERGEABLE:
                return Conflict(
                    name,
                    f"{via}: the Fisher tensor in {fisher.where(side)} is {f.dtype}{shape_text(f.shape)}, "
                    f"the tensor is {a.dtype}{shape_text(a.shape)}",
                )
            got.append(f)
        pair = (got[0], got[1])
    job = Job(name, a.dtype, a.shape, choice, b, a, t, pair)
    return Slot(name, a.dtype, a.shape, "merged", job=job, choice=choice)


def _fits(m: Manifest, slots: dict[str, Slot]) -> bool:
    return len(m.tensors) == len(slots) and all(
        (s := slots.get(t.name)) is not None and (s.dtype, s.shape) == (t.dtype, t.shape) for t in m.tensors
    )


def choose_layout(
    plan: Plan, slots: dict[str, Slot], base: Manifest | None, ours: Manifest, theirs: Manifest
) -> None:
    fit_o, fit_t = _fits(ours, slots), _fits(theirs, slots)
    base_same_as_ours = (
        base is not None
        and base.format == ours.format
        and _struct(base) == _struct(ours)
        and base.skeleton.raw == ours.skeleton.raw
    )
    layout: Manifest | None
    if fit_o and fit_t:
        layout = theirs if base_same_as_ours else ours
        if (
            ours.format == "safetensors"
            and not base_same_as_ours
            and ours.skeleton.raw != theirs.skeleton.raw
            and base is not None
            and base.skeleton.raw != theirs.skeleton.raw
        ):
            plan.notes.append("the safetensors header (metadata) changed on both sides: ours is kept")
    elif fit_o:
        layout = ours
    elif fit_t:
        layout = theirs
    else:
        layout = None
    if layout is not None:
        plan.layout = layout
        plan.slots = [slots[t.name] for t in layout.tensors]
        return
    if ours.format == "safetensors":
        plan.synthesize = True
        plan.slots = list(slots.values())  # ours's order, then theirs's additions
        return
    plan.conflicts.append(
        Conflict(
            None,
            f"tensors were added, removed or reshaped on both sides, and the structure of a {ours.format} "
            "file cannot be combined",
        )
    )


THEIRS_REFS = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD")


class FisherFiles(FisherLookup):
    """Fisher tensors committed next to the checkpoint (`model.fisher.safetensors`), in ours's
    commit (HEAD) and theirs's (the commit being merged, whose checkpoint is theirs)."""

    def __init__(self, repo: Repo, path: str, theirs_manifest: bytes, ours_manifest: bytes) -> None:
        self.repo = repo
        self.path = fisher_path(path)
        self.checkpoint = path
        self.expect = {"ours": ours_manifest, "theirs": theirs_manifest}
        self._cache: dict[str, tuple[str, dict[str, TensorEntry] | None]] = {}

    def _candidates(self, side: str) -> list[str]:
        if side == "ours":
            return ["HEAD"]
        # `git merge` names the commits being merged in GITHEAD_<oid>; the sequencer writes refs
        heads = [k[len("GITHEAD_") :] for k in os.environ if k.startswith("GITHEAD_")]
        return heads + [r for r in THEIRS_REFS if (self.repo.git_dir / r).is_file()]

    def _load(self, side: str) -> tuple[str, dict[str, TensorEntry] | None]:
        if side in self._cache:
            return self._cache[side]
        found: tuple[str, dict[str, TensorEntry] | None] = (f"{self.path} ({side}: commit not found)", None)
        for rev in self._candidates(side):
            if self.repo.rev_blob(rev, self.checkpoint) != self.expect[side]:
                continue  # not the commit whose checkpoint is being merged
            where = f"{self.path} at {rev[:12]}"
            blob = self.repo.rev_blob(rev, self.path)
            if blob is None:
                found = (f"{where} (no such file)", None)
            elif not is_manifest(blob):
                found = (f"{where} (not tracked by git-theta-like)", None)
            else:
                try:
                    found = (where, {t.name: t for t in Manifest.from_bytes(blob).tensors})
                except ManifestError as e:
                    found = (f"{where} ({e})", None)
            break
        self._cache[side] = found
        return found

    def get(self, side: str, name: str) -> TensorEntry | None:
        tensors = self._load(side)[1]
        return tensors.get(name) if tensors else None

    def where(self, side: str) -> str:
        return self._load(side)[0]
