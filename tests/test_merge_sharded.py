"""Merging sharded Hugging Face checkpoints (shards + model.safetensors.index.json) as one model.

Same layout on both sides: `git merge` merges shard by shard, and the result is the merge of the
model. A side that re-sharded (tensors moved between shard files): git stops with modify/delete
or per-shard conflicts; `git theta-like merge` / `git theta-like mergetool` merge the model as a
whole, in the layout the three-way rule gives, and the result checks out byte-exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes
from safetensors.numpy import load as st_load

from git_theta_like.manifest import Manifest
from git_theta_like.merge import merge_tensors

INDEX = "model.safetensors.index.json"
Layout = list[list[str]]


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sd = {f"layers.{i}.weight": (rng.standard_normal((32, 16)) * 0.05).astype(np.float32) for i in range(6)}
    sd["position_ids"] = np.arange(8, dtype=np.int64)
    return sd


def finetune(sd: dict[str, np.ndarray], seed: int, names: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for k in names:
        out[k] = (sd[k] + rng.standard_normal(sd[k].shape) * 0.01).astype(np.float32)
    return out


def even(sd: dict[str, np.ndarray], shards: int) -> Layout:
    names = list(sd)
    per = -(-len(names) // shards)
    return [names[s * per : (s + 1) * per] for s in range(shards)]


def shard_name(i: int, n: int) -> str:
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


def write(repo: Path, sd: dict[str, np.ndarray], layout: Layout) -> None:
    """The shards and index json that save_pretrained would write for this layout."""
    dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    for old in repo.glob("model-*.safetensors"):
        old.unlink()
    weight_map = {}
    for i, names in enumerate(layout):
        fname = shard_name(i, len(layout))
        part = {n: (dt[sd[n].dtype], sd[n].shape, sd[n].tobytes()) for n in names}
        (repo / fname).write_bytes(safetensors_bytes(part))
        weight_map.update({n: fname for n in names})
    total = sum(sd[n].nbytes for names in layout for n in names)
    doc = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (repo / INDEX).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def commit(repo: Path, sd: dict[str, np.ndarray], layout: Layout, msg: str) -> None:
    write(repo, sd, layout)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", msg)


def branches(
    repo: Path,
    base: tuple[dict[str, np.ndarray], Layout],
    ours: tuple[dict[str, np.ndarray], Layout],
    theirs: tuple[dict[str, np.ndarray], Layout],
) -> None:
    commit(repo, *base, "base")
    git(repo, "checkout", "-qb", "side")
    commit(repo, *theirs, "theirs")
    git(repo, "checkout", "-q", "main")
    commit(repo, *ours, "ours")


def loaded(repo: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of the work tree's model (read from the shard files) and its shard."""
    doc = json.loads((repo / INDEX).read_text())
    tensors: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    for fname in sorted(set(doc["weight_map"].values())):
        for k, v in st_load((repo / fname).read_bytes()).items():
            assert k not in tensors, f"{k} in two shards"
            tensors[k], where[k] = v, fname
    assert where == doc["weight_map"], "the index json and the shards disagree"
    assert doc["metadata"]["total_size"] == sum(a.nbytes for a in tensors.values())
    return tensors, where


def assert_checks_out(repo: Path) -> None:
    """Clean status; every shard checks out again byte for byte; fsck is happy."""
    assert git(repo, "status", "--porcelain").stdout == ""
    for f in sorted(repo.glob("model-*.safetensors")):
        data = f.read_bytes()
        f.unlink()
        git(repo, "checkout", "--", f.name)
        assert f.read_bytes() == data, f.name
    gtl(repo, "fsck")


def shards_at(repo: Path, rev: str) -> list[str]:
    return sorted(
        p for p in git(repo, "ls-tree", "--name-only", rev).stdout.split() if p.startswith("model-")
    )


