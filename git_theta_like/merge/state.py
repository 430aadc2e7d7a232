"""What a merge in progress keeps on disk per checkpoint: its state file (the plan mergetool
resumes from) and the BASE / OURS / THEIRS / MERGED helper files mergetool writes; `cleanup`
removes both."""

from __future__ import annotations

import shutil
import urllib.parse
from pathlib import Path

from git_theta_like.errors import MergeToolError
from git_theta_like.gitio.repo import Repo


def state_file(repo: Repo, path: str) -> Path:
    return repo.git_dir / "theta-like" / "merge" / (urllib.parse.quote(path, safe="") + ".json")


LABELS = ("BASE", "OURS", "THEIRS", "MERGED")


def helper_path(path: str, label: str) -> str:
    """`dir/model.safetensors` -> `dir/model.OURS.safetensors`."""
    head, slash, base = path.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    name = f"{stem}.{label}.{ext}" if dot and stem else f"{base}.{label}"
    return f"{head}{slash}{name}"


def workdir(repo: Repo) -> Path:
    if repo.workdir is None:
        raise MergeToolError("mergetool needs a repository with a work tree")
    return repo.workdir


def cleanup(repo: Repo, path: str) -> None:
    root = workdir(repo)
    for label in LABELS:
        p = root / helper_path(path, label)
        if p.exists():
            p.unlink()
    state = state_file(repo, path)
    if state.exists():
        state.unlink()
    d = state.parent
    if d.exists() and not any(d.iterdir()):
        shutil.rmtree(d, ignore_errors=True)
