"""Merging a sharded Hugging Face checkpoint as one model.

Git merges files one by one. While both sides keep the shard layout that is the same as merging
the model: tensors are matched by name and every strategy works per tensor, so the merge driver
does it shard by shard. When a side moves tensors between shards (re-sharding with another
`max_shard_size`, a tensor added to the last shard), per-file merging breaks down: a shard one
side deleted and the other changed is a modify/delete conflict that git settles without asking
any driver, and a tensor that moved out of a shard looks deleted there.

This module merges the model as a whole, once the merge has stopped (`git theta-like merge` does
it by itself; after a plain `git merge`, `git theta-like mergetool`):

- each side (base, ours, theirs) is read from its commit: the index json and every shard it names;
- tensors are matched by name across all shards and planned with the rules of a single file
  (plan.py: one-sided changes are taken, changes on both sides go to the configured strategy);
- each tensor of the result goes to a shard by the same three-way rule: where theirs put it when
  ours left it where the base had it, else where ours put it (both moved it elsewhere: ours, noted);
- each result shard keeps the file layout of a side's shard of that name when its tensors fit,
  else gets a new safetensors header; merged tensors are stored with deltas against ours, as
  `git add` would;
- the index json gets the result's `weight_map` (and `metadata.total_size`); it is kept byte
  for byte when neither changed, and git's own merge of it is the starting point when it merged.

Shard files the result no longer has are removed. Nothing is written until every tensor is
planned without conflict; a conflict leaves the merge as git left it, with the reasons.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pygit2

from git_theta_like.errors import ManifestError, ShardedMergeError
from git_theta_like.filters import remember_manifest
from git_theta_like.formats.sharded import is_index, read_index
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, TensorEntry, is_manifest
from git_theta_like.merge import config
from git_theta_like.merge.execute import parents, slot_nbytes
from git_theta_like.merge.plan import Conflict, FisherLookup, Plan, Slot, choose_layout, plan_tensor
from git_theta_like.store.atomic import write_atomic


@dataclass
class ModelSide:
    """One side of a sharded model: its index document and the manifests of its shards."""

    label: str  # base | ours | theirs
    rev: str
    index_path: str
    index_bytes: bytes
    doc: dict[str, Any]
    shards: dict[str, Manifest]  # shard path (from the repository root) -> manifest
    where: dict[str, str] = field(default_factory=dict)  # tensor name -> shard path
    tensors: dict[str, TensorEntry] = field(default_factory=dict)

    @property
    def weight_map(self) -> dict[str, str]:
        return dict(self.where)

    def combined(self) -> Manifest:
        """All tensors of all shards as one manifest (the delta parents of the result)."""
        first = next(iter(self.shards.values()))
        return Manifest(
            first.format, first.size, first.skeleton_length, first.skeleton, list(self.tensors.values())
        )


def load_side(repo: Repo, rev: str, index_path: str, label: str) -> ModelSide | None:
    """The model at rev, or None when its index json is not there."""
    data = repo.rev_blob(rev, index_path)
    if data is None:
        return None
    where = f"{index_path} ({label}, {rev[:12]})"
    try:
        doc = json.loads(data)
        weight_map = read_index(data, index_path)
    except (ValueError, TypeError, AttributeError) as e:
        raise ShardedMergeError(f"{where}: not a valid index json: {e}") from None
    if not isinstance(doc, dict) or not weight_map:
        raise ShardedMergeError(f"{where}: the index json has no weight_map")
    side = ModelSide(label, rev, index_path, data, doc, {})
    for shard in sorted(set(weight_map.values())):
        blob = repo.rev_blob(rev, shard)
        if blob is None:
            raise ShardedMergeError(f"{where}: shard {shard} is named in the weight_map but not committed")
        if not is_manifest(blob):
            raise ShardedMergeError(f"{where}: shard {shard} is not tracked by git-theta-like")
        try:
            m = Manifest.from_bytes(blob)
        except ManifestError as e:
            raise ShardedMergeError(f"{where}: shard {shard}: {e}") from None
        side.shards[shard] = m
        for t in m.tensors:
            if t.name in side.tensors:
                raise ShardedMergeError(
                    f"{where}: tensor {t.name!r} is in both {side.where[t.name]} and {shard}"
                )
            side.tensors[t.name] = t
            side.where[t.name] = shard
    missing = sorted(n for n, s in weight_map.items() if side.where.get(n) != s)
    if missing:
        n = missing[0]
        raise ShardedMergeError(
            f"{where}: the weight_map puts {n!r} in {weight_map[n]}, "
            f"but {'it is in ' + side.where[n] if n in side.where else 'no shard holds it'}"
            + (f" ({len(missing) - 1} more like it)" if len(missing) > 1 else "")
        )
    return side


@dataclass
class ModelPlan:
    index_path: str
    shards: list[Plan] = field(default_factory=list)  # one per result shard, by path
    removed: list[str] = field(default_factory=list)  # shard files not in the result
    weight_map: dict[str, str] = field(default_factory=dict)  # tensor -> result shard path
    conflicts: list[Conflict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    doc_side: str = "ours"  # whose index document the result starts from

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.shards:
            for k, v in p.counts().items():
                out[k] = out.get(k, 0) + v
        return out


def _shard_of(name: str, base: ModelSide | None, ours: ModelSide, theirs: ModelSide) -> tuple[str, bool]:
    """The result shard of a tensor, and whether both sides moved it to different shards."""
    sa, st = ours.where.get(name), theirs.where.get(name)
    sb = base.where.get(name) if base is not None else None
    if sa is None or st is None:
        shard = sa or st
        assert shard is not None
        return shard, False
    if sa == st or st == sb:
        return sa, False
    if sa == sb:
        return st, False
    return sa, True


def plan_model(
    base: ModelSide | None, ours: ModelSide, theirs: ModelSide, cfg: config.MergeConfig
) -> ModelPlan:
    """The merge of a sharded model: a Plan per result shard (no tensor data is read)."""
    plan = ModelPlan(ours.index_path)
    a, t = ours.tensors, theirs.tensors
    b = base.tensors if base is not None else {}
    names = list(a) + [n for n in t if n not in a] + [n for n in b if n not in a and n not in t]
    n_layers = config.layer_count(names)
    shard_plans: dict[str, Plan] = {}
    slots: dict[str, dict[str, Slot]] = {}
    moved_both = []
    for name in names:
        if name not in a and name not in t:
            continue  # deleted on both sides
        shard, both = _shard_of(name, base, ours, theirs)
        if both:
            moved_both.append(name)
        sp = shard_plans.get(shard)
        if sp is None:
            om, tm = ours.shards.get(shard), theirs.shards.get(shard)
            bm = base.shards.get(shard) if base is not None else None
            sp = Plan(shard, bm, om or tm, tm or om)  # type: ignore[arg-type]
            sp.n_layers = n_layers  # gradients run over the model's layers, not a shard's
            shard_plans[shard] = sp
        slot = plan_tensor(sp, name, a.get(name), t.get(name), b.get(name), cfg, FisherLookup())
        if isinstance(slot, Conflict):
            plan.conflicts.append(Conflict(f"{name} ({shard})", slot.reason))
        elif slot is not None:
            slots.setdefault(shard, {})[name] = slot
            plan.weight_map[name] = shard
    if moved_both:
        more = f" and {len(moved_both) - 1} more" if len(moved_both) > 1 else ""
        plan.notes.append(
            f"{moved_both[0]!r}{more} moved to different shards on both sides: ours's shard is kept"
        )
    if plan.conflicts:
        return plan
    sides = [s for s in (base, ours, theirs) if s is not None]
    previous = parents(ours.combined(), theirs.combined(), base.combined() if base is not None else None)
    for shard in sorted(slots):
        sp = shard_plans[shard]
        choose_layout(sp, slots[shard], sp.base, sp.ours, sp.theirs)
        sp.previous = previous
        if sp.conflicts:
            plan.conflicts += [Conflict(c.tensor or shard, c.reason) for c in sp.conflicts]
        plan.shards.append(sp)
    kept = set(slots)
    plan.removed = sorted({s for side in sides for s in side.shards} - kept)
    if base is not None and ours.weight_map == base.weight_map and theirs.weight_map != base.weight_map:
        plan.doc_side = "theirs"
    return plan


def index_document(plan: ModelPlan, start: bytes, sizes: dict[str, int]) -> bytes:
    """The result's index json: `start` (a side's, or git's merge of them) with the result's
    weight_map and total size; `start` itself when those are unchanged."""
    doc = json.loads(start)
    base_dir = posixpath.dirname(plan.index_path)
    wm = {n: posixpath.relpath(p, base_dir) if base_dir else p for n, p in sorted(plan.weight_map.items())}
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else None
    total = sum(sizes.values())
    same_total = meta is None or "total_size" not in meta or meta["total_size"] == total
    if doc.get("weight_map") == wm and same_total:
        return start
    doc["weight_map"] = wm
    if meta is not None and "total_size" in meta:
        meta["total_size"] = total
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


# ============================================================================ in a stopped merge


def merge_revs(repo: Repo) -> tuple[str | None, str, str]:
    """(base, ours, theirs) commits of the merge in progress: `git merge` (MERGE_HEAD, base the
    merge base), cherry-pick and rebase (CHERRY_PICK_HEAD / REBASE_HEAD, base its parent)."""
    ours = str(repo.git.head.target)
    for ref in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REBASE_HEAD"):
        f = repo.git_dir / ref
        if not f.is_file():
            continue
        theirs = f.read_text().split()[0]
        commit = repo.git.get(theirs)
        if not isinstance(commit, pygit2.Commit):
            raise ShardedMergeError(f"{ref} names {theirs}, which is not a commit")
        if ref == "MERGE_HEAD":
            mb = repo.git.merge_base(ours, theirs)
            base = str(mb) if mb is not None else None
        else:
            base = str(commit.parent_ids[0]) if commit.parent_ids else None
        return base, ours, theirs
    raise ShardedMergeError("no merge in progress (no MERGE_HEAD, CHERRY_PICK_HEAD or REBASE_HEAD)")


def in_merge(repo: Repo) -> bool:
    return any((repo.git_dir / r).is_file() for r in ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REBASE_HEAD"))


def unmerged_paths(repo: Repo) -> set[str]:
    index = repo.git.index
    index.read(False)
    out: set[str] = set()
    if index.conflicts is not None:
        for entries in index.conflicts:
            out.update(e.path for e in entries if e is not None)
    return out


def conflicted_models(repo: Repo, revs: tuple[str | None, str, str]) -> dict[str, set[str]]:
    """Index json paths (on any side) whose json or one of whose shards is unmerged, each with
    the shard paths it names on any side."""
    from git_theta_like.gitio.scan import walk_tree

    unmerged = unmerged_paths(repo)
    if not unmerged:
        return {}
    shards: dict[str, set[str]] = {}
    for rev in revs:
        if rev is None:
            continue
        tree = repo.git.get(rev).peel(pygit2.Commit).tree  # type: ignore[union-attr]
        for path, oid in walk_tree(tree):
            if not is_index(path):
                continue
            named = shards.setdefault(path, set())
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                named.update(read_index(repo.blob(oid) or b"", path).values())
    return {p: named for p, named in sorted(shards.items()) if p in unmerged or named & unmerged}


def _config(repo: Repo, plan_paths: list[str], env: dict[str, str] | None) -> config.MergeConfig:
    """The environment's overrides, else those the merge driver saved for one of the shards."""
    from git_theta_like.merge.state import state_file

    merged = dict(os.environ if env is None else env)
    if not any(k in merged for k in (config.ENV_STRATEGY, config.ENV_SET)):
        for p in plan_paths:
            state = state_file(repo, p)
            if state.exists():
                try:
                    merged.update(json.loads(state.read_text()).get("overrides", {}))
                except (ValueError, AttributeError):
                    continue
                break
    cfg = config.load_lenient(repo, env=merged)
    cfg.replay = config.replaying(repo, merged)  # git stopped: its state says merge or replay
    config.bind_stopped_merge(repo, cfg)
    return cfg


