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
from git_theta_like.merge.config import Choice, MergeConfig, layer_count, layer_t
from git_theta_like.merge.strategies.base import Value
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
    others: tuple[TensorEntry, ...] = ()  # an N-way merge: the models after the second
    per_model: tuple[dict[str, Value], ...] = ()  # per model: its per-model parameter values

    @property
    def models(self) -> tuple[TensorEntry, ...]:
        """Every model's version, ours first (an unchanged head's is the base's)."""
        return (self.ours, self.theirs, *self.others)


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
    n_layers: int = 0  # layers of the model (config.layer_count): where gradients are evaluated
    others: list[Manifest] = field(default_factory=list)  # an N-way merge: the heads after theirs
    labels: list[str] = field(default_factory=lambda: ["ours", "theirs"])  # the models' names
    precision: str = "float32"  # what the jobs compute in (MergeConfig.precision), recorded

    @property
    def heads(self) -> list[Manifest]:
        return [self.ours, self.theirs, *self.others]

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


def tensors_by_name(m: Manifest | None) -> dict[str, TensorEntry] | None:
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
    n_layers: int = 0,
) -> Plan:
    """The plan for merging one checkpoint. With fallback_ours, tensor conflicts take ours
    (listed in `fallbacks`) so that a best-effort result can be built (mergetool's MERGED).
    n_layers: the model's layer count when the file is one shard of it (default: the file's)."""
    plan = Plan(path, base, ours, theirs, precision=cfg.precision)
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
    a, t = tensors_by_name(ours), tensors_by_name(theirs)
    b = tensors_by_name(base) if base is not None and base.format == ours.format else {}
    if a is None or t is None or b is None:
        plan.conflicts.append(Conflict(None, "changed on both sides, and tensor names repeat in the file"))
        return plan

    names = list(a) + [n for n in t if n not in a] + [n for n in b if n not in a and n not in t]
    plan.n_layers = max(n_layers, layer_count(names))
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
    choice = cfg.choose(plan.path, name, layer_t(name, plan.n_layers))
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
    if choice.per_model and (pair is not None or s.bitwise):
        return Conflict(name, f"{via}: per-model parameters do not apply to it")
    job = Job(name, a.dtype, a.shape, choice, b, a, t, pair, per_model=choice.per_model)
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


# ------------------------------------------------------------------ N-way (octopus) merges


def _who(labels: list[str], idx: list[int]) -> str:
    return ", ".join(labels[i] for i in idx)


def plan_many(
    path: str,
    base: Manifest,
    heads: list[Manifest],
    labels: list[str],
    cfg: MergeConfig,
    n_layers: int = 0,
) -> Plan:
    """The plan of an N-way merge of one checkpoint (heads[0] is ours), from the manifests alone.

    Per tensor: unchanged everywhere -> kept; changed in one head, or changed alike in several ->
    that version; changed differently in two or more heads -> the configured strategy over every
    model (`merge_many`), a head that left the tensor unchanged contributing the base's value (a
    task vector of zero), as mergekit does. Conflicts: shapes or dtypes disagree, deleted in one
    head and changed in another, added in some heads with different values, and strategies that
    cannot merge N models (max_models, bitwise, Fisher) or pick one head ("theirs").
    """
    assert len(heads) == len(labels) >= 2
    plan = Plan(
        path, base, heads[0], heads[1], others=list(heads[2:]), labels=list(labels), precision=cfg.precision
    )
    keys = [_content_key(m) for m in heads]
    changed = [i for i, k in enumerate(keys) if k != _content_key(base)]
    if len({keys[i] for i in changed}) <= 1:
        plan.whole = heads[changed[0]] if changed else heads[0]
        return plan
    formats = {m.format for m in heads} | {base.format}
    if len(formats) > 1:
        plan.conflicts.append(
            Conflict(
                None,
                "changed in several heads, in different formats: "
                + ", ".join(f"{lab} {m.format}" for lab, m in zip(labels, heads, strict=True)),
            )
        )
        return plan
    if base.format == WHOLE:
        plan.conflicts.append(
            Conflict(
                None, "changed in several heads, and it is stored whole (not a checkpoint format we split)"
            )
        )
        return plan
    maps = [tensors_by_name(m) for m in heads]
    b = tensors_by_name(base)
    if b is None or any(m is None for m in maps):
        plan.conflicts.append(Conflict(None, "changed in several heads, and tensor names repeat in the file"))
        return plan
    by: list[dict[str, TensorEntry]] = [m for m in maps if m is not None]
    names: list[str] = []
    seen: set[str] = set()
    for m in [*by, b]:
        for n in m:
            if n not in seen:
                seen.add(n)
                names.append(n)
    plan.n_layers = max(n_layers, layer_count(names))
    slots: dict[str, Slot] = {}
    for name in names:
        slot = plan_tensor_many(plan, name, [m.get(name) for m in by], b.get(name), cfg)
        if isinstance(slot, Conflict):
            plan.conflicts.append(slot)
        elif slot is not None:
            slots[name] = slot
    if plan.conflicts:
        return plan
    choose_layout_many(plan, slots, base, heads)
    others = [t for m in heads[1:] for t in m.tensors]
    o = heads[0]
    plan.previous = Manifest(
        o.format, o.size, o.skeleton_length, o.skeleton, [*others, *base.tensors, *o.tensors]
    )
    return plan


