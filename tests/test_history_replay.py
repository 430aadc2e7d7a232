"""Git's history operations on checkpoints, through real git: cherry-pick, rebase (also a pure
reorder), revert and `am -3` replay a commit's change as a patch (ours + (theirs - base), exact
where only one side changed an entry), never an average; `git merge` keeps its strategies;
unrelated histories conflict; an octopus merge leaves the real checkpoint in the working tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes
from safetensors.numpy import load as st_load

F = "model.safetensors"


def st(tensors: dict[str, np.ndarray]) -> bytes:
    names = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int64): "I64"}
    return safetensors_bytes({k: (names[a.dtype], a.shape, a.tobytes()) for k, a in tensors.items()})


def commit(repo: Path, tensors: dict[str, np.ndarray], msg: str) -> None:
    (repo / F).write_bytes(st(tensors))
    git(repo, "add", F)
    git(repo, "commit", "-qm", msg)


def load(repo: Path) -> dict[str, np.ndarray]:
    return dict(st_load((repo / F).read_bytes()))


def at(repo: Path, rev: str) -> dict[str, np.ndarray]:
    """The checkpoint at rev, as git checks it out (smudged through the filter)."""
    git(repo, "checkout", "-q", rev, "--", F)
    out = load(repo)
    git(repo, "checkout", "-q", "HEAD", "--", F)
    return out


def base_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": (rng.standard_normal(100) * 0.05).astype(np.float32),
        "b": (rng.standard_normal((8, 8)) * 0.05).astype(np.float32),
        "c": (rng.standard_normal(16) * 0.05).astype(np.float16),
        "ids": np.arange(10, dtype=np.int64),
    }


def edit(
    sd: dict[str, np.ndarray], name: str, sl: slice, seed: int, step: float = 0.01
) -> dict[str, np.ndarray]:
    """A copy of sd with entries sl of tensor name moved by a random step."""
    out = {k: v.copy() for k, v in sd.items()}
    rng = np.random.default_rng(seed)
    x = out[name].reshape(-1)
    x[sl] = (x[sl] + rng.standard_normal(len(x[sl])) * step).astype(x.dtype)
    return out


def patch64(ours: np.ndarray, theirs: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The reference: ours + (theirs - base) in float64, rounded once."""
    r = ours.astype(np.float64) + (theirs.astype(np.float64) - base.astype(np.float64))
    return r.astype(ours.dtype)


def assert_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain").stdout == ""