@pytest.mark.slow
def test_same_layout_merges_shard_by_shard_like_the_whole_model(repo: Path) -> None:
    base = model()
    ours = finetune(base, 1, ["layers.0.weight", "layers.4.weight"])
    theirs = finetune(base, 2, ["layers.4.weight", "layers.5.weight"])
    layout = even(base, 3)
    branches(repo, (base, layout), (ours, layout), (theirs, layout))
    r = gtl(repo, "merge", "side", "--strategy", "average")
    assert "merged 1 tensor (average 1)" in r.stderr, r.stderr
    got, where = loaded(repo)
    assert where == {n: shard_name(i, 3) for i, names in enumerate(layout) for n in names}
    want = {**theirs, "layers.0.weight": ours["layers.0.weight"]}
    want["layers.4.weight"] = merge_tensors(
        base["layers.4.weight"], ours["layers.4.weight"], theirs["layers.4.weight"], "average"
    )
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert_checks_out(repo)


@pytest.mark.slow
def test_theirs_resharded_and_ours_changed_a_deleted_shard(repo: Path) -> None:
    """Plain `git merge` stops (modify/delete); mergetool merges the model in theirs's layout."""
    base = model()
    ours = finetune(base, 1, ["layers.5.weight"])
    theirs = finetune(base, 2, ["layers.0.weight"])
    branches(repo, (base, even(base, 3)), (ours, even(base, 3)), (theirs, even(base, 2)))
    r = git(repo, "merge", "--no-edit", "side", check=False)
    assert r.returncode != 0  # model-00003-of-00003 changed in ours, deleted in theirs
    out = gtl(repo, "mergetool").stdout
    assert f"{INDEX}: merged as one model" in out, out
    assert "no conflicts left" in out
    got, where = loaded(repo)
    want = {**theirs, "layers.5.weight": ours["layers.5.weight"]}
    assert set(got) == set(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert sorted(set(where.values())) == [shard_name(0, 2), shard_name(1, 2)]  # theirs's layout
    assert not (repo / shard_name(2, 3)).exists()
    git(repo, "commit", "-qm", "merge", "--no-edit")
    assert shards_at(repo, "HEAD") == [shard_name(0, 2), shard_name(1, 2)]
    assert_checks_out(repo)


@pytest.mark.slow
def test_git_theta_like_merge_merges_a_resharded_model_and_commits(repo: Path) -> None:
    base = model()
    ours = finetune(base, 1, ["layers.1.weight", "layers.3.weight"])
    theirs = finetune(base, 2, ["layers.3.weight", "layers.4.weight"])
    # theirs re-shards 3 -> 2 (every tensor moves file); layers.3 changed on both sides
    branches(repo, (base, even(base, 3)), (ours, even(base, 3)), (theirs, even(base, 2)))
    r = gtl(repo, "merge", "side", "--strategy", "average")
    assert "merged as one model" in r.stderr and "merged 1 tensor (average 1)" in r.stderr, r.stderr
    assert len(git(repo, "log", "-1", "--format=%P").stdout.split()) == 2
    got, where = loaded(repo)
    want = {**theirs, "layers.1.weight": ours["layers.1.weight"]}
    want["layers.3.weight"] = merge_tensors(
        base["layers.3.weight"], ours["layers.3.weight"], theirs["layers.3.weight"], "average"
    )
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert where == {n: shard_name(i, 2) for i, names in enumerate(even(base, 2)) for n in names}
    # the merged tensor records its recipe, and is a delta against ours
    m = Manifest.from_text(git(repo, "show", f"HEAD:{where['layers.3.weight']}").stdout)
    t = next(t for t in m.tensors if t.name == "layers.3.weight")
    assert dict(t.obj.extra).get("merge") == "average"
    assert_checks_out(repo)
    # the result loads through the API as one model
    from git_theta_like import load_numpy

    api = load_numpy(INDEX, rev="HEAD", repo=str(repo))
    assert set(api) == set(want) and all(np.array_equal(api[k], want[k]) for k in want)


@pytest.mark.slow
def test_a_tensor_moved_by_one_side_and_changed_by_the_other(repo: Path) -> None:
    """Same shard files on both sides: theirs moves layers.2 from shard 1 to shard 2, ours
    changes it. Per file that is 'changed in ours, deleted in theirs'; as one model it is
    ours's change in theirs's place."""
    base = model()
    ours = finetune(base, 1, ["layers.2.weight"])
    theirs = finetune(base, 2, ["layers.5.weight"])
    names = list(base)
    layout = [names[:4], names[4:]]
    moved = [names[:2] + [names[3]], [names[2], *names[4:]]]
    branches(repo, (base, layout), (ours, layout), (theirs, moved))
    r = git(repo, "merge", "--no-edit", "side", check=False)
    assert r.returncode != 0
    assert "changed in ours, deleted in theirs" in r.stderr, r.stderr
    assert f"a shard of {INDEX}; once git stops, `git theta-like mergetool`" in r.stderr
    out = gtl(repo, "mergetool", shard_name(0, 2)).stdout  # a shard's path names its model
    assert "merged as one model" in out, out
    git(repo, "commit", "-qm", "merge")
    got, where = loaded(repo)
    assert where["layers.2.weight"] == shard_name(1, 2)
    want = {**theirs, "layers.2.weight": ours["layers.2.weight"]}
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert_checks_out(repo)


@pytest.mark.slow
def test_tensor_conflicts_leave_the_merge_as_git_left_it(repo: Path) -> None:
    base = model()
    ours = dict(base, **{"layers.0.weight": np.zeros((32, 32), np.float32)})  # reshaped in ours
    theirs = finetune(base, 2, ["layers.0.weight"])
    branches(repo, (base, even(base, 3)), (ours, even(ours, 3)), (theirs, even(theirs, 2)))
    before = git(repo, "status", "--porcelain").stdout
    r = gtl(repo, "merge", "side", check=False)
    assert r.returncode != 0
    assert "not merged as one model" in r.stderr and "layers.0.weight" in r.stderr, r.stderr
    assert "shape differs" in r.stderr
    assert (repo / ".git" / "MERGE_HEAD").is_file()
    assert git(repo, "diff", "--name-only", "--diff-filter=U").stdout.strip() != ""  # still unmerged
    assert before == ""  # (the tree was clean before the merge)
    git(repo, "merge", "--abort")
    assert git(repo, "status", "--porcelain").stdout == ""


def test_mergetool_without_a_merge_in_progress_says_so(repo: Path) -> None:
    commit(repo, model(), even(model(), 2), "base")
    r = gtl(repo, "mergetool")
    assert "no conflicted checkpoints" in r.stderr


@pytest.mark.slow
def test_a_cherry_pick_of_a_resharding_commit_is_merged_as_one_model(repo: Path) -> None:
    base = model()
    ours = finetune(base, 1, ["layers.5.weight"])
    theirs = finetune(base, 2, ["layers.0.weight"])
    branches(repo, (base, even(base, 3)), (ours, even(base, 3)), (theirs, even(base, 2)))
    r = git(repo, "cherry-pick", "side", check=False)
    assert r.returncode != 0
    out = gtl(repo, "mergetool").stdout
    assert "merged as one model" in out, out
    git(repo, "-c", "core.editor=true", "cherry-pick", "--continue")
    assert len(git(repo, "log", "-1", "--format=%P").stdout.split()) == 1  # a cherry-pick, not a merge
    got, where = loaded(repo)
    want = {**theirs, "layers.5.weight": ours["layers.5.weight"]}
    assert set(got) == set(want) and all(np.array_equal(got[k], want[k]) for k in want)
    assert sorted(set(where.values())) == [shard_name(0, 2), shard_name(1, 2)]
    assert_checks_out(repo)
