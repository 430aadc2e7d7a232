"""The filters: the clean/smudge `Engine`, the long-running filter process git talks to, and the
checkout of checkpoints left as manifests in the working tree.

Public for the rooms above: `engine_for(repo)` (an Engine configured from git config and the
environment), `staged_manifest(repo, path)` (the natural delta parent of what is cleaned) and
`staged_previous(repo, path)` (that, or a staged git-lfs pointer clean keeps for unchanged content).
May import lfs, store, formats, codecs, gitio and the bottom layer."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from git_theta_like.errors import ManifestError
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.pointer import parse_pointer
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.store import register_repo

if TYPE_CHECKING:
    from git_theta_like.filters.engine import Engine

__all__ = [
    "engine_for",
    "recent_manifests",
    "remember_manifest",
    "staged_previous",
    "staged_manifest",
]


def staged_previous(repo: Repo, path: str) -> tuple[Manifest | None, bytes | None]:
    """What clean builds on, from the staged blob of path (read once): its manifest (the natural
    delta parent), or the blob itself when it is a git-lfs pointer (the path was plain git-lfs
    before it was tracked; clean keeps it for unchanged content)."""
    blob = repo.index_blob(path)
    if blob is None:
        return None, None
    if is_manifest(blob):
        try:
            return Manifest.from_bytes(blob), None
        except ManifestError:
            return None, None
    return None, (blob if parse_pointer(blob) is not None else None)


def staged_manifest(repo: Repo, path: str) -> Manifest | None:
    """The staged manifest of path, the natural parent of what is being cleaned."""
    return staged_previous(repo, path)[0]


def engine_for(repo: Repo) -> Engine:
    """An Engine configured from git config (theta-like.*) and the environment. The engine's
    module (numpy, the codecs) loads here, when one is first needed: the post-merge hook and the
    other commands that find nothing to write never pay for it."""
    from git_theta_like.filters.engine import DEFAULT_CHAIN_RATIO, DEFAULT_MAX_CHAIN, Engine

    lora = None
    if adapter := os.environ.get("GIT_THETA_LIKE_LORA"):
        from git_theta_like.filters.lora import load_adapter

        lora = load_adapter(adapter)
    try:
        svd = float(repo.config_get("theta-like.svdBudget") or 30)
    except ValueError:
        svd = 30.0
    try:
        ratio = float(repo.config_get("theta-like.maxChainRatio") or DEFAULT_CHAIN_RATIO)
    except ValueError:
        ratio = DEFAULT_CHAIN_RATIO
    if not 0 <= ratio < float("inf"):  # nan, inf, negative: the default
        ratio = DEFAULT_CHAIN_RATIO
    return Engine(
        register_repo(repo),
        deltas=repo.config_bool("theta-like.deltas", True),
        max_chain_depth=repo.config_int("theta-like.maxChainDepth", DEFAULT_MAX_CHAIN),
        max_chain_ratio=ratio,
        svd_seconds=svd,
        lora=lora,
    )


def _recent_file(repo: Repo, path: str) -> Path:
    return repo.git_dir / "theta-like" / "recent" / urllib.parse.quote(path, safe="")


def remember_manifest(repo: Repo, path: str, data: bytes) -> None:
    """Note a manifest made for path without going through clean (a merge result), so that git
    re-cleaning the checked-out file (to refresh its index entry) gets exactly that manifest back:
    clean reuses its objects, and with them the merge recipe they record."""
    target = _recent_file(repo, path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def recent_manifests(repo: Repo, path: str) -> list[Manifest]:
    """The manifest remember_manifest last noted for path, if any."""
    try:
        data = _recent_file(repo, path).read_bytes()
        return [Manifest.from_bytes(data)] if is_manifest(data) else []
    except (OSError, ManifestError):
        return []
