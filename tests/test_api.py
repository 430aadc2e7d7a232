"""The Python API: load (only the requested objects are read), commit from memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import git
from fixtures import safetensors_bytes, small_model
from safetensors.torch import save_file

import git_theta_like as gtl
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest
from git_theta_like.store import store_of


def test_load_old_revision_reads_only_the_selected_objects(repo: Path) -> None:
    v1 = safetensors_bytes(small_model(seed=1))
    (repo / "m.safetensors").write_bytes(v1)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    (repo / "m.safetensors").write_bytes(safetensors_bytes(small_model(seed=2)))
    git(repo, "commit", "-qam", "v2")
    r = Repo(repo)
    before = store_of(r).reads
    sd = gtl.load_numpy("m.safetensors", rev="HEAD~1", names="layers.0.*", repo=r)
    assert sorted(sd) == [
        f"layers.0.{n}" for n in ("attn.bias", "attn.weight", "mlp.weight", "norm.bias", "norm.weight")
    ]
    assert store_of(r).reads - before == 5
    expected = small_model(seed=1)
    for name, a in sd.items():
        assert a.tobytes() == expected[name][2] and a.shape == expected[name][1]
    # the working tree still holds v2, untouched
    assert (repo / "m.safetensors").read_bytes() != v1


def test_load_torch_exact_dtypes_and_device(repo: Path) -> None:
    sd = {"w": torch.randn(4, 8).to(torch.bfloat16), "i": torch.arange(5), "h": torch.randn(3).half()}
    save_file(sd, str(repo / "m.safetensors"))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "bf16")
    got = gtl.load("m.safetensors", repo=repo, names=["w", "i"])
    assert set(got) == {"w", "i"}
    assert got["w"].dtype == torch.bfloat16 and torch.equal(got["w"], sd["w"])
    assert torch.equal(got["i"], sd["i"])
    assert gtl.load_numpy("m.safetensors", repo=repo, names=["w"])["w"].dtype == np.float32


def test_commit_from_memory_matches_writing_the_file_and_git_add(repo: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    sd = {"enc.weight": torch.randn(32, 16), "enc.bias": torch.zeros(32), "head.weight": torch.randn(2, 32)}
    commit_id = gtl.commit(sd, "model.safetensors", "from memory", repo=repo, metadata={"format": "pt"})
    assert git(repo, "rev-parse", "HEAD").stdout.strip() == commit_id
    from_memory = git(repo, "show", "HEAD:model.safetensors").stdout
    assert git(repo, "status", "--porcelain").stdout == ""  # working tree, index and HEAD agree
    # the same state dict, written as a file and added the ordinary way, in another repo
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    git(other, "theta-like", "install")
    git(other, "theta-like", "track", "*.safetensors")
    save_file(sd, str(other / "model.safetensors"), metadata={"format": "pt"})
    git(other, "add", "model.safetensors")
    assert git(other, "show", ":model.safetensors").stdout == from_memory
    # a second commit from memory is a delta against the first (a tensor this small costs more
    # than its raw bytes as a keyframe alone: the default chain-cost bound would keep it whole)
    git(repo, "config", "theta-like.maxChainRatio", "4")
    sd["head.weight"] = sd["head.weight"] + 1e-3
    gtl.commit(sd, "model.safetensors", "step 2", repo=repo)
    m = Manifest.from_text(git(repo, "show", "HEAD:model.safetensors").stdout)
    head = next(t for t in m.tensors if t.name == "head.weight")
    assert head.obj.codec in ("sub", "xor", "sparse", "lowrank")
    assert git(repo, "status", "--porcelain").stdout == ""
    assert torch.equal(gtl.load("model.safetensors", repo=repo)["head.weight"], sd["head.weight"])


def test_load_a_sharded_model_by_its_index(repo: Path) -> None:
    from test_sharded import model, write_sharded

    sd = model()
    write_sharded(repo, sd, 3)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sharded")
    got = gtl.load_numpy("model.safetensors.index.json", repo=repo, names="layers.[04].*")
    assert sorted(got) == ["layers.0.weight", "layers.4.weight"]
    assert np.array_equal(got["layers.4.weight"], sd["layers.4.weight"])


def test_load_errors_are_clear(repo: Path) -> None:
    with pytest.raises(gtl.ThetaLikeError, match="does not exist"):
        gtl.load_numpy("nope.safetensors", repo=repo)


def test_diff_and_merge_tensors_in_process(repo: Path) -> None:
    sd = {"a": torch.zeros(4, 4), "b": torch.ones(3)}
    gtl.commit(sd, "m.safetensors", "v1", repo=repo)
    sd2 = {"a": torch.zeros(4, 4), "b": torch.ones(3) * 2}
    gtl.commit(sd2, "m.safetensors", "v2", repo=repo)
    result = gtl.diff("HEAD~1", "HEAD", "m.safetensors", repo=repo)
    changed = [t.name for f in result.files for t in f.tensors if t.status != "unchanged"]
    assert changed == ["b"]
    base, ours, theirs = torch.zeros(5), torch.ones(5), torch.full((5,), 3.0)
    assert torch.allclose(gtl.merge_tensors(base, ours, theirs, "average"), torch.full((5,), 2.0))