def resolve_models(
    repo: Repo, only: list[str] | None = None, env: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """Merge, as whole models, the sharded models the stopped merge left conflicted (all of them,
    or those whose index json or a shard is in `only`). Returns (lines to show, index paths
    still conflicted)."""
    revs = merge_revs(repo)
    lines: list[str] = []
    failed: list[str] = []
    for index_path, shards in conflicted_models(repo, revs).items():
        if only is not None and index_path not in only and not shards & set(only):
            continue
        try:
            lines += list(_resolve_model(repo, index_path, revs, env))
        except ShardedMergeError as e:
            lines.append(f"{index_path}: not merged as one model: {e}")
            failed.append(index_path)
    return lines, failed


def _resolve_model(
    repo: Repo, index_path: str, revs: tuple[str | None, str, str], env: dict[str, str] | None
) -> Iterator[str]:
    from git_theta_like.merge.execute import build_result
    from git_theta_like.merge.state import cleanup

    base_rev, ours_rev, theirs_rev = revs
    base = load_side(repo, base_rev, index_path, "base") if base_rev is not None else None
    ours = load_side(repo, ours_rev, index_path, "ours")
    theirs = load_side(repo, theirs_rev, index_path, "theirs")
    if ours is None or theirs is None:
        gone = "ours" if ours is None else "theirs"
        raise ShardedMergeError(f"the model is deleted in {gone}; resolve it with git rm or git checkout")
    sides = [s for s in (base, ours, theirs) if s is not None]
    all_shards = sorted({s for side in sides for s in side.shards})
    cfg = _config(repo, all_shards, env)
    plan = plan_model(base, ours, theirs, cfg)
    if plan.conflicts:
        shards = " ".join(sorted(unmerged_paths(repo) & set(all_shards)))
        raise ShardedMergeError(
            f"{len(plan.conflicts)} tensor(s) cannot be merged automatically:\n"
            + "\n".join(f"    {c.line()}" for c in plan.conflicts)
            + f"\n  the model's files are as git's merge left them ({shards or 'see git status'})"
        )
    root = repo.workdir
    if root is None:
        raise ShardedMergeError("merging needs a repository with a work tree")
    unmerged = unmerged_paths(repo)
    staged: list[tuple[str, str]] = []  # (path, blob id) to stage
    sizes: dict[str, int] = {}
    device = ""
    for sp in plan.shards:
        sizes.update({s.name: slot_nbytes(s) for s in sp.slots})
        current = repo.index_blob(sp.path) if sp.path not in unmerged else None
        if current is not None and is_manifest(current) and _same_result(current, sp):
            continue  # git merged this shard already, to the same tensors
        result, dev = build_result(sp, repo, cfg)
        device = device or dev
        data = result.to_bytes()
        remember_manifest(repo, sp.path, data)
        staged.append((sp.path, str(repo.git.create_blob(data))))
    start = {"ours": ours, "theirs": theirs}[plan.doc_side].index_bytes
    if index_path not in unmerged and (merged_doc := repo.index_blob(index_path)) is not None:
        start = merged_doc  # git merged the json (e.g. both sides' metadata): start from that
    try:
        doc = index_document(plan, start, sizes)
    except (ValueError, TypeError, AttributeError):
        doc = index_document(plan, {"ours": ours, "theirs": theirs}[plan.doc_side].index_bytes, sizes)
    # everything is computed and stored: now change the index and the work tree
    for path in plan.removed:
        subprocess.run(["git", "update-index", "--force-remove", "--", path], cwd=root, check=True)
        if (root / path).is_file():
            (root / path).unlink()
    for path, oid in staged:
        subprocess.run(
            ["git", "update-index", "--add", "--cacheinfo", f"100644,{oid},{path}"], cwd=root, check=True
        )
    if staged:
        subprocess.run(
            ["git", "checkout", "--", *[p for p, _ in staged]], cwd=root, check=True, capture_output=True
        )
    write_atomic(root / index_path, doc)
    subprocess.run(["git", "add", "--", index_path], cwd=root, check=True)
    for path in all_shards:
        cleanup(repo, path)
    yield _summary(plan, len(staged), device)
    for note in plan.notes:
        yield f"{index_path}: note: {note}"


def _same_result(current: bytes, sp: Plan) -> bool:
    try:
        m = Manifest.from_bytes(current)
    except ManifestError:
        return False
    if [t.name for t in m.tensors] != [s.name for s in sp.slots]:
        return False
    for s, t in zip(sp.slots, m.tensors, strict=True):
        if s.job is None and s.raw != t.obj.raw:
            return False
        if s.job is not None and dict(t.obj.extra).get("merge") != s.job.choice.strategy.name:
            return False  # git took one side's version where the model merges both
    return True


def _summary(plan: ModelPlan, written: int, device: str) -> str:
    from git_theta_like.merge.execute import count_parts

    layout = f"{len(plan.shards)} shard(s)"
    if plan.removed:
        layout += f", {len(plan.removed)} shard file(s) removed"
    where = f" on {device}" if device else ""
    return (
        f"{plan.index_path}: merged as one model{where}: {'; '.join(count_parts(plan.counts()))}; "
        f"{layout} ({written} written, index json from {plan.doc_side})"
    )