def plan_tensor_many(
    plan: Plan, name: str, es: list[TensorEntry | None], b: TensorEntry | None, cfg: MergeConfig
) -> Slot | Conflict | None:
    """One tensor of an N-way merge: its slot (None: not in the result), or why it conflicts."""
    labels = plan.labels
    changed = [i for i, e in enumerate(es) if not _same(e, b)]
    if not changed:
        return Slot(b.name, b.dtype, b.shape, "both", b) if b is not None else None
    first = es[changed[0]]
    if all(_same(es[i], first) for i in changed):
        if first is None:
            return None
        side = "both" if len(changed) > 1 else "ours" if changed[0] == 0 else "theirs"
        return Slot(name, first.dtype, first.shape, side, first)
    gone = [i for i in changed if es[i] is None]
    if gone:
        kept = [i for i in changed if es[i] is not None]
        return Conflict(name, f"deleted in {_who(labels, gone)}, changed in {_who(labels, kept)}")
    present = [e for e in es if e is not None]
    if b is None and len(present) < len(es):
        missing = [i for i, e in enumerate(es) if e is None]
        return Conflict(
            name,
            f"added in {_who(labels, changed)} with different values, not in {_who(labels, missing)} "
            "(there is no base value for the others)",
        )
    models: list[TensorEntry] = [e for e in es if e is not None]
    if len({m.shape for m in models}) > 1:
        return Conflict(
            name,
            "shape differs: "
            + ", ".join(f"{lab} {shape_text(m.shape)}" for lab, m in zip(labels, models, strict=True)),
        )
    if len({m.dtype for m in models}) > 1:
        return Conflict(
            name,
            "dtype differs: " + ", ".join(f"{lab} {m.dtype}" for lab, m in zip(labels, models, strict=True)),
        )
    a = models[0]
    n = len(models)
    choice = cfg.choose(plan.path, name, layer_t(name, plan.n_layers))
    s = choice.strategy
    via = f"{s.name} (from {choice.source})"
    who = f"changed in {_who(labels, changed)}"
    if s.selects == "ours" or (s.selects == "base" and b is not None):
        picked = a if s.selects == "ours" else b
        assert picked is not None
        return Slot(name, picked.dtype, picked.shape, s.selects, picked, choice=choice)
    if s.selects is not None:
        why = "names no head of an N-way merge" if s.selects == "theirs" else "needs it in the merge base"
        return Conflict(name, f"{who}; {via} {why}")
    if s.bitwise or s.needs_fisher or (s.max_models is not None and n > s.max_models):
        most = s.max_models or 2
        return Conflict(
            name,
            f"{who}; {via} merges {most} models, this merge has {n} ({_who(labels, list(range(n)))}): "
            "choose a strategy that merges N models for it",
        )
    if a.dtype not in MERGEABLE:
        return Conflict(
            name,
            f"{a.dtype} tensor {who}: {via} works on float tensors only "
            "(strategy ours or base can choose one)",
        )
    if s.needs_base:
        if b is None:
            return Conflict(
                name, f"added in every head with different values; {via} needs it in the merge base"
            )
        if (b.dtype, b.shape) != (a.dtype, a.shape):
            return Conflict(
                name,
                f"{who} from a base of another shape or dtype ({b.dtype}{shape_text(b.shape)}); "
                f"{via} needs task vectors",
            )
    job = Job(
        name,
        a.dtype,
        a.shape,
        choice,
        b,
        models[0],
        models[1],
        others=tuple(models[2:]),
        per_model=choice.per_model,
    )
    return Slot(name, a.dtype, a.shape, "merged", job=job, choice=choice)


def choose_layout_many(plan: Plan, slots: dict[str, Slot], base: Manifest, heads: list[Manifest]) -> None:
    """The result's layout: of the heads whose tensors fit it, the one that changed the file's
    skeleton (header, metadata) from the base if only one did, else ours (noted when several
    changed it); a new safetensors header when no head fits."""
    fits = [m for m in heads if _fits(m, slots)]
    if fits:
        moved = [m for m in fits if m.skeleton.raw != base.skeleton.raw or _struct(m) != _struct(base)]
        distinct = {m.skeleton.raw for m in moved}
        layout = moved[0] if len(distinct) == 1 else fits[0]
        if len(distinct) > 1 and heads[0].format == "safetensors":
            kept = plan.labels[heads.index(fits[0])]
            plan.notes.append(f"the safetensors header changed in several heads: {kept}'s is kept")
        plan.layout = layout
        plan.slots = [slots[t.name] for t in layout.tensors]
        return
    if heads[0].format == "safetensors":
        plan.synthesize = True
        plan.slots = list(slots.values())
        return
    plan.conflicts.append(
        Conflict(
            None,
            "tensors were added, removed or reshaped in several heads, and the structure of a "
            f"{heads[0].format} file cannot be combined",
        )
    )


THEIRS_REFS = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD")


def model_layers(repo: Repo, path: str) -> int:
    """The layer count of the sharded model whose index json (in the work tree) names path as a
    shard; 0 when path is no shard (then the file's own tensors count)."""
    from git_theta_like.formats.sharded import model_of_shard, read_index

    index = model_of_shard(repo, path)
    if index is None or repo.workdir is None:
        return 0
    try:
        return layer_count(set(read_index((repo.workdir / index).read_bytes(), index)))
    except (OSError, ValueError, TypeError, AttributeError):
        return 0


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
