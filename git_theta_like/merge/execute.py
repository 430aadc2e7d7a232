"""Building the merged checkpoint of a plan and storing it through the normal clean path.

When every tensor of the result is an existing object in an existing layout, the merged
manifest is assembled from the manifests alone: no tensor data is read. Otherwise the merged
file is streamed, one tensor at a time, through `Engine.clean` (so deltas against ours and
deduplication apply exactly as for `git add`): the layout's skeleton pieces, existing tensors
read from the store and merged tensors computed by their strategy, in file order. Memory stays
bounded by a few tensors: a small read-ahead window, one merge at a time.

PyTorch zip files carry a CRC-32 of every storage (data descriptor, central directory, and the
local header for writers that put it there): for tensors whose bytes differ from the layout's,
those fields are recomputed before the bytes around them are streamed. A safetensors header is
written anew when tensors were added or removed on both sides.
"""

from __future__ import annotations

import collections
import os
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING

from git_theta_like.display import counted, printable
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import MergeBuildError
from git_theta_like.formats import ByteReader, safetensors
from git_theta_like.formats.pytorch import zipwrite
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry
from git_theta_like.merge import config
from git_theta_like.merge.plan import Job, Plan, Slot
from git_theta_like.merge.strategies.base import Strategy, Value, format_value
from git_theta_like.progress import Progress
from git_theta_like.store import store_of
from git_theta_like.store.local import LocalStore
from git_theta_like.store.reader import CachedStore
from git_theta_like.threads import reuse_freed_memory

RECIPE_KEYS = ("merge", "merge-params", "merge-models", "merge-per-model", "merge-precision")
# bytes of tensor data read ahead of the one being merged (at least the next tensor): 64 -> 16 MiB
# lowered the driver's peak by ~30 MiB on a 418 MiB BERT merge and cost no time
READ_AHEAD = 16 * 1024 * 1024
CACHE_MIN = 128 * 1024 * 1024  # decoded tensors kept for reuse (CachedStore): at least this,
CACHE_TENSORS = 2  # or this many of the largest tensor
# Buffers of this size and up (whole tensors, the merge's compute blocks) are mapped and unmapped
# rather than kept in the heap: a merge's buffers of many sizes, from the read threads and the
# compute at once, would leave holes there that the next ones do not fit (measured on a 418 MiB
# BERT, two full fine-tunes: driver peak RSS linear 655 -> 596 MiB, task arithmetic 823 -> 710
# MiB, for about 0.1-0.4 s more of page faults in a 3.4 s / 4.5 s merge). Set by build_result,
# which runs in processes of their own (the merge driver, the octopus strategy, merge commands).
MAPPED_FROM = 16 << 20
# (job, its inputs' bytes, an input the result may be written into or None) -> the merged bytes
Compute = Callable[[Job, list[Buffer], bytearray | None], Buffer]

if TYPE_CHECKING:
    import torch


# ------------------------------------------------------------------ recipes


def with_recipe(
    ref: ObjectRef,
    strategy: Strategy,
    models: int = 2,
    per_model: Sequence[Mapping[str, Value]] = (),
    precision: str = "float32",
) -> ObjectRef:
    """The object reference with `merge=<strategy> merge-params=<k:v,...>` fields, and for a
    merge of more than two models `merge-models=<n>`; per-model parameters as
    `merge-per-model=<k>:<v0>/<v1>/...,...` (one value per model, in the order of the merge
    commit's parents; `-` where a model takes the strategy's value); a tensor computed in another
    precision than float32 (the default) `merge-precision=<p>`."""
    extra = [kv for kv in ref.extra if kv[0] not in RECIPE_KEYS]
    extra.append(("merge", strategy.name))
    if params := strategy.recipe():
        extra.append(("merge-params", params))
    if models > 2:
        extra.append(("merge-models", str(models)))
    if any(per_model):
        keys = sorted({k for d in per_model for k in d})
        text = ",".join(
            f"{k}:" + "/".join(format_value(d[k]) if k in d else "-" for d in per_model) for k in keys
        )
        extra.append(("merge-per-model", text))
    if precision != "float32":
        extra.append(("merge-precision", precision))
    return replace(ref, extra=tuple(extra))