def test_cherry_pick_applies_the_picked_change_exactly_where_only_it_changed(repo: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    git(repo, "checkout", "-qb", "side")
    side = edit(edit(v1, "a", slice(0, 40), 1), "b", slice(None), 2)
    commit(repo, side, "side: a[0:40] and all of b")
    git(repo, "checkout", "-q", "main")
    main = edit(edit(v1, "a", slice(30, 60), 3), "c", slice(None), 4)
    commit(repo, main, "main: a[30:60] and c")

    git(repo, "cherry-pick", "side")
    got = load(repo)
    a_ref = main["a"].copy()
    a_ref[:30] = side["a"][:30]  # only the picked commit changed these: its bits
    a_ref[40:60] = main["a"][40:60]  # only ours changed these: ours's bits
    a_ref[30:40] = patch64(main["a"][30:40], side["a"][30:40], v1["a"][30:40])  # both
    assert got["a"].tobytes() == a_ref.tobytes()
    assert got["b"].tobytes() == side["b"].tobytes()
    assert got["c"].tobytes() == main["c"].tobytes() and got["ids"].tobytes() == v1["ids"].tobytes()
    assert_clean(repo)
    # the average the old driver computed would have moved every entry of a[30:40] halfway
    assert not np.array_equal(got["a"][30:40], ((main["a"] + side["a"]) / 2)[30:40])


def test_disjoint_edits_replay_bit_for_bit(repo: Path) -> None:
    """Sparse edits to different entries of one tensor, like non-overlapping hunks of text."""
    v1 = base_model()
    commit(repo, v1, "v1")
    git(repo, "checkout", "-qb", "side")
    side = edit(v1, "b", slice(0, 16), 5)
    commit(repo, side, "side")
    git(repo, "checkout", "-q", "main")
    main = edit(v1, "b", slice(40, 64), 6)
    commit(repo, main, "main")
    git(repo, "cherry-pick", "side")
    want = main["b"].copy().reshape(-1)
    want[:16] = side["b"].reshape(-1)[:16]
    assert load(repo)["b"].tobytes() == want.tobytes()


@pytest.mark.slow
def test_rebase_that_only_reorders_commits_reproduces_the_tip(repo: Path) -> None:
    v0 = base_model()
    commit(repo, v0, "v0")
    c1 = edit(v0, "a", slice(0, 50), 7)
    commit(repo, c1, "c1: a[0:50]")
    c2 = edit(c1, "a", slice(25, 75), 8)
    commit(repo, c2, "c2: a[25:75]")
    tip = load(repo)
    # swap the last two commits
    env_editor = "sed -i -e '1{h;d}' -e '2{G}'"
    git(repo, "-c", f"sequence.editor={env_editor}", "rebase", "-q", "-i", "HEAD~2")
    assert "c1" in git(repo, "log", "-1", "--format=%s").stdout  # reordered: c1 is the tip now
    got = load(repo)
    assert got["a"][:25].tobytes() == tip["a"][:25].tobytes()  # only c1 touched these
    assert got["a"][50:75].tobytes() == tip["a"][50:75].tobytes()  # only c2
    assert got["a"][75:].tobytes() == tip["a"][75:].tobytes()
    np.testing.assert_allclose(got["a"][25:50], tip["a"][25:50], rtol=0, atol=1e-6)  # float rounding
    for k in ("b", "c", "ids"):
        assert got[k].tobytes() == tip[k].tobytes()
    assert_clean(repo)


@pytest.mark.slow
def test_rebase_onto_a_moved_main_replays_each_commit(repo: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    git(repo, "checkout", "-qb", "feature")
    f1 = edit(v1, "a", slice(0, 20), 9)
    commit(repo, f1, "feature 1")
    f2 = edit(f1, "b", slice(None), 10)
    commit(repo, f2, "feature 2")
    git(repo, "checkout", "-q", "main")
    m = edit(v1, "a", slice(50, 100), 11)
    commit(repo, m, "main moved")
    git(repo, "checkout", "-q", "feature")
    git(repo, "rebase", "-q", "main")
    got = load(repo)
    want = m["a"].copy()
    want[:20] = f1["a"][:20]
    assert got["a"].tobytes() == want.tobytes()
    assert got["b"].tobytes() == f2["b"].tobytes()
    assert_clean(repo)


def test_revert_removes_exactly_the_reverted_change(repo: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    v2 = edit(v1, "a", slice(None), 12)
    commit(repo, v2, "v2: all of a")
    v3 = edit(edit(v2, "a", slice(0, 10), 13), "b", slice(None), 14)
    commit(repo, v3, "v3: a[0:10] and b")
    git(repo, "revert", "--no-edit", "HEAD~1")
    got = load(repo)
    # entries only v2 changed go back to v1's bits; v3's own change stays
    assert got["a"][10:].tobytes() == v1["a"][10:].tobytes()
    assert got["a"][:10].tobytes() == patch64(v3["a"][:10], v1["a"][:10], v2["a"][:10]).tobytes()
    assert got["b"].tobytes() == v3["b"].tobytes()
    # not (v3 + v1) / 2, which the old driver gave
    assert not np.allclose(got["a"][10:], ((v3["a"] + v1["a"]) / 2)[10:])
    assert_clean(repo)


def test_am_three_way_replays_a_mailed_patch(repo: Path, tmp_path: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    git(repo, "checkout", "-qb", "side")
    side = edit(v1, "a", slice(0, 40), 15)
    commit(repo, side, "side")
    patch = git(repo, "format-patch", "-1", "--binary", "-o", str(tmp_path / "p"), "HEAD").stdout.strip()
    git(repo, "checkout", "-q", "main")
    main = edit(v1, "a", slice(60, 100), 16)
    commit(repo, main, "main")
    git(repo, "am", "-3", "-q", patch)
    want = main["a"].copy()
    want[:40] = side["a"][:40]
    assert load(repo)["a"].tobytes() == want.tobytes()
    assert_clean(repo)


@pytest.mark.slow
def test_pick_strategy_conflict_stops_instead(repo: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    git(repo, "checkout", "-qb", "side")
    side = edit(v1, "a", slice(0, 40), 17)
    commit(repo, side, "side")
    git(repo, "checkout", "-q", "main")
    main = edit(v1, "a", slice(30, 60), 18)
    commit(repo, main, "main")
    git(repo, "config", "theta-like.pickStrategy", "conflict")
    r = git(repo, "cherry-pick", "side", check=False)
    assert r.returncode != 0
    assert "a: changed on both sides, replaying" in r.stderr and "pickStrategy=conflict" in r.stderr
    assert F in git(repo, "diff", "--name-only", "--diff-filter=U").stdout
    gtl(repo, "mergetool", F, "--use", "theirs")
    git(repo, "-c", "core.editor=true", "cherry-pick", "--continue")
    assert load(repo)["a"].tobytes() == side["a"].tobytes()


@pytest.mark.slow
def test_git_merge_keeps_its_strategy_and_offers_patch(repo: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    git(repo, "checkout", "-qb", "side")
    side = edit(v1, "a", slice(None), 19)
    commit(repo, side, "side")
    git(repo, "checkout", "-q", "main")
    main = edit(v1, "a", slice(None), 20)
    commit(repo, main, "main")
    git(repo, "branch", "main-before")
    git(repo, "merge", "-q", "--no-edit", "side")  # a real merge: the default strategy (average)
    avg = ((main["a"].astype(np.float32) + side["a"]) / 2).astype(np.float32)
    np.testing.assert_allclose(load(repo)["a"], avg, rtol=0, atol=1e-7)
    git(repo, "reset", "-q", "--hard", "main-before")
    gtl(repo, "merge", "side", "--strategy", "patch")
    assert load(repo)["a"].tobytes() == patch64(main["a"], side["a"], v1["a"]).tobytes()


@pytest.mark.slow
def test_unrelated_histories_are_an_add_add_conflict(repo: Path, tmp_path: Path) -> None:
    commit(repo, base_model(), "ours")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    gtl(other, "install")
    gtl(other, "track", "*.safetensors")
    theirs = edit(base_model(), "a", slice(None), 21, step=1.0)
    (other / ".gitattributes").write_text((repo / ".gitattributes").read_text())
    commit(other, theirs, "theirs, made independently")
    git(repo, "remote", "add", "origin", str(other))  # its LFS objects come from there too
    git(repo, "fetch", "-q", "origin")
    r = git(repo, "merge", "--allow-unrelated-histories", "--no-edit", "origin/main", check=False)
    assert r.returncode != 0
    assert "no merge base" in r.stderr
    assert F in git(repo, "diff", "--name-only", "--diff-filter=U").stdout
    gtl(repo, "mergetool", F, "--use", "theirs")
    git(repo, "commit", "-qm", "take theirs")
    assert load(repo)["a"].tobytes() == theirs["a"].tobytes()
    assert_clean(repo)


@pytest.mark.slow
def test_octopus_merge_leaves_the_real_checkpoint(repo: Path) -> None:
    v1 = base_model()
    commit(repo, v1, "v1")
    heads = {"x": ("a", 22), "y": ("c", 23)}  # tensors apart in the manifest: git's text merge is clean
    changed = {}
    for br, (name, seed) in heads.items():
        git(repo, "checkout", "-q", "-b", br, "main")
        sd = edit(v1, name, slice(None), seed)
        changed[name] = sd[name]
        commit(repo, sd, br)
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "--no-edit", "x", "y")
    assert len(git(repo, "log", "-1", "--format=%P").stdout.split()) == 3  # an octopus
    got = load(repo)  # a real safetensors file, not manifest text
    assert got["a"].tobytes() == changed["a"].tobytes()
    assert got["c"].tobytes() == changed["c"].tobytes()
    assert got["b"].tobytes() == v1["b"].tobytes()
    assert_clean(repo)
    assert at(repo, "HEAD")["a"].tobytes() == changed["a"].tobytes()


@pytest.mark.parametrize("dtype", ["F16", "I64"])
def test_patch_of_other_dtypes(dtype: str) -> None:
    from git_theta_like.merge.strategies import make_strategy

    kind = {"F16": np.float16, "I64": np.int64}[dtype]
    base = np.arange(8).astype(kind)
    ours, theirs = base.copy(), base.copy()
    ours[:4] += kind(3)
    theirs[2:6] += kind(5)
    got = np.frombuffer(make_strategy("patch").merge_bits(base, ours, theirs, dtype), kind)
    want = base.copy()
    want[:2] = ours[:2]
    want[2:4] = ours[2:4] + kind(5)
    want[4:6] = theirs[4:6]
    assert got.tobytes() == want.tobytes()


@pytest.mark.parametrize("dtype", ["F32", "BF16", "I32", "F8_E4M3"])
def test_patch_in_blocks_gives_the_bits_of_the_whole_tensor(
    dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """patch runs entry by entry, a block at a time (bounded masks and float64 copies): blocks
    that do not divide the tensor give the bytes of one pass, disjoint, equal and overlapping
    changes alike; an overlap it cannot replay is the same conflict."""
    from git_theta_like.errors import MergeConflictError
    from git_theta_like.merge.strategies import base as strategy_base
    from git_theta_like.merge.strategies import make_strategy

    width = {"F32": 4, "BF16": 2, "I32": 4, "F8_E4M3": 1}[dtype]
    kind = {1: np.uint8, 2: np.uint16, 4: np.uint32}[width]
    rng = np.random.default_rng(5)
    n = 1000
    base = rng.integers(0, 1 << (8 * width - 2), n, dtype=np.uint64).astype(kind)  # finite floats
    ours, theirs = base.copy(), base.copy()
    ours[rng.random(n) < 0.3] ^= kind(1)
    theirs[rng.random(n) < 0.3] ^= kind(2)
    theirs[:50] = ours[:50]  # changed alike
    patch = make_strategy("patch")

    def merged() -> bytes | str:
        try:
            return bytes(patch.merge_bits(base.tobytes(), ours.tobytes(), theirs.tobytes(), dtype, "w"))
        except MergeConflictError as e:
            return str(e)

    whole = merged()
    monkeypatch.setattr(strategy_base, "BLOCK_ELEMENTS", 37)
    assert merged() == whole
    assert isinstance(whole, str) == (dtype == "F8_E4M3")  # 1-byte floats: overlaps conflict
