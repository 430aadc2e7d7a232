"""The filters: the clean/smudge `Engine`, the long-running filter process git talks to, and the
checkout of checkpoints left as manifests in the working tree.

Public for the rooms above: `engine_for(repo)` (an Engine configured from git config and the
environment) and `staged_manifest(repo, path)` (the natural delta parent of what is cleaned).
May import lfs, store, formats, codecs, gitio and the bottom layer."""

from __future__ import annotations

import os

from git_theta_like.errors import ManifestError
from git_theta_like.filters.engine import Engine
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.store import store_of

__all__ = ["Engine", "engine_for", "staged_manifest"]


def staged_manifest(repo: Repo, path: str) -> Manifest | None:
    """The staged manifest of path, the natural parent of what is being cleaned."""
    blob = repo.index_blob(path)
    if blob is None or not is_manifest(blob):
        return None
    try:
        return Manifest.from_bytes(blob)
    except ManifestError:
        return None


def engine_for(repo: Repo) -> Engine:
    """An Engine configured from git config (theta-like.*) and the environment."""
    lora = None
    if adapter := os.environ.get("GIT_THETA_LIKE_LORA"):
        from git_theta_like.filters.lora import load_adapter

        lora = load_adapter(adapter)
    try:
        svd = float(repo.config_get("theta-like.svdBudget") or 30)
    except ValueError:
        svd = 30.0
    return Engine(
        store_of(repo),
        deltas=repo.config_bool("theta-like.deltas", True),
        max_chain_depth=repo.config_int("theta-like.maxChainDepth", 8),
        svd_seconds=svd,
        lora=lora,
    )