def annotate(m: Manifest, plan: Plan) -> Manifest:
    chosen = {s.name: s for s in plan.slots if s.choice is not None}

    def recipe(t: TensorEntry) -> TensorEntry:
        s = chosen[t.name]
        assert s.choice is not None
        job = s.job
        models = len(job.models) if job is not None else len(plan.heads)
        computed = job is not None and not s.choice.strategy.bitwise
        precision = plan.precision if computed else "float32"
        return replace(
            t, obj=with_recipe(t.obj, s.choice.strategy, models, job.per_model if job else (), precision)
        )

    m.tensors = [recipe(t) if t.name in chosen else t for t in m.tensors]
    return m


# ------------------------------------------------------------------ objects


def ensure_local(repo: Repo, refs: Iterable[ObjectRef]) -> int:
    """Make sure the objects (and their delta chains) are in the local store, downloading the
    missing ones from the remote (a fresh clone has only what its checkouts needed).
    Returns how many objects were downloaded."""
    from git_theta_like.lfs import sync

    wanted: dict[str, int] = {}
    for r in refs:
        for oid, size in sync.needed(r):
            wanted.setdefault(oid, size)
    return int(sync.ensure_local(repo, wanted.items(), what="merge"))


def whole_file(plan: Plan) -> bool:
    """Whether the result must be streamed whole: a new header, or zip CRCs to update. Else
    only the merged tensors are streamed (stored), and the manifest is assembled around them."""
    return plan.synthesize or plan.format == "pytorch"


def needed_objects(plan: Plan) -> list[ObjectRef]:
    """Every object that storing the plan's result reads."""
    refs: list[ObjectRef] = []
    whole = whole_file(plan)
    if whole and plan.layout is not None:
        refs.append(plan.layout.skeleton)
    if plan.synthesize:
        refs += [m.skeleton for m in (plan.base, *plan.heads) if m is not None]
    for s in plan.slots:
        if s.entry is not None and whole:
            refs.append(s.entry.obj)
        if s.job is not None:
            j = s.job
            refs += [e.obj for e in j.models]
            if j.base is not None and j.choice.strategy.needs_base:
                refs.append(j.base.obj)
            if j.fisher:
                refs += [j.fisher[0].obj, j.fisher[1].obj]
    return refs


# ------------------------------------------------------------------ streaming


class IterSource:
    """A `readinto` source over an iterator of buffers (ByteReader's input), and a
    BufferSource: a merged tensor computed into a buffer of its own is handed to clean as it is."""

    def __init__(self, parts: Iterator[Buffer]) -> None:
        self._it = parts
        self._cur = memoryview(b"")
        self._pos = 0

    def take(self, n: int) -> bytearray | None:
        """The next buffer, uncopied, when it is a whole bytearray of n bytes and nothing of it
        has been read; else None (and it is read through readinto)."""
        if self._pos < len(self._cur):
            return None
        self._cur = memoryview(b"")
        try:
            nxt = next(self._it)
        except StopIteration:
            return None
        whole = nxt.obj if isinstance(nxt, memoryview) else nxt
        if isinstance(whole, bytearray) and len(whole) == n and memoryview(nxt).nbytes == n:
            return whole
        self._cur, self._pos = memoryview(nxt).cast("B"), 0
        return None

    def readinto(self, buf: memoryview) -> int:
        while self._pos >= len(self._cur):
            self._cur = memoryview(b"")  # let go of the last buffer before the next is made
            try:
                self._cur = memoryview(next(self._it)).cast("B")
            except StopIteration:
                return 0
            self._pos = 0
        n = min(len(buf), len(self._cur) - self._pos)
        buf[:n] = self._cur[self._pos : self._pos + n]
        self._pos += n
        return n


