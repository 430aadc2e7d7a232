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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from git_theta_like.errors import MergeConfigError, ThetaLikeError
from git_theta_like.filters import remember_manifest
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.merge import config
from git_theta_like.merge.execute import build_result, summary
from git_theta_like.merge.plan import Conflict, FisherFiles, Plan, model_layers, plan_merge
from git_theta_like.merge.state import state_file
from git_theta_like.store.atomic import write_atomic

if TYPE_CHECKING:
    pass


def _err(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


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
        cfg.replay = config.replaying(repo, os.environ)
        bind_theirs(repo, cfg)
        plan = plan_merge(
            path,
            base,
            ours,
            theirs,
            cfg,
            FisherFiles(repo, path, theirs_b, ours_b),
            n_layers=model_layers(repo, path),
        )
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
                        "replay": cfg.replay,
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
        data = result.to_bytes()
        write_atomic(ours_path, data)
        remember_manifest(repo, path, data)
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


def bind_theirs(repo: Repo, cfg: config.MergeConfig) -> None:
    """Name the two models of a `git merge` for per-model parameters: ours, and theirs as the
    user named it (git passes it in GITHEAD_<oid>). Tables that name another model are an error
    when a strategy needs them (choose); a replay or a broken configuration binds nothing."""
    heads = {k[len("GITHEAD_") :]: v for k, v in os.environ.items() if k.startswith("GITHEAD_")}
    if cfg.replay is not None or isinstance(cfg, config.FailedConfig) or len(heads) != 1:
        return
    ((oid, label),) = heads.items()
    ours = str(repo.git.head.target) if not repo.git.head_is_unborn else ""
    try:
        config.bind(repo, cfg, ["ours", label], [ours, oid.lower()])
    except MergeConfigError as e:
        cfg.bind_error = e  # raised where a strategy needs the per-model values


def _hint_sharded(repo: Repo, path: str) -> None:
    from git_theta_like.formats.sharded import model_of_shard

    index = model_of_shard(repo, path)
    if index is not None:
        _err(
            f"{path}: a shard of {index}; once git stops, `git theta-like mergetool` merges "
            "the model as a whole (tensors that moved between shards included)"
        )


def print_conflicts(path: str, conflicts: Sequence[Conflict], advice: str) -> None:
    """The conflicts of one file on stderr, one line each, then how to resolve them (`advice`):
    as the merge driver and the octopus strategy report them."""
    n = len(conflicts)
    what = "tensor" if n == 1 else "tensors"
    if all(c.tensor is None for c in conflicts):
        _err(f"{path}: cannot be merged automatically:")
    else:
        _err(f"{path}: {n} {what} cannot be merged automatically:")
    for c in conflicts:
        print(f"    {c.line()}", file=sys.stderr)
    _err(f"{path}: {advice}")
    sys.stderr.flush()


def report_conflicts(plan: Plan) -> None:
    print_conflicts(
        plan.path,
        plan.conflicts,
        f"ours is in the work tree; resolve with `git theta-like mergetool {plan.path}` "
        "(writes the base, ours, theirs and a best-effort merge next to it)",
    )
