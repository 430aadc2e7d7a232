"""Sharded Hugging Face checkpoints: `model-0000i-of-0000N.safetensors` (or `pytorch_model-*.bin`)
plus an index (`model.safetensors.index.json`) whose `weight_map` says which shard holds each
tensor. ls-files, load and diff treat the shards of one index as one model."""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field

from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import commit_tree, walk_tree
from git_theta_like.manifest import Manifest

INDEX_SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json")


@dataclass
class ShardedModel:
    index_path: str
    weight_map: dict[str, str]  # tensor name -> shard path (relative to the repository)
    shards: dict[str, Manifest | None] = field(default_factory=dict)

    @property
    def tensor_count(self) -> int:
        return len(self.weight_map)


def is_index(path: str) -> bool:
    return path.endswith(INDEX_SUFFIXES)


def read_index(data: bytes, index_path: str) -> dict[str, str]:
    """weight_map of an index file, with shard paths made relative to the repository root."""
    doc = json.loads(data)
    base = posixpath.dirname(index_path)
    wm = doc.get("weight_map", {}) if isinstance(doc, dict) else {}
    return {str(k): posixpath.join(base, str(v)) if base else str(v) for k, v in wm.items()}


def sharded_models(
    repo: Repo, manifests: dict[str, Manifest | None], rev: str | None = None
) -> list[ShardedModel]:
    """The sharded models among the given tracked files (path -> manifest), staged or at rev."""
    out = []
    candidates: list[str] = []
    if rev is None:
        index = repo.git.index
        index.read(False)
        candidates = [e.path for e in index if is_index(e.path)]
    else:
        candidates = [p for p, _ in walk_tree(commit_tree(repo, rev)) if is_index(p)]
    for path in sorted(candidates):
        blob = repo.index_blob(path) if rev is None else repo.rev_blob(rev, path)
        if blob is None:
            continue
        try:
            wm = read_index(blob, path)
        except (ValueError, TypeError):
            continue
        model = ShardedModel(path, wm)
        for shard in sorted(set(wm.values())):
            model.shards[shard] = manifests.get(shard)
        out.append(model)
    return out


def model_of_shard(repo: Repo, path: str) -> str | None:
    """The index json (in the work tree, next to path) whose weight_map names path, if any."""
    root = repo.workdir
    if root is None:
        return None
    folder = posixpath.dirname(path)
    for f in sorted((root / folder).glob("*.index.json")):
        index_path = posixpath.join(folder, f.name) if folder else f.name
        try:
            if is_index(index_path) and path in read_index(f.read_bytes(), index_path).values():
                return index_path
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return None