class _Producer:
    """The bytes of each slot in order: existing tensors read ahead on a small pool, merged
    tensors computed one at a time in the consuming thread.

    Once a slot's inputs are in hand, the decoded objects it read (and the delta bases they
    were decoded from) leave the store's cache unless a later slot reads them too; ours stays,
    since clean reads it again as the parent of the result's delta. The cache then holds what
    is still to come rather than the largest tensor's three versions.

    The merged tensor is computed into theirs's buffer (see compute.run's `into`) when nothing
    but this merge holds it: one tensor-sized buffer fewer (on the embedding of a BERT-base
    merge, 94 MiB of the driver's peak)."""

    def __init__(
        self, slots: list[Slot], store: LocalStore, compute: Compute, budget: int = READ_AHEAD
    ) -> None:
        self.slots, self.store, self.compute, self.budget = slots, store, compute, budget
        self.pool = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="gtl-merge-read")
        self.reads: collections.Counter[str] = collections.Counter(
            e.obj.oid for s in slots for e in self._inputs(s)[0] if e is not None
        )

    def _read(self, e: TensorEntry) -> Buffer:
        return self.store.read_raw(e.obj.oid, f"tensor {e.name!r}", e.obj.raw, 0, e.length)

    def _inputs(self, slot: Slot) -> tuple[list[TensorEntry | None], int]:
        if slot.job is None:
            assert slot.entry is not None
            return [slot.entry], slot.entry.length
        j = slot.job
        ins: list[TensorEntry | None] = [j.base if j.choice.strategy.needs_base else None, *j.models]
        if j.fisher:
            ins += [j.fisher[0], j.fisher[1]]
        return ins, sum(e.length for e in ins if e is not None)

    def _release(self, slot: Slot) -> None:
        """slot's inputs are in hand: count their reads done, and drop from the cache what they
        were decoded from (the delta bases; a strategy that needs the base reads it as an input)
        and the inputs themselves, ours excepted (clean reads it once more, as the parent of the
        result's delta); anything a later slot reads stays (see the class)."""
        oids = [e.obj.oid for e in self._inputs(slot)[0] if e is not None]
        self.reads.subtract(oids)
        if not isinstance(self.store, CachedStore):
            return
        keep = {o for o, n in self.reads.items() if n > 0}
        if slot.job is not None:
            ours = slot.job.ours.obj.oid
            if ours not in keep:
                self.store.reader.drop_after(ours, 1)  # clean's read of it as the delta parent
            keep.add(ours)
        self.store.reader.forget(oids, keep)

    def _spare(self, slot: Slot, data: list[Buffer | None]) -> bytearray | None:
        """The last model's decoded buffer, when the result may overwrite it (after _release): a
        bytearray that only `data` holds (the cache let go of it, no read thread has it in hand,
        no other input is the same object) of an object no later slot reads, and not ours."""
        job = slot.job
        assert job is not None
        last = job.models[-1].obj.oid
        if last == job.ours.obj.oid or self.reads[last] > 0:
            return None
        buf = data[len(job.models)]  # data: [base or None, *models, *fisher]
        # references: data's, buf's and getrefcount's own; any other holder (the cache's
        # entry, a read thread decoding against it, a second input) makes it more
        if isinstance(buf, bytearray) and sys.getrefcount(buf) <= 3:
            return buf
        return None

    def __iter__(self) -> Iterator[tuple[Slot, Buffer]]:
        window: collections.deque[tuple[Slot, list[Future[Buffer] | None], int]] = collections.deque()
        ahead = 0
        nxt = 0
        try:
            while True:
                while nxt < len(self.slots) and (not window or ahead < self.budget):
                    slot = self.slots[nxt]
                    nxt += 1
                    ins, cost = self._inputs(slot)
                    futs = [self.pool.submit(self._read, e) if e is not None else None for e in ins]
                    window.append((slot, futs, cost))
                    ahead += cost
                if not window:
                    return
                slot, futs, cost = window.popleft()
                data = [f.result() if f is not None else None for f in futs]
                del futs  # the futures hold the buffers too
                ahead -= cost
                self._release(slot)
                if slot.job is None:
                    yield slot, data[0]  # type: ignore[misc]
                else:
                    spare = self._spare(slot, data)
                    result = self.compute(slot.job, data, spare)  # type: ignore[arg-type]
                    del data, spare
                    yield slot, result
                    del result
        finally:
            for _, futs, _ in window:
                for f in futs:
                    if f is not None:
                        f.cancel()
            self.pool.shutdown(wait=True)


def slot_nbytes(s: Slot) -> int:
    if s.entry is not None:
        return s.entry.length
    assert s.job is not None
    return s.job.ours.length


