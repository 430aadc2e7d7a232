"""Sharded Hugging Face checkpoints: shards + model.safetensors.index.json as one model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import git, gtl, objects_in
from fixtures import safetensors_bytes


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layers.{i}.weight": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32) for i in range(6)}


def write_sharded(repo: Path, sd: dict[str, np.ndarray], shards: int) -> None:
    for old in repo.glob("model-*.safetensors"):
        old.unlink()
    names = list(sd)
    per = -(-len(names) // shards)
    weight_map = {}
    for s in range(shards):
        fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: ("F32", sd[n].shape, sd[n].tobytes()) for n in names[s * per : (s + 1) * per]}
        (repo / fname).write_bytes(safetensors_bytes(part))
        weight_map.update({n: fname for n in part})
    total = sum(a.nbytes for a in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (repo / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def test_resharding_stores_no_new_tensor_objects(repo: Path) -> None:
    sd = model()
    write_sharded(repo, sd, 3)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "3 shards")
    before = objects_in(repo)
    write_sharded(repo, sd, 2)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "re-sharded into 2")
    new = objects_in(repo) - before
    # only the two new skeletons (headers): every tensor object is reused
    assert len(new) <= 2
    for f in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        data = (repo / f).read_bytes()
        (repo / f).unlink()
        git(repo, "checkout", "--", f)
        assert (repo / f).read_bytes() == data
    assert git(repo, "status", "--porcelain").stdout == ""


def test_a_moved_and_changed_tensor_is_a_delta_against_its_old_shard(repo: Path) -> None:
    sd = model()
    write_sharded(repo, sd, 3)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "3 shards")
    sd["layers.0.weight"] = (sd["layers.0.weight"] + 1e-4).astype(np.float32)
    write_sharded(repo, sd, 2)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "changed and re-sharded")
    shown = gtl(repo, "show", "HEAD", "model-00001-of-00002.safetensors").stdout
    line = next(x for x in shown.splitlines() if x.endswith("layers.0.weight"))
    assert line.split()[0] in ("sub", "xor", "sparse", "lowrank"), line


def test_ls_files_shows_the_sharded_model_as_one(repo: Path) -> None:
    write_sharded(repo, model(), 3)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "3 shards")
    out = gtl(repo, "ls-files").stdout
    assert "model.safetensors.index.json" in out and "3 shards" in out and "6 tensors" in out
