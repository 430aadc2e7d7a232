"""The merge driver: `git-theta-like merge-driver %O %A %B %P` (`merge.theta-like.driver`).

Git hands it three files holding the base, ours and theirs manifests (the cleaned content)
and the path. It plans the merge per tensor (plan.py), computes what changed on both sides
with the configured strategies (one tensor at a time, in torch, on the chosen device), stores
the result through the clean path and writes the merged manifest into %A. Exit 0: merged.
Exit 1: conflicts; %A is left as ours, each conflicting tensor is named on stderr with the
reason, and `git theta-like mergetool PATH` helps resolve them. Files that are not manifests
are merged as text by `git merge-file`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from git_theta_like.errors import ManifestError, ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, TensorEntry, is_manifest
from git_theta_like.merge import config
from git_theta_like.merge.build import assemble, ensure_local, needed_objects, store_result
from git_theta_like.merge.plan import FisherLookup, Job, Plan, fisher_path, plan_merge

if TYPE_CHECKING:
    import torch

Buffer = bytes | bytearray | memoryview
THEIRS_REFS = ("MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "REBASE_HEAD")


def _err(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


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


def state_file(repo: Repo, path: str) -> Path:
    return repo.git_dir / "theta-like" / "merge" / (urllib.parse.quote(path, safe="") + ".json")


def make_compute(cfg: config.MergeConfig) -> tuple[Callable[[Job, list[Buffer]], Buffer], torch.device]:
    from git_theta_like.merge import compute

    device = compute.resolve_device(cfg.device)

    def run(job: Job, data: list[Buffer]) -> Buffer:
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
        )

    return run, device


def build_result(plan: Plan, repo: Repo, cfg: config.MergeConfig) -> tuple[Manifest, str]:
    """The merged manifest of a conflict-free plan (objects stored), and the device used."""
    if plan.whole is not None:
        return plan.whole, ""
    if not plan.needs_bytes():
        return assemble(plan), ""
    ensure_local(repo, needed_objects(plan))
    compute, device = make_compute(cfg) if plan.jobs else (_no_compute, None)
    return store_result(plan, repo, compute), str(device or "")


def _no_compute(job: Job, data: list[Buffer]) -> Buffer:  # pragma: no cover - no jobs, never called
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
        parts.append(f"merged {sum(merged.values())} tensors ({detail})")
    if chosen:
        parts.append(", ".join(f"{v} by strategy {k.split(':')[1]}" for k, v in sorted(chosen.items())))
    for side in ("theirs", "ours", "both"):
        if counts.get(side):
            label = {"theirs": "from theirs", "ours": "from ours", "both": "unchanged or changed alike"}[side]
            parts.append(f"{counts[side]} {label}")
    return parts


def _merge_file(base: str, ours: str, theirs: str, path: str) -> int:
    """Not manifests: git's own text merge, result in %A."""
    r = subprocess.run(
        [
            "git",
            "merge-file",
            "-L",
            f"{path} (ours)",
            "-L",
            f"{path} (base)",
            "-L",
            f"{path} (theirs)",
            ours,
            base,
            theirs,
        ]
    )
    return 0 if r.returncode == 0 else 1


def main(base_path: str, ours_path: str, theirs_path: str, path: str) -> int:
    started = time.perf_counter()
    try:
        ours_b, theirs_b = Path(ours_path).read_bytes(), Path(theirs_path).read_bytes()
        base_b = Path(base_path).read_bytes() if os.path.exists(base_path) else b""
        if not (is_manifest(ours_b) and is_manifest(theirs_b)):
            return _merge_file(base_path, ours_path, theirs_path, path)
        ours, theirs = Manifest.from_bytes(ours_b), Manifest.from_bytes(theirs_b)
        base = Manifest.from_bytes(base_b) if is_manifest(base_b) else None
        repo = Repo(".")
        cfg = config.load_lenient(repo)  # a bad .theta-like.toml only matters where a strategy does
        plan = plan_merge(path, base, ours, theirs, cfg, FisherFiles(repo, path, theirs_b, ours_b))
        state = state_file(repo, path)
        if plan.conflicts:
            report_conflicts(plan)
            _hint_sharded(repo, path)
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(
                json.dumps(
                    {
                        "path": path,
                        "conflicts": [c.line() for c in plan.conflicts],
                        "overrides": {
                            k: os.environ[k]
                            for k in (
                                config.ENV_STRATEGY,
                                config.ENV_SET,
                                config.ENV_DEVICE,
                                config.ENV_PRECISION,
                            )
                            if k in os.environ
                        },
                    },
                    indent=1,
                )
            )
            return 1
        result, device = build_result(plan, repo, cfg)
        for note in plan.notes:
            _err(f"{path}: note: {note}")
        tmp = Path(ours_path + ".gtl-tmp")
        tmp.write_bytes(result.to_bytes())
        os.replace(tmp, ours_path)
        if state.exists():
            state.unlink()
        if plan.whole is None:
            _err(summary(plan, device, time.perf_counter() - started))
        return 0
    except ThetaLikeError as e:
        _err(f"{path}: merge failed: {e}")
        return 2
    except Exception as e:  # noqa: BLE001 - any failure is a conflict, never a corrupt result
        _err(f"{path}: merge failed (internal error): {e!r}\n{traceback.format_exc()}")
        return 2


def _hint_sharded(repo: Repo, path: str) -> None:
    from git_theta_like.merge.sharded import model_of_shard

    index = model_of_shard(repo, path)
    if index is not None:
        _err(
            f"{path}: a shard of {index}; once git stops, `git theta-like mergetool` merges "
            "the model as a whole (tensors that moved between shards included)"
        )


def report_conflicts(plan: Plan) -> None:
    n = len(plan.conflicts)
    what = "tensor" if n == 1 else "tensors"
    if all(c.tensor is None for c in plan.conflicts):
        _err(f"{plan.path}: cannot be merged automatically:")
    else:
        _err(f"{plan.path}: {n} {what} cannot be merged automatically:")
    for c in plan.conflicts:
        print(f"    {c.line()}", file=sys.stderr)
    _err(
        f"{plan.path}: ours is in the work tree; resolve with `git theta-like mergetool {plan.path}` "
        "(writes the base, ours, theirs and a best-effort merge next to it)"
    )
    sys.stderr.flush()