def _pieces(plan: Plan, store: LocalStore, produced: Iterable[tuple[Slot, Buffer]]) -> Iterator[Buffer]:
    if plan.synthesize:

        def meta_of(m: Manifest, k: str) -> dict[str, str] | None:
            skel = store.read_raw(m.skeleton.oid, f"{k} skeleton", m.skeleton.raw, 0, m.skeleton_length)
            return safetensors.read_metadata(skel)

        heads = [meta_of(m, k) for m, k in zip(plan.heads, plan.labels, strict=True)]
        base_meta = meta_of(plan.base, "base") if plan.base is not None else None
        # the metadata of the first head that changed it (ours's when none did, or no base)
        changed = [h for h in heads if plan.base is None or h != base_meta]
        yield safetensors_header(plan.slots, changed[0] if changed else heads[0])
        for _, data in produced:
            yield data
            del data  # (each buffer is let go of before the next is produced, here and below)
        return
    layout = plan.layout
    assert layout is not None
    skel_ref = layout.skeleton
    skel: bytearray | memoryview = store.read_raw(
        skel_ref.oid, "skeleton", skel_ref.raw, 0, layout.skeleton_length
    )
    patcher = None
    if plan.format == "pytorch":
        skel = bytearray(skel)
        patcher = zipwrite.ZipCrcPatcher(layout, skel)
    view = memoryview(skel)
    pos = spos = 0
    for i, ((slot, data), t) in enumerate(zip(produced, layout.tensors, strict=True)):
        if len(data) != t.length:
            raise MergeBuildError(f"tensor {slot.name!r}: {len(data)} bytes where the layout has {t.length}")
        if patcher is not None and slot.raw != t.obj.raw:
            patcher.patch(i, zlib.crc32(data))
        gap = t.offset - pos
        yield view[spos : spos + gap]
        spos += gap
        yield data
        del data
        pos = t.offset + t.length
    yield view[spos:]


def assemble(plan: Plan) -> Manifest:
    """The merged manifest from existing objects only (the layout's skeleton, unchanged)."""
    layout = plan.layout
    assert layout is not None and not plan.synthesize
    tensors = []
    for s, t in zip(plan.slots, layout.tensors, strict=True):
        assert s.entry is not None and s.job is None
        tensors.append(TensorEntry(s.name, s.dtype, s.shape, t.offset, t.length, s.entry.obj))
    m = Manifest(layout.format, layout.size, layout.skeleton_length, layout.skeleton, tensors)
    m.validate()
    return annotate(m, plan)


def parents(ours: Manifest, theirs: Manifest, base: Manifest | None) -> Manifest:
    """What clean should know about a merge result's previous versions: every tensor of theirs
    and the base (reused as they are when the result holds them) and ours, last, so that
    changed tensors are stored as deltas against ours."""
    tensors = [*theirs.tensors, *(base.tensors if base else []), *ours.tensors]
    return Manifest(ours.format, ours.size, ours.skeleton_length, ours.skeleton, tensors)


def store_result(plan: Plan, repo: Repo, compute: Compute, device: str = "") -> Manifest:
    """Store the plan's result through Engine.clean; returns its manifest, recipes recorded.

    The whole file is streamed when its header or zip records change; otherwise only the merged
    tensors are, as a small safetensors file (so clean stores them exactly as `git add` would:
    deltas against ours, deduplicated) and the manifest is assembled around them: unchanged and
    one-sided tensors are not read at all. (That small file's header becomes an unreferenced
    object of a few hundred bytes, which `git theta-like gc` removes.)
    """
    from git_theta_like.filters import engine_for

    whole = whole_file(plan)
    slots = plan.slots if whole else [s for s in plan.slots if s.job is not None]
    warnings: list[str] = []
    largest = max([s.entry.length if s.entry else s.job.ours.length if s.job else 0 for s in slots] or [0])
    store = CachedStore(store_of(repo), max(CACHE_MIN, CACHE_TENSORS * largest))
    with engine_for(repo) as engine:
        engine.warn = warnings.append
        engine.store = store  # clean reads ours again as the delta parent: from the cache
        jobs = [s for s in slots if s.job is not None]
        progress = Progress(
            f"Merging {printable(plan.path)}",
            unit="tensors",
            total=len(jobs),
            total_bytes=sum(slot_nbytes(s) for s in jobs),
            detail=f"on {device}" if device else "",
            delay=1.0,
        )
        produced = _counted(_Producer(slots, store, compute), progress)
        pieces = _pieces(plan, store, produced) if whole else _merged_only(slots, produced)
        data = engine.clean(
            ByteReader(IterSource(pieces)),
            previous=plan.previous or parents(plan.ours, plan.theirs, plan.base),
            path=plan.path,
        )
    m = Manifest.from_bytes(data)
    fmt = plan.format if whole else "safetensors"
    if m.format != fmt or [t.name for t in m.tensors] != [s.name for s in slots]:
        raise MergeBuildError(
            f"{plan.path}: the merged tensors did not split as {fmt} "
            f"({'; '.join(warnings) or 'tensors differ'})"
        )
    if whole:
        return annotate(m, plan)
    layout = plan.layout
    assert layout is not None
    merged = {t.name: t.obj for t in m.tensors}
    tensors = []
    for s, t in zip(plan.slots, layout.tensors, strict=True):
        obj = merged[s.name] if s.job is not None else s.entry.obj  # type: ignore[union-attr]
        tensors.append(TensorEntry(s.name, s.dtype, s.shape, t.offset, t.length, obj))
    result = Manifest(layout.format, layout.size, layout.skeleton_length, layout.skeleton, tensors)
    result.validate()
    return annotate(result, plan)


