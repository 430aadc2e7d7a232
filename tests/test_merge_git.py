"""`git merge` of checkpoints through the merge driver, in real repositories.

One-sided changes, both-sided strategies (checked out byte-exactly equal to the in-process
merge), `.theta-like.toml` rules, git config and command-line overrides, each conflict kind
and its resolution with mergetool, PyTorch zip files, a 3-branch history merged twice, and a
merge pushed and cloned.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import git, gtl, objects_in, run
from fixtures import safetensors_bytes
from safetensors.numpy import load as st_load

from git_theta_like.manifest import Manifest
from git_theta_like.merge import merge_tensors

F = "model.safetensors"


def st(tensors: dict[str, np.ndarray]) -> bytes:
    dt = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}
    return safetensors_bytes({k: (dt[a.dtype], a.shape, a.tobytes()) for k, a in tensors.items()})


def commit(repo: Path, tensors: dict[str, np.ndarray], msg: str, name: str = F) -> None:
    (repo / name).write_bytes(st(tensors))
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)


def load(repo: Path, name: str = F) -> dict[str, np.ndarray]:
    return dict(st_load((repo / name).read_bytes()))


def manifest_at(repo: Path, rev: str, name: str = F) -> Manifest:
    return Manifest.from_text(git(repo, "show", f"{rev}:{name}").stdout)


def recipe(m: Manifest, tensor: str) -> dict[str, str]:
    t = next(t for t in m.tensors if t.name == tensor)
    return {k: v for k, v in t.obj.extra if k.startswith("merge")}


def model(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    return {
        "embeddings.weight": w(50, 16),
        "layer.0.attention.weight": w(16, 16),
        "layer.0.attention.bias": w(16),
        "layer.0.mlp.weight": w(32, 16),
        "layer.0.norm.weight": np.ones(16, np.float32),
        "head.weight": w(4, 16),
        "position_ids": np.arange(8, dtype=np.int64),
    }


def finetune(sd: dict[str, np.ndarray], seed: int, names: list[str] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for k in names if names is not None else [k for k, a in sd.items() if a.dtype == np.float32]:
        out[k] = (sd[k] + rng.standard_normal(sd[k].shape) * 0.01).astype(sd[k].dtype)
    return out


def branches(
    repo: Path, base: dict[str, np.ndarray], ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]
) -> None:
    """base on main; theirs on branch `side`; ours on main. HEAD: main."""
    commit(repo, base, "base")
    git(repo, "checkout", "-qb", "side")
    commit(repo, theirs, "theirs")
    git(repo, "checkout", "-q", "main")
    commit(repo, ours, "ours")


def expected(
    base: dict[str, np.ndarray],
    ours: dict[str, np.ndarray],
    theirs: dict[str, np.ndarray],
    name: str,
    strategy: str,
    **kw,
) -> np.ndarray:
    return merge_tensors(base[name], ours[name], theirs[name], strategy, name=name, **kw)


def assert_clean_checkout(repo: Path, name: str = F) -> None:
    """The work tree is what the index says, and a fresh checkout gives the same bytes."""
    assert git(repo, "status", "--porcelain").stdout == ""
    data = (repo / name).read_bytes()
    (repo / name).unlink()
    git(repo, "checkout", "--", name)
    assert (repo / name).read_bytes() == data


# ------------------------------------------------------------------ three-way rule


@pytest.mark.slow
def test_one_sided_changes_are_taken_without_computing(repo: Path) -> None:
    base = model()
    ours = finetune(base, 1, ["layer.0.attention.weight"])
    ours["extra.ours"] = np.full(3, 7, np.float32)
    theirs = finetune(base, 2, ["layer.0.mlp.weight", "head.weight"])
    del theirs["layer.0.norm.weight"]
    branches(repo, base, ours, theirs)
    r = git(repo, "merge", "--no-edit", "side")
    assert "merged" not in r.stderr  # nothing computed: no strategy ran
    got = load(repo)
    want = {
        **theirs,
        "layer.0.attention.weight": ours["layer.0.attention.weight"],
        "extra.ours": ours["extra.ours"],
    }
    assert set(got) == set(want)
    for k in want:
        assert np.array_equal(got[k], want[k]), k
    assert all(not recipe(manifest_at(repo, "HEAD"), t) for t in want)
    assert_clean_checkout(repo)


def test_one_sided_merge_reads_no_tensor_data(repo: Path, tmp_path: Path) -> None:
    """The driver decides from the manifests alone: it succeeds with the object store gone."""
    base = model()
    branches(repo, base, finetune(base, 1, ["head.weight"]), finetune(base, 2, ["layer.0.mlp.weight"]))
    for rev, name in (("main~1", "O"), ("main", "A"), ("side", "B")):
        (tmp_path / name).write_text(git(repo, "show", f"{rev}:{F}").stdout)
    shutil.move(repo / ".git" / "lfs", tmp_path / "lfs")
    keep = repo / ".git" / "theta-like"
    if keep.exists():
        shutil.move(keep, tmp_path / "keep")
    run(
        "git-theta-like",
        "merge-driver",
        str(tmp_path / "O"),
        str(tmp_path / "A"),
        str(tmp_path / "B"),
        F,
        cwd=repo,
    )
    merged = Manifest.from_text((tmp_path / "A").read_text())
    ours, theirs = manifest_at(repo, "main"), manifest_at(repo, "side")
    by = {t.name: t.obj.oid for t in merged.tensors}
    assert by["head.weight"] == next(t.obj.oid for t in ours.tensors if t.name == "head.weight")
    assert by["layer.0.mlp.weight"] == next(
        t.obj.oid for t in theirs.tensors if t.name == "layer.0.mlp.weight"
    )


@pytest.mark.slow
def test_tensors_added_on_both_sides_get_a_new_header(repo: Path) -> None:
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    ours["adapter.ours"] = np.full(6, 1, np.float32)
    theirs["adapter.theirs"] = np.full(5, 2, np.float32)
    del theirs["position_ids"]  # unchanged in ours: deleted
    branches(repo, base, ours, theirs)
    git(repo, "merge", "--no-edit", "side")
    got = load(repo)  # the safetensors library reads the new file
    assert np.array_equal(got["adapter.ours"], ours["adapter.ours"])
    assert np.array_equal(got["adapter.theirs"], theirs["adapter.theirs"])
    assert "position_ids" not in got
    k = "layer.0.mlp.weight"
    assert got[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes()
    assert_clean_checkout(repo)


@pytest.mark.slow
def test_both_sided_changes_are_averaged_by_default(repo: Path) -> None:
    # an average changes every element: under the default chain-cost bound (1.0x the raw bytes)
    # these small tensors would be keyframes; a higher bound shows the delta path merges take
    git(repo, "config", "theta-like.maxChainRatio", "4")
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    r = git(repo, "merge", "--no-edit", "side")
    assert "merged 6 tensors (average 6)" in r.stderr
    got = load(repo)
    for k in base:
        if base[k].dtype == np.float32:
            assert got[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes(), k
    assert np.array_equal(got["position_ids"], base["position_ids"])
    m = manifest_at(repo, "HEAD")
    assert recipe(m, "head.weight") == {"merge": "average"}
    assert "merge=average" in git(repo, "show", f"HEAD:{F}").stdout
    shown = gtl(repo, "show", "HEAD", F).stdout
    assert "merge recipe: 6 tensors merged (average 6)" in shown and "[merged: average]" in shown
    # stored as deltas against ours, through the normal object path
    t = next(t for t in m.tensors if t.name == "layer.0.mlp.weight")
    ours_oid = next(t for t in manifest_at(repo, "HEAD^1").tensors if t.name == "layer.0.mlp.weight").obj.oid
    assert dict(t.obj.extra).get("base") == ours_oid
    assert_clean_checkout(repo)


@pytest.mark.slow
def test_bf16_and_f16_are_computed_wide_and_cast_back(repo: Path) -> None:
    rng = np.random.default_rng(0)
    b = torch.from_numpy(rng.standard_normal((32, 8)).astype(np.float32)).to(torch.bfloat16)
    o, t = b + 0.01, b - 0.02
    h = rng.standard_normal(10).astype(np.float16)

    def write(x: torch.Tensor, y: np.ndarray) -> bytes:
        raw = x.contiguous().view(torch.int16).numpy().tobytes()
        return safetensors_bytes({"w": ("BF16", (32, 8), raw), "h": ("F16", (10,), y.tobytes())})

    (repo / F).write_bytes(write(b, h))
    git(repo, "add", F)
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "side")
    (repo / F).write_bytes(write(t, (h * 2).astype(np.float16)))
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / F).write_bytes(write(o, (h * 3).astype(np.float16)))
    git(repo, "commit", "-qam", "ours")
    gtl(repo, "merge", "side", "--strategy", "task-arithmetic", "--set", "lambda=0.5")
    want_w = merge_tensors(b, o, t, "task-arithmetic", **{"lambda": 0.5})
    want_h = merge_tensors(h, h * 3, h * 2, "task-arithmetic", **{"lambda": 0.5})
    assert want_w.dtype == torch.bfloat16
    assert (repo / F).read_bytes() == safetensors_bytes(
        {
            "w": ("BF16", (32, 8), want_w.view(torch.int16).numpy().tobytes()),
            "h": ("F16", (10,), want_h.astype(np.float16).tobytes()),
        }
    )


# ------------------------------------------------------------------ choosing the strategy


TOML = """
[merge]
strategy = "average"