def _counted(produced: Iterable[tuple[Slot, Buffer]], progress: Progress) -> Iterator[tuple[Slot, Buffer]]:
    """produced, each merged tensor counted on the progress line (tensors merged of N, device)."""
    try:
        for slot, data in produced:
            if slot.job is not None:
                progress.step(len(data))
            yield slot, data
            del data
    finally:
        progress.finish()


def _merged_only(slots: list[Slot], produced: Iterable[tuple[Slot, Buffer]]) -> Iterator[Buffer]:
    yield safetensors_header(slots, None)
    for _, data in produced:
        yield data
        del data


def make_compute(cfg: config.MergeConfig, jobs: list[Job]) -> tuple[Compute, torch.device | None]:
    """The per-job compute function; torch (and a device) only when a job computes in torch."""
    from git_theta_like.merge import compute

    torch_jobs = any(not j.choice.strategy.bitwise for j in jobs)
    device = compute.resolve_device(cfg.device) if torch_jobs else None

    def run(job: Job, data: list[Buffer], into: bytearray | None = None) -> Buffer:
        if job.others or job.per_model:
            n = len(job.models)
            return compute.run_many(
                job.choice.strategy,
                job.dtype,
                job.shape,
                data[0],
                data[1 : 1 + n],
                name=job.name,
                per_model=job.per_model,
                device=device,
                precision=cfg.precision,
                into=into,
            )
        base, ours, theirs = data[0], data[1], data[2]
        fisher = None
        if job.fisher is not None:
            fisher = ((data[3], job.fisher[0].dtype), (data[4], job.fisher[1].dtype))
        return compute.run(
            job.choice.strategy,
            job.dtype,
            job.shape,
            base,
            ours,
            theirs,
            name=job.name,
            fisher=fisher,
            device=device,
            precision=cfg.precision,
            into=into,
        )

    return run, device


def build_result(plan: Plan, repo: Repo, cfg: config.MergeConfig) -> tuple[Manifest, str]:
    """The merged manifest of a conflict-free plan (objects stored), and the device used."""
    if plan.whole is not None:
        return plan.whole, ""
    if not plan.needs_bytes():
        return assemble(plan), ""
    ensure_local(repo, needed_objects(plan))
    reuse_freed_memory(MAPPED_FROM)
    compute, device = make_compute(cfg, plan.jobs) if plan.jobs else (_no_compute, None)
    return store_result(plan, repo, compute, str(device or "")), str(device or "")


def _no_compute(job: Job, data: list[Buffer], into: bytearray | None) -> Buffer:  # pragma: no cover
    # (no jobs: never called)
    raise AssertionError(job.name)


def summary(plan: Plan, device: str, seconds: float) -> str:
    where = f" on {device}" if device else ""
    return f"{plan.path}: {'; '.join(count_parts(plan.counts()))}{where} in {seconds:.1f} s"


def count_parts(counts: dict[str, int]) -> list[str]:
    """What a plan's slot counts (Plan.counts) say, for people: merged, chosen, taken."""
    merged = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("merged:")}
    chosen = {k: v for k, v in counts.items() if ":" in k and not k.startswith("merged:")}
    parts = []
    if merged:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(merged.items()))
        parts.append(f"merged {counted(sum(merged.values()), 'tensor')} ({detail})")
    if chosen:
        parts.append(", ".join(f"{v} by strategy {k.split(':')[1]}" for k, v in sorted(chosen.items())))
    for side in ("theirs", "ours", "both"):
        if counts.get(side):
            label = {"theirs": "from theirs", "ours": "from ours", "both": "unchanged or changed alike"}[side]
            parts.append(f"{counts[side]} {label}")
    return parts


def safetensors_header(slots: list[Slot], metadata: dict[str, str] | None) -> bytes:
    """The safetensors header of a merged file holding slots, in order."""
    return safetensors.write_header([(s.name, s.dtype, s.shape, slot_nbytes(s)) for s in slots], metadata)