[[merge.rules]]
tensor = "embeddings.*"
strategy = "ours"

[[merge.rules]]
tensor = "*attention*"
strategy = "ties"
density = 0.2

[[merge.rules]]
tensor = "head.*"
strategy = "theirs"
"""


@pytest.mark.slow
def test_rules_from_committed_toml(repo: Path) -> None:
    (repo / ".theta-like.toml").write_text(TOML)
    git(repo, "add", ".theta-like.toml")
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    r = git(repo, "merge", "--no-edit", "side")
    assert "merged 4 tensors (average 2, ties 2); 1 by strategy ours, 1 by strategy theirs" in r.stderr
    got = load(repo)
    assert np.array_equal(got["embeddings.weight"], ours["embeddings.weight"])
    assert np.array_equal(got["head.weight"], theirs["head.weight"])
    for k in ("layer.0.attention.weight", "layer.0.attention.bias"):
        assert got[k].tobytes() == expected(base, ours, theirs, k, "ties", density=0.2).tobytes()
    for k in ("layer.0.mlp.weight", "layer.0.norm.weight"):
        assert got[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes()
    m = manifest_at(repo, "HEAD")
    assert recipe(m, "layer.0.attention.weight") == {
        "merge": "ties",
        "merge-params": "density:0.2,lambda:1.0",
    }
    assert recipe(m, "embeddings.weight") == {"merge": "ours"}
    assert recipe(m, "head.weight") == {"merge": "theirs"}
    shown = gtl(repo, "show", "HEAD", F).stdout
    assert "[merged: ties density=0.2 lambda=1.0]" in shown and "[merged: ours]" in shown
    assert_clean_checkout(repo)


@pytest.mark.slow
def test_git_config_overrides_the_rules(repo: Path) -> None:
    (repo / ".theta-like.toml").write_text(TOML)
    git(repo, "add", ".theta-like.toml")
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    git(repo, "config", "theta-like.merge.strategy", "task-arithmetic")
    git(repo, "config", "theta-like.merge.lambda", "0.6")
    git(repo, "merge", "--no-edit", "side")
    got = load(repo)
    for k in ("embeddings.weight", "layer.0.attention.weight", "head.weight"):
        want = expected(base, ours, theirs, k, "task-arithmetic", **{"lambda": 0.6})
        assert got[k].tobytes() == want.tobytes(), k
    assert recipe(manifest_at(repo, "HEAD"), "head.weight")["merge-params"] == "lambda:0.6"


@pytest.mark.slow
def test_wrapper_command_line_overrides_git_config(repo: Path) -> None:
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    git(repo, "config", "theta-like.merge.strategy", "slerp")
    bad = gtl(repo, "merge", "side", "--strategy", "ties", "--set", "densty=0.3", check=False)
    assert bad.returncode == 1 and "ties has no parameter 'densty'" in bad.stderr
    bad = gtl(repo, "merge", "side", "--strategy", "tie", check=False)
    assert bad.returncode == 1 and "did you mean ties" in bad.stderr
    assert git(repo, "rev-parse", "HEAD").stdout == git(repo, "rev-parse", "main").stdout  # nothing merged
    r = gtl(
        repo, "merge", "side", "--strategy", "ties", "--set", "density=0.3", "--device", "cpu", "-m", "merged"
    )
    assert "merged 6 tensors (ties 6)" in r.stderr and " on cpu in " in r.stderr
    assert git(repo, "log", "-1", "--format=%s").stdout.strip() == "merged"
    got = load(repo)
    for k in ("embeddings.weight", "layer.0.mlp.weight"):
        assert got[k].tobytes() == expected(base, ours, theirs, k, "ties", density=0.3).tobytes()
    # the override lasted for that merge only
    assert "GIT_THETA_LIKE" not in git(repo, "config", "--list").stdout
    # other arguments go to git merge
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    gtl(repo, "merge", "side", "--strategy", "average", "--no-commit")
    assert (repo / ".git" / "MERGE_HEAD").exists()
    got = load(repo)
    assert got[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes()
    git(repo, "commit", "-qm", "merged")


def test_bad_toml_stops_the_merge_with_its_reason(repo: Path) -> None:
    (repo / ".theta-like.toml").write_text('[[merge.rules]]\ntensor = "*"\nstrategy = "tie"\n')
    git(repo, "add", ".theta-like.toml")
    base = model()
    branches(repo, base, finetune(base, 1), finetune(base, 2))
    r = git(repo, "merge", "--no-edit", "side", check=False)
    assert r.returncode == 1
    assert ".theta-like.toml rule 1: unknown merge strategy 'tie' (did you mean ties?)" in r.stderr


@pytest.mark.slow
def test_dare_merge_is_reproducible(repo: Path) -> None:
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    gtl(repo, "merge", "side", "--strategy", "dare", "--set", "drop=0.5", "--set", "seed=11")
    first = git(repo, "show", f"HEAD:{F}").stdout
    got = load(repo)
    k = "layer.0.mlp.weight"
    assert got[k].tobytes() == expected(base, ours, theirs, k, "dare", drop=0.5, seed=11).tobytes()
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    gtl(repo, "merge", "side", "--strategy", "dare", "--set", "drop=0.5", "--set", "seed=11")
    assert git(repo, "show", f"HEAD:{F}").stdout == first


@pytest.mark.slow
def test_fisher_merge_reads_the_committed_fisher_files(repo: Path) -> None:
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    floats = [k for k, a in base.items() if a.dtype == np.float32]
    rng = np.random.default_rng(9)
    f_ours = {k: rng.random(base[k].shape).astype(np.float32) for k in floats}
    f_theirs = {k: rng.random(base[k].shape).astype(np.float32) for k in floats}
    fisher = "model.fisher.safetensors"
    commit(repo, base, "base")
    git(repo, "checkout", "-qb", "side")
    (repo / fisher).write_bytes(st(f_theirs))
    git(repo, "add", fisher)
    commit(repo, theirs, "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / fisher).write_bytes(st(f_ours))
    git(repo, "add", fisher)
    commit(repo, ours, "ours")
    r = gtl(repo, "merge", "side", "--strategy", "fisher")
    assert "merged 6 tensors (fisher 6)" in r.stderr
    got = load(repo)
    for k in floats:
        want = merge_tensors(base[k], ours[k], theirs[k], "fisher", fisher=(f_ours[k], f_theirs[k]))
        assert got[k].tobytes() == want.tobytes(), k
    # the Fisher file itself (added on both sides) is averaged
    merged_fisher = load(repo, fisher)
    k = floats[0]
    assert merged_fisher[k].tobytes() == merge_tensors(None, f_ours[k], f_theirs[k], "average").tobytes()


def test_fisher_without_fisher_files_is_a_conflict(repo: Path) -> None:
    base = model()
    branches(repo, base, finetune(base, 1), finetune(base, 2))
    r = gtl(repo, "merge", "side", "--strategy", "fisher", check=False)
    assert r.returncode == 1
    assert "no Fisher tensor for it in model.fisher.safetensors at HEAD (no such file) (ours)" in r.stderr


# ------------------------------------------------------------------ conflicts and mergetool


def conflicting(repo: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    base = model()
    base["gone"] = np.zeros(4, np.float32)
    base["gone2"] = np.zeros(4, np.float32)
    ours, theirs = finetune(base, 1), finetune(base, 2)
    ours["head.weight"] = np.zeros((5, 16), np.float32)  # shape differs
    theirs["layer.0.norm.weight"] = theirs["layer.0.norm.weight"].astype(np.float16)  # dtype differs
    del ours["gone"]  # deleted in ours, changed in theirs
    del theirs["gone2"]  # changed in ours, deleted in theirs
    ours["position_ids"] = base["position_ids"] + 1  # non-float changed on both sides
    theirs["position_ids"] = base["position_ids"] + 2
    branches(repo, base, ours, theirs)
    return base, ours, theirs


@pytest.mark.slow
def test_each_conflict_kind_stops_the_merge_and_mergetool_resolves(repo: Path) -> None:
    base, ours, theirs = conflicting(repo)
    r = git(repo, "merge", "--no-edit", "side", check=False)
    assert r.returncode == 1 and "CONFLICT (content): Merge conflict in model.safetensors" in r.stdout
    assert "model.safetensors: 5 tensors cannot be merged automatically:" in r.stderr
    for line in (
        "head.weight: shape differs: ours [5,16], theirs [4,16]",
        "layer.0.norm.weight: dtype differs: ours F32, theirs F16",
        "gone: deleted in ours, changed in theirs",
        "gone2: changed in ours, deleted in theirs",
        "position_ids: I64 tensor changed on both sides: average (from default) works on float tensors only",
        "git theta-like mergetool model.safetensors",
    ):
        assert line in r.stderr, line
    assert (repo / F).read_bytes() == st(ours)  # the work tree holds ours, a valid checkpoint
    out = gtl(repo, "mergetool").stdout
    assert "model.safetensors: 5 conflict(s):" in out and "model.MERGED.safetensors" in out
    assert (repo / "model.BASE.safetensors").read_bytes() == st(base)
    assert (repo / "model.OURS.safetensors").read_bytes() == st(ours)
    assert (repo / "model.THEIRS.safetensors").read_bytes() == st(theirs)
    merged = load(repo, "model.MERGED.safetensors")
    assert np.array_equal(merged["head.weight"], ours["head.weight"])  # conflicts: ours
    k = "layer.0.mlp.weight"
    assert merged[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes()
    # resolve by hand: start from MERGED, take their head, keep our norm
    fixed = dict(merged)
    fixed["head.weight"] = theirs["head.weight"]
    (repo / "resolved.safetensors").write_bytes(st(fixed))
    out = gtl(repo, "mergetool", F, "--resolve", "resolved.safetensors").stdout
    assert "resolved with" in out
    for label in ("BASE", "OURS", "THEIRS", "MERGED"):
        assert not (repo / f"model.{label}.safetensors").exists()
    (repo / "resolved.safetensors").unlink()
    git(repo, "commit", "-qm", "merged by hand")
    assert git(repo, "status", "--porcelain").stdout == ""
    assert (repo / F).read_bytes() == st(fixed)
    assert_clean_checkout(repo)


@pytest.mark.slow
@pytest.mark.parametrize("use", ["ours", "theirs", "merged"])
def test_mergetool_use_a_version(repo: Path, use: str) -> None:
    base, ours, theirs = conflicting(repo)
    git(repo, "merge", "--no-edit", "side", check=False)
    gtl(repo, "mergetool", F, "--use", use)
    git(repo, "commit", "-qm", "resolved")
    got = load(repo)
    if use == "merged":
        assert np.array_equal(got["head.weight"], ours["head.weight"])
        k = "layer.0.attention.weight"
        assert got[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes()
    else:
        assert (repo / F).read_bytes() == st(ours if use == "ours" else theirs)
    assert_clean_checkout(repo)


def test_mergetool_errors_are_clear(repo: Path) -> None:
    r = gtl(repo, "mergetool", F, "--use", "ours", check=False)
    assert r.returncode == 1 and "model.safetensors has no merge conflict" in r.stderr
    assert "no conflicted checkpoints" in gtl(repo, "mergetool").stderr


def test_rule_choosing_a_version_resolves_a_non_float_conflict(repo: Path) -> None:
    (repo / ".theta-like.toml").write_text('[[merge.rules]]\ntensor = "position_ids"\nstrategy = "theirs"\n')
    git(repo, "add", ".theta-like.toml")
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    ours["position_ids"] = base["position_ids"] + 1
    theirs["position_ids"] = base["position_ids"] + 2
    branches(repo, base, ours, theirs)
    git(repo, "merge", "--no-edit", "side")
    assert np.array_equal(load(repo)["position_ids"], theirs["position_ids"])


def test_files_that_are_not_manifests_fall_back_to_a_text_merge(repo: Path) -> None:
    (repo / ".gitattributes").write_text((repo / ".gitattributes").read_text() + "*.cfg merge=theta-like\n")
    (repo / "a.cfg").write_text("one\ntwo\nthree\nfour\nfive\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "cfg")
    git(repo, "checkout", "-qb", "side")
    (repo / "a.cfg").write_text("one\ntwo\nthree\nfour\nFIVE\n")
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    (repo / "a.cfg").write_text("ONE\ntwo\nthree\nfour\nfive\n")
    git(repo, "commit", "-qam", "ours")
    git(repo, "merge", "--no-edit", "side")
    assert (repo / "a.cfg").read_text() == "ONE\ntwo\nthree\nfour\nFIVE\n"


# ------------------------------------------------------------------ PyTorch zip checkpoints


def torch_bytes(sd: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


@pytest.mark.slow
def test_pytorch_checkpoints_merge_with_their_zip_crcs_updated(repo: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = {
        "small": torch.randn(8, 8, generator=g),  # CRC checked by our reader (<= 1 MiB)
        "big": torch.randn(600, 512, generator=g),  # > 1 MiB
        "tied": torch.randn(16, generator=g),
        "steps": torch.tensor([3]),
    }
    base["tied_alias"] = base["tied"]
    ours = {k: v.clone() for k, v in base.items() if k != "tied_alias"}
    theirs = {k: v.clone() for k, v in base.items() if k != "tied_alias"}
    for k in ("small", "big"):
        ours[k] += 0.1 * torch.randn(ours[k].shape, generator=g)
        theirs[k] += 0.1 * torch.randn(theirs[k].shape, generator=g)
    theirs["tied"] += 1  # one-sided
    ours["tied_alias"], theirs["tied_alias"] = ours["tied"], theirs["tied"]
    for name, sd in (("base", base), ("side", theirs), ("ours", ours)):
        if name == "side":
            git(repo, "checkout", "-qb", "side")
        (repo / "model.pt").write_bytes(torch_bytes(sd))
        git(repo, "add", "model.pt")
        git(repo, "commit", "-qm", name)
        if name == "side":
            git(repo, "checkout", "-q", "main")
    r = gtl(repo, "merge", "side", "--strategy", "ties", "--set", "density=0.5")
    assert "merged 2 tensors (ties 2)" in r.stderr
    assert manifest_at(repo, "HEAD", "model.pt").format == "pytorch"
    got = torch.load(repo / "model.pt", weights_only=True)
    for k in ("small", "big"):
        want = merge_tensors(base[k], ours[k], theirs[k], "ties", density=0.5)
        assert torch.equal(got[k], want), k
    assert torch.equal(got["tied"], theirs["tied"]) and got["tied_alias"].data_ptr() == got["tied"].data_ptr()
    assert torch.equal(got["steps"], base["steps"])
    assert_clean_checkout(repo, "model.pt")


def test_pytorch_one_sided_changes_are_combined(repo: Path) -> None:
    g = torch.Generator().manual_seed(1)
    base = {"a": torch.randn(64, generator=g), "b": torch.randn(300, 1000, generator=g)}
    ours = {"a": base["a"] + 1, "b": base["b"]}
    theirs = {"a": base["a"], "b": base["b"] * 2}
    for name, sd in (("base", base), ("side", theirs), ("ours", ours)):
        if name == "side":
            git(repo, "checkout", "-qb", "side")
        (repo / "model.pt").write_bytes(torch_bytes(sd))
        git(repo, "add", "model.pt")
        git(repo, "commit", "-qm", name)
        if name == "side":
            git(repo, "checkout", "-q", "main")
    git(repo, "merge", "--no-edit", "side")
    got = torch.load(repo / "model.pt", weights_only=True)
    assert torch.equal(got["a"], ours["a"]) and torch.equal(got["b"], theirs["b"])


# ------------------------------------------------------------------ histories


@pytest.mark.slow
def test_three_branch_history_merged_twice(repo: Path) -> None:
    """base -> task-a, task-b, task-c (each fine-tunes everything); main merges a, then b, then c:
    each later merge has the original base as its merge base and the previous merge as ours."""
    base = model()
    commit(repo, base, "pre-trained")
    tasks = {}
    for i, name in enumerate(("task-a", "task-b", "task-c"), start=1):
        git(repo, "checkout", "-q", "-b", name, "main")
        tasks[name] = finetune(base, 10 + i)
        commit(repo, tasks[name], name)
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "--no-edit", "task-a")  # fast-forward
    assert load(repo)["head.weight"].tobytes() == tasks["task-a"]["head.weight"].tobytes()
    gtl(repo, "merge", "task-b", "--strategy", "task-arithmetic")
    step1 = {
        k: expected(base, tasks["task-a"], tasks["task-b"], k, "task-arithmetic")
        if a.dtype == np.float32
        else a
        for k, a in base.items()
    }
    got = load(repo)
    for k in base:
        assert got[k].tobytes() == step1[k].tobytes(), k
    gtl(repo, "merge", "task-c", "--strategy", "task-arithmetic")
    got = load(repo)
    for k, a in base.items():
        want = expected(base, step1, tasks["task-c"], k, "task-arithmetic") if a.dtype == np.float32 else a
        assert got[k].tobytes() == want.tobytes(), k
    # sum of all three task vectors, up to float32 rounding
    k = "layer.0.mlp.weight"
    tv = sum(tasks[n][k].astype(np.float64) - base[k] for n in tasks)
    assert np.allclose(got[k], base[k] + tv, atol=1e-6)
    assert len(git(repo, "log", "--merges", "--format=%H").stdout.split()) == 2
    assert_clean_checkout(repo)


@pytest.mark.slow
def test_merge_of_an_earlier_merge_into_a_new_branch(repo: Path) -> None:
    """Criss-cross-free second merge: a branch started from the first merge merges again."""
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    git(repo, "merge", "--no-edit", "side")
    first = load(repo)
    git(repo, "checkout", "-q", "-b", "later", "side")
    later = dict(theirs)
    later["position_ids"] = theirs["position_ids"] + 5
    later["head.weight"] = finetune(theirs, 5, ["head.weight"])["head.weight"]
    commit(repo, later, "more on side")
    git(repo, "checkout", "-q", "main")
    r = git(repo, "merge", "--no-edit", "later")  # merge base: side
    got = load(repo)
    assert np.array_equal(got["position_ids"], later["position_ids"])  # changed on later only
    assert np.array_equal(got["layer.0.mlp.weight"], first["layer.0.mlp.weight"])  # on main only
    k = "head.weight"  # on both: main's is the first merge
    assert got[k].tobytes() == merge_tensors(theirs[k], first[k], later[k], "average").tobytes()
    assert "merged 1 tensor (average 1)" in r.stderr


# ------------------------------------------------------------------ remotes


@pytest.mark.slow
def test_merge_then_push_and_fresh_clone(repo: Path, tmp_path: Path) -> None:
    """The merged tensors are new objects: the pre-push hook uploads them with the merge
    commit, and a fresh clone checks out the merged model byte-exactly (file:// remote)."""
    gtl(repo, "install", "--global")  # the clone's checkout needs the filter
    remote = tmp_path / "remote.git"
    run("git", "init", "-q", "--bare", str(remote), cwd=tmp_path)
    git(repo, "remote", "add", "origin", str(remote))
    base = model()
    ours, theirs = finetune(base, 1), finetune(base, 2)
    branches(repo, base, ours, theirs)
    git(repo, "push", "-q", "origin", "main", "side")
    gtl(repo, "merge", "side", "--strategy", "ties")
    merged = (repo / F).read_bytes()
    git(repo, "push", "-q", "origin", "main")
    clone = tmp_path / "clone"
    run("git", "clone", "-q", str(remote), str(clone), cwd=tmp_path)
    assert (clone / F).read_bytes() == merged
    assert git(clone, "status", "--porcelain").stdout == ""
    # merging in the fresh clone downloads what the driver needs (their tensors, not checked out)
    git(clone, "checkout", "-q", "-b", "again", "HEAD~1")
    before = objects_in(clone)
    r = git(clone, "merge", "--no-edit", "origin/side")
    assert "merged 6 tensors (average 6)" in r.stderr
    assert len(objects_in(clone) - before) > 6  # theirs's objects came from the remote, plus the merged
    got = load(clone)
    for k in ("head.weight", "layer.0.mlp.weight"):
        assert got[k].tobytes() == expected(base, ours, theirs, k, "average").tobytes()
    shutil.rmtree(clone)


@pytest.mark.slow
def test_example_script_shows_a_real_effect(tmp_path: Path) -> None:
    """scripts/merge_example.py (docs/examples/merge-two-tasks.md): every merge of two tasks keeps
    both far above chance, while not merging the trunk (strategy ours) loses task B; every
    octopus merge of three tasks keeps all three, the task-vector methods better than averaging,
    and the tuned lambda's merge (checked by the script against merge_many_tensors, byte for byte)
    is at least as good as averaging."""
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "merge_example.py"
    out = run(sys.executable, str(script), "--dir", str(tmp_path / "example"), cwd=tmp_path).stdout
    rows, octo = {}, {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[1].endswith("%"):
            rows[cells[0]] = (float(cells[1][:-1]), float(cells[2][:-1]))
        if len(cells) == 6 and cells[1].endswith("%"):
            octo[cells[0]] = [float(c[:-1]) for c in cells[1:5]]  # A, B, C, normalized
    assert rows["fine-tuned on A (task-a)"][0] > 80 and rows["fine-tuned on B (task-b)"][1] > 80
    assert rows["`git merge` ours"][1] < 50
    for label, (a, b) in rows.items():
        if label.startswith("`git merge`") and "ours" not in label:
            assert a > 70 and b > 70, (label, a, b)
    for i, task in enumerate("ABC"):
        assert octo[f"fine-tuned on {task} (task-{task.lower()})"][i] > 80
    merges = {label: v for label, v in octo.items() if label.startswith("`git merge`")}
    assert len(merges) == 9 and any("(tuned)" in label for label in merges), merges
    pretrained = octo["pre-trained (main)"][3]
    average = merges["`git merge` average"][3]
    for label, (a, b, c, norm) in merges.items():
        assert norm > pretrained + 20, (label, norm)  # model stock included: it moves off θ₀
        if "model-stock" not in label:
            assert min(a, b, c) > 60 and norm > 75, (label, a, b, c, norm)
        if "task-arithmetic" in label or "ties" in label or "breadcrumbs" in label:
            assert norm > average, (label, norm, average)
    assert "merge-models=3" in out
