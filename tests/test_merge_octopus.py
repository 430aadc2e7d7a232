"""N-way (octopus) merges of checkpoints: `git merge -s theta-like A B C`, plain `git merge A B C`
with pull.octopus, `git theta-like merge A B`, per-model and per-layer parameters.

The strategies here are defined by the test (registered in the git-merge-theta-like wrapper the
test puts on PATH), so that the results are checked against an independent numpy computation
whatever the built-in strategies' N-way implementations do: `test-mean` merges any number of
models (a weighted mean of task vectors with a per-model `weight` and a `scale`), `test-pair`
merges two (max_models = 2).
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import git, gtl, gtl_here
from fixtures import safetensors_bytes
from safetensors.numpy import load as st_load

from git_theta_like.errors import MergeConfigError
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry
from git_theta_like.merge import config
from git_theta_like.merge.plan import plan_many
from git_theta_like.merge.strategies import STRATEGIES
from git_theta_like.merge.strategies.base import ManyModels, Param, Strategy, TensorContext

if TYPE_CHECKING:
    from torch import Tensor

F = "model.safetensors"


class TestMean(ManyModels):
    """base + scale * sum_i(w_i * tau_i) / sum_i(w_i), over every model."""

    __test__ = False  # not a test class
    name = "test-mean"
    summary = "test: weighted mean of task vectors"
    params = (Param("weight", float, 1.0, "weight of a model", 0), Param("scale", float, 1.0, "scale"))
    needs_base = True
    max_models = None
    per_model_params = ("weight",)

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        assert base is not None
        per = list(ctx.per_model) or [{} for _ in models]
        ws = [float(per[i].get("weight", self["weight"])) for i in range(len(models))]
        tv = sum(w * (m - base) for w, m in zip(ws, models, strict=True)) / sum(ws)
        return base + tv * float(self["scale"])  # type: ignore[no-any-return]


class TestPair(Strategy):
    __test__ = False
    name = "test-pair"
    summary = "test: mean of two models"

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        return (ours + theirs) * 0.5


def register() -> None:
    """Called by the wrapper script in git's subprocess."""
    STRATEGIES[TestMean.name] = TestMean
    STRATEGIES[TestPair.name] = TestPair


@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STRATEGIES, TestMean.name, TestMean)
    monkeypatch.setitem(STRATEGIES, TestPair.name, TestPair)


@pytest.fixture
def strategy_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git-merge-theta-like on PATH (the console script the package declares), with the test's
    strategies registered."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "git-merge-theta-like"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_merge_octopus\n"
        "test_merge_octopus.register()\n"
        "from git_theta_like.merge.octopus import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


# ------------------------------------------------------------------ models and repositories


def st(tensors: dict[str, np.ndarray]) -> bytes:
    dt = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    return safetensors_bytes({k: (dt[a.dtype], a.shape, a.tobytes()) for k, a in tensors.items()})


def base_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    return {
        "model.embed.weight": w(20, 8),
        "model.layers.0.mlp.weight": w(8, 8),
        "model.layers.0.norm.weight": w(8),
        "model.layers.1.mlp.weight": w(8, 8),
        "model.layers.1.norm.weight": w(8),
        "model.norm.weight": w(8),
        "position_ids": np.arange(6, dtype=np.int64),
    }


def finetune(sd: dict[str, np.ndarray], seed: int, names: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for k in names:
        out[k] = (sd[k] + rng.standard_normal(sd[k].shape) * 0.01).astype(np.float32)
    return out


def _git(repo: Path, *args: str, input: bytes | None = None, index: Path | None = None) -> str:
    env = {**os.environ, **({"GIT_INDEX_FILE": str(index)} if index else {})}
    p = subprocess.run(["git", *args], cwd=repo, input=input, capture_output=True, env=env)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode().strip()


def commit(repo: Path, files: dict[str, bytes | str], msg: str, ref: str = "main") -> None:
    """A commit of files on top of ref (the branch is made from main when it does not exist),
    made with git's plumbing and an in-process clean: no filter process, no checkout. The work
    tree is brought to main's commit by `checkout_main`."""
    from git_theta_like.filters import engine_for
    from git_theta_like.formats import ByteReader
    from git_theta_like.gitio.repo import Repo

    index = repo / ".git" / "test-index"
    exists = subprocess.run(
        ["git", "rev-parse", "-q", "--verify", f"refs/heads/{ref}"], cwd=repo, capture_output=True
    )
    parent = exists.stdout.decode().strip() if exists.returncode == 0 else _git(repo, "rev-parse", "main")
    _git(repo, "read-tree", parent, index=index)
    with engine_for(Repo(repo)) as engine:
        for name, data in files.items():
            raw = data.encode() if isinstance(data, str) else data
            if name.endswith(".safetensors"):
                raw = engine.clean(ByteReader(io.BytesIO(raw)), path=name)
            oid = _git(repo, "hash-object", "-w", "--no-filters", "--stdin", input=raw)
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{oid},{name}", index=index)
    tree = _git(repo, "write-tree", index=index)
    sha = _git(repo, "commit-tree", tree, "-p", parent, "-m", msg)
    _git(repo, "update-ref", f"refs/heads/{ref}", sha)
    index.unlink()


def branch(repo: Path, name: str, files: dict[str, bytes | str]) -> None:
    commit(repo, files, name, ref=name)


def checkout_main(repo: Path) -> None:
    git(repo, "reset", "-q", "--hard", "main")


def load(repo: Path) -> dict[str, np.ndarray]:
    return dict(st_load((repo / F).read_bytes()))


def recipe(repo: Path, tensor: str) -> dict[str, str]:
    m = Manifest.from_text(git(repo, "show", f"HEAD:{F}").stdout)
    t = next(t for t in m.tensors if t.name == tensor)
    return {k: v for k, v in t.obj.extra if k.startswith("merge")}


def mean(base: np.ndarray, models: list[np.ndarray], weights: list[float], scale: float = 1.0) -> np.ndarray:
    b = base.astype(np.float64)
    tv = sum(w * (m.astype(np.float64) - b) for w, m in zip(weights, models, strict=True)) / sum(weights)
    return (b + scale * tv).astype(np.float32)  # type: ignore[no-any-return]


NOTES = "".join(f"line {i}\n" for i in range(10))

THREE = {
    "a": ["model.embed.weight", "model.layers.0.mlp.weight"],
    "b": ["model.layers.0.mlp.weight", "model.layers.1.mlp.weight", "model.layers.0.norm.weight"],
    "c": ["model.layers.1.mlp.weight", "model.norm.weight"],
}


def three_finetunes(repo: Path, toml: str, names: dict[str, str] | None = None) -> dict[str, dict]:
    """base on main (with .theta-like.toml and notes.txt); three fine-tunes of it on branches,
    each also touching a text file. HEAD: main, still the base."""
    base = base_model()
    commit(repo, {F: st(base), ".theta-like.toml": toml, "notes.txt": NOTES}, "base")
    sds = {"base": base}
    for i, (b, changed) in enumerate(THREE.items(), start=1):
        sd = finetune(base, i, changed)
        sds[b] = sd
        files: dict[str, bytes | str] = {F: st(sd)}
        if b == "a":
            files["notes.txt"] = NOTES.replace("line 0", "line 0 (a)")
        elif b == "b":
            files["notes.txt"] = NOTES.replace("line 9", "line 9 (b)")
        else:
            files["c.txt"] = "from c\n"
        branch(repo, (names or {}).get(b, b), files)
    checkout_main(repo)
    return sds


def check_three(
    repo: Path, sds: dict[str, dict], branches: Sequence[str], weights: dict[str, float] | None = None
) -> None:
    got = load(repo)
    base = sds["base"]
    heads = ["a", "b", "c"]
    ws = [(weights or {}).get(h, 1.0) for h in heads]
    for name in base:
        changed = [h for h in heads if name in THREE[h]]
        if len(changed) == 1:
            assert got[name].tobytes() == sds[changed[0]][name].tobytes(), name  # taken exactly
        elif not changed:
            assert got[name].tobytes() == base[name].tobytes(), name
        else:
            want = mean(base[name], [sds[h][name] for h in heads], ws)
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
            assert not np.array_equal(got[name], sds[changed[0]][name])
    assert (repo / "notes.txt").read_text() == NOTES.replace("line 0", "line 0 (a)").replace(
        "line 9", "line 9 (b)"
    )
    assert (repo / "c.txt").read_text() == "from c\n"
    assert git(repo, "status", "--porcelain").stdout == ""
    parents = git(repo, "log", "-1", "--format=%P").stdout.split()
    heads = git(repo, "rev-parse", *(b for b in branches if b != "main")).stdout.split()
    assert set(heads) <= set(parents)  # one merge commit of every head


# ------------------------------------------------------------------ through git


def test_octopus_of_three_finetunes_with_s_theta_like(repo: Path, strategy_on_path: None) -> None:
    sds = three_finetunes(repo, '[merge]\nstrategy = "test-mean"\n')
    r = git(repo, "merge", "--no-edit", "-s", "theta-like", "a", "b", "c")
    assert "models: a, b, c" in r.stderr  # HEAD is the base: the three fine-tunes are the models
    check_three(repo, sds, ["a", "b", "c"])
    k = "model.layers.0.mlp.weight"
    assert recipe(repo, k) == {
        "merge": "test-mean",
        "merge-params": "weight:1.0,scale:1.0",
        "merge-models": "3",
    }
    assert recipe(repo, "model.embed.weight") == {}  # taken from a as it is
    data = (repo / F).read_bytes()  # a fresh checkout gives the same bytes
    (repo / F).unlink()
    git(repo, "checkout", "--", F)
    assert (repo / F).read_bytes() == data


TOML_WEIGHTS = """
[merge]
strategy = "test-mean"

[[merge.rules]]
tensor = "model.layers.*"
strategy = "test-mean"
weights = {ours = 2.0, "feature/x" = 1.0, b = 0.5}
scale = [0.25, 1.0]
"""


@pytest.mark.slow
def test_plain_git_merge_uses_pull_octopus_with_branch_weights_and_a_gradient(
    repo: Path, strategy_on_path: None
) -> None:
    git(repo, "config", "pull.octopus", "theta-like")
    base = base_model()
    commit(repo, {F: st(base), ".theta-like.toml": TOML_WEIGHTS}, "base")
    changed = ["model.layers.0.mlp.weight", "model.layers.1.mlp.weight", "model.norm.weight"]
    sx, sb = finetune(base, 1, changed), finetune(base, 2, changed)
    branch(repo, "feature/x", {F: st(sx)})
    branch(repo, "b", {F: st(sb)})
    so = finetune(base, 3, changed)
    commit(repo, {F: st(so)}, "ours")  # ours changed too: it is a model
    checkout_main(repo)
    r = git(repo, "merge", "--no-edit", "feature/x", "b")  # no -s: pull.octopus chooses
    assert "models: ours, feature/x, b" in r.stderr
    got = load(repo)
    models = [so, sx, sb]
    for name, scale in (("model.layers.0.mlp.weight", 0.25), ("model.layers.1.mlp.weight", 1.0)):
        want = mean(base[name], [m[name] for m in models], [2.0, 1.0, 0.5], scale)
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
    name = "model.norm.weight"  # no rule: the [merge] default, equal weights, scale 1
    np.testing.assert_allclose(got[name], mean(base[name], [m[name] for m in models], [1, 1, 1]), rtol=1e-5)
    assert recipe(repo, "model.layers.1.mlp.weight") == {
        "merge": "test-mean",
        "merge-params": "weight:1.0,scale:1.0",
        "merge-models": "3",
        "merge-per-model": "weight:2.0/1.0/0.5",
    }
    assert recipe(repo, "model.layers.0.mlp.weight")["merge-params"] == "weight:1.0,scale:0.25"
    assert git(repo, "status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_cli_merges_several_branches_and_conflicts_are_named_per_tensor(
    repo: Path, strategy_on_path: None, registered: None
) -> None:
    base = base_model()
    toml = '[merge]\nstrategy = "test-mean"\n[[merge.rules]]\ntensor = "*norm*"\nstrategy = "test-pair"\n'
    commit(repo, {F: st(base), ".theta-like.toml": toml}, "base")
    changed = ["model.layers.0.mlp.weight", "model.layers.1.norm.weight", "model.embed.weight"]
    sa, sb = finetune(base, 1, changed), finetune(base, 2, changed)
    sb["model.embed.weight"] = np.zeros((21, 8), np.float32)  # b reshaped it
    branch(repo, "a", {F: st(sa)})
    branch(repo, "b", {F: st(sb)})
    commit(repo, {F: st(finetune(base, 3, changed))}, "ours")
    checkout_main(repo)
    before = git(repo, "rev-parse", "HEAD").stdout
    with pytest.raises(SystemExit) as e:
        gtl_here(repo, "merge", "a", "b", "--strategy", "test-mean")  # --strategy replaces the rules
    assert e.value.code == 1
    r = git(repo, "ls-files", "-u", F)
    assert {line.split()[2] for line in r.stdout.splitlines()} == {"1", "2", "3"}  # unmerged
    assert git(repo, "rev-parse", "HEAD").stdout == before
    git(repo, "merge", "--abort")
    # without --strategy the rule's test-pair merges two models only
    r = git(repo, "merge", "--no-edit", "-s", "theta-like", "a", "b", check=False)
    assert r.returncode == 1, r.stderr
    assert "model.embed.weight: shape differs: ours [20,8], a [20,8], b [21,8]" in r.stderr
    assert (
        "model.layers.1.norm.weight: changed in ours, a, b; test-pair (from .theta-like.toml rule 1)"
        in r.stderr
    )
    assert "merges 2 models, this merge has 3 (ours, a, b)" in r.stderr
    assert "model.layers.0.mlp.weight" not in r.stderr  # merged by the default, test-mean
    ours_bytes = (repo / F).read_bytes()
    assert np.array_equal(load(repo)["model.embed.weight"], finetune(base, 3, changed)["model.embed.weight"])
    r = git(repo, "theta-like", "mergetool", F, "--use", "merged", check=False)
    assert r.returncode != 0 and "an octopus merge has no three-way MERGED version" in r.stderr
    git(repo, "theta-like", "mergetool", F, "--use", "ours")  # resolved; the octopus concludes
    git(repo, "commit", "--no-edit")
    assert len(git(repo, "log", "-1", "--format=%P").stdout.split()) == 3
    assert (repo / F).read_bytes() == ours_bytes
    assert git(repo, "status", "--porcelain").stdout == ""


def test_a_bad_configuration_stops_the_merge_before_anything_changes(
    repo: Path, strategy_on_path: None
) -> None:
    base = base_model()
    toml = '[merge]\nstrategy = "test-mean"\nweights = {ours = 1.0, "feature/y" = 2.0}\n'
    commit(repo, {F: st(base), ".theta-like.toml": toml}, "base")
    for i, b in enumerate(("a", "b"), start=1):
        branch(repo, b, {F: st(finetune(base, i, ["model.norm.weight"])), f"{b}.txt": b})
    commit(repo, {F: st(finetune(base, 3, ["model.norm.weight"]))}, "ours")
    checkout_main(repo)
    r = git(repo, "merge", "--no-edit", "-s", "theta-like", "a", "b", check=False)
    assert r.returncode != 0
    assert "'feature/y' is not one of the merged models (ours, a, b" in r.stderr
    assert git(repo, "status", "--porcelain").stdout == ""
    assert not (repo / "a.txt").exists()


# ------------------------------------------------------------------ configuration and plan (no git)


def test_gradients_follow_mergekit() -> None:
    assert config.layer_index("model.layers.7.mlp.up_proj.weight") == 7
    assert config.layer_index("encoder.layer.0.attention.weight") == 0
    assert config.layer_index("model.embed_tokens.weight") is None
    assert config.layer_count(["model.layers.0.x", "model.layers.3.x", "lm_head.weight"]) == 4
    assert config.layer_t("model.layers.3.x", 4) == 1.0
    assert config.layer_t("model.layers.1.x", 5) == 0.25
    assert config.layer_t("lm_head.weight", 4) == 0.0  # no layer index: the first value
    assert config.interpolate([0.0, 1.0, 0.0], 0.25) == 0.5
    assert config.interpolate([0.2, 0.8], 1.0) == 0.8


def test_per_model_and_gradient_errors(registered: None) -> None:
    with pytest.raises(
        MergeConfigError, match=r"rule 1: parameter density = \[0.5\]: a gradient needs at least two"
    ):
        config.parse_toml('[[merge.rules]]\ntensor = "*"\nstrategy = "ties"\ndensity = [0.5]\n')
    with pytest.raises(MergeConfigError, match=r"density must be in \(0, 1\], not 1.5"):
        config.parse_toml('[[merge.rules]]\ntensor = "*"\nstrategy = "ties"\ndensity = [0.5, 1.5]\n')
    with pytest.raises(
        MergeConfigError, match=r"average has no per-model parameter 'weights' \(it takes no per-model"
    ):
        config.parse_toml('[merge]\nstrategy = "average"\nweights = {ours = 1.0}\n')
    with pytest.raises(MergeConfigError, match=r"weights.ours: parameter weight must be in \[0, inf\)"):
        config.parse_toml('[merge]\nstrategy = "test-mean"\nweights = {ours = -1.0}\n')
    rules, default = config.parse_toml(
        '[merge]\nstrategy = "test-mean"\nweights = {ours = 1.0, x = [0, 2]}\n'
    )
    cfg = config.MergeConfig(rules=rules, default=default)
    with pytest.raises(MergeConfigError, match=r"'x' is not one of the merged models \(ours, y"):
        cfg.bind_models(["ours", "y"])
    cfg.bind_models(["ours", "x", "y"])
    assert cfg.choose(F, "model.layers.1.w", 0.5).per_model == ({"weight": 1.0}, {"weight": 1.0}, {})


def entry(name: str, raw: str, shape: tuple[int, ...] = (4,)) -> TensorEntry:
    return TensorEntry(
        name, "F32", shape, 0, 4 * int(np.prod(shape)), ObjectRef(raw * 64, "0" * 64, 10, "raw")
    )


def manifest(*entries: TensorEntry) -> Manifest:
    tensors, pos = [], 100
    for e in entries:
        tensors.append(TensorEntry(e.name, e.dtype, e.shape, pos, e.length, e.obj))
        pos += e.length
    return Manifest("safetensors", pos, 100, ObjectRef("f" * 64, "0" * 64, 10, "raw"), tensors)


def test_plan_many_rules(registered: None) -> None:
    base = manifest(
        entry("same", "1"), entry("one", "1"), entry("alike", "1"), entry("both", "1"), entry("gone", "1")
    )
    heads = [
        manifest(
            entry("same", "1"), entry("one", "1"), entry("alike", "2"), entry("both", "2"), entry("gone", "1")
        ),
        manifest(entry("same", "1"), entry("one", "3"), entry("alike", "2"), entry("both", "3")),
        manifest(
            entry("same", "1"), entry("one", "1"), entry("alike", "1"), entry("both", "1"), entry("gone", "4")
        ),
    ]
    cfg = config.MergeConfig(cli_strategy="test-mean")
    plan = plan_many(F, base, heads, ["ours", "a", "b"], cfg)
    assert [c.line() for c in plan.conflicts] == ["gone: deleted in a, changed in b"]
    del heads[2].tensors[-1], heads[0].tensors[-1]
    plan = plan_many(F, base, heads, ["ours", "a", "b"], cfg)
    assert not plan.conflicts
    sides = {s.name: (s.side, s.entry.obj.raw[0] if s.entry else None) for s in plan.slots}
    assert sides == {
        "same": ("both", "1"),
        "one": ("theirs", "3"),
        "alike": ("both", "2"),
        "both": ("merged", None),
    }
    job = plan.jobs[0]
    assert [e.obj.raw[0] for e in job.models] == ["2", "3", "1"]  # b left it: the base's value


def test_a_two_branch_merge_takes_per_model_weights_and_gradients_too(
    repo: Path, registered: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge driver (run in this process, where the test strategy is registered) names its
    two models ours and the branch as git names it in GITHEAD_<oid>."""
    from git_theta_like.filters.engine import Engine
    from git_theta_like.gitio.repo import Repo
    from git_theta_like.merge import driver
    from git_theta_like.store import store_of

    base = base_model()
    toml = '[merge]\nstrategy = "test-mean"\nweights = {ours = 3.0, "feature/x" = 1.0}\nscale = [0.5, 1.0]\n'
    commit(repo, {F: st(base), ".theta-like.toml": toml}, "base")
    names = ["model.layers.0.mlp.weight", "model.layers.1.mlp.weight", "model.norm.weight"]
    sx, so = finetune(base, 1, names), finetune(base, 2, names)
    branch(repo, "feature/x", {F: st(sx)})
    commit(repo, {F: st(so)}, "ours")
    for rev, f in (("main~1", "O"), ("main", "A"), ("feature/x", "B")):
        (tmp_path / f).write_text(git(repo, "show", f"{rev}:{F}").stdout)
    monkeypatch.chdir(repo)
    monkeypatch.setenv(f"GITHEAD_{git(repo, 'rev-parse', 'feature/x').stdout.strip()}", "feature/x")
    assert driver.main(str(tmp_path / "O"), str(tmp_path / "A"), str(tmp_path / "B"), F) == 0
    merged = Manifest.from_text((tmp_path / "A").read_text())
    out = io.BytesIO()
    with Engine(store_of(Repo(repo))) as engine:
        engine.smudge(merged, out.write)
    got = st_load(out.getvalue())
    # layer 0 of 2: the first value; layer 1: the last; no layer index (final norm): the first
    for name, scale in zip(names, (0.5, 1.0, 0.5), strict=True):
        want = mean(base[name], [so[name], sx[name]], [3.0, 1.0], scale)
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
        extra = dict(next(t for t in merged.tensors if t.name == name).obj.extra)
        assert extra["merge-per-model"] == "weight:3.0/1.0"
        assert extra["merge-params"] == f"weight:1.0,scale:{scale}"
        assert "merge-models" not in extra  # two models


@pytest.mark.slow
def test_sharded_model_octopus_with_a_model_wide_gradient(repo: Path, strategy_on_path: None) -> None:
    """Shards keep their layout: each is merged N-way, and a gradient runs over the model's
    three layers (from the index json), not over the layers of one shard."""
    import json

    rng = np.random.default_rng(5)
    base = {
        f"model.layers.{i}.mlp.weight": (rng.standard_normal((8, 8)) * 0.05).astype(np.float32)
        for i in range(3)
    }
    base["model.norm.weight"] = np.ones(8, np.float32)
    shards = {
        "model-00001-of-00002.safetensors": ["model.layers.0.mlp.weight", "model.layers.1.mlp.weight"],
        "model-00002-of-00002.safetensors": ["model.layers.2.mlp.weight", "model.norm.weight"],
    }
    index = json.dumps({"metadata": {}, "weight_map": {n: s for s, ns in shards.items() for n in ns}})

    def files(sd: dict[str, np.ndarray]) -> dict[str, bytes | str]:
        return {s: st({n: sd[n] for n in ns}) for s, ns in shards.items()}

    toml = '[merge]\nstrategy = "test-mean"\nscale = [0.0, 1.0]\n'
    commit(repo, {**files(base), "model.safetensors.index.json": index, ".theta-like.toml": toml}, "base")
    sds = {b: finetune(base, i, list(base)) for i, b in enumerate(("a", "b", "c"), start=1)}
    for b, sd in sds.items():
        branch(repo, b, files(sd))
    checkout_main(repo)
    git(repo, "merge", "--no-edit", "-s", "theta-like", "a", "b", "c")
    for s, ns in shards.items():
        got = dict(st_load((repo / s).read_bytes()))
        for n in ns:
            i = config.layer_index(n)
            t = i / 2 if i is not None else 0.0  # layer i of 3; the final norm: the first value
            want = mean(base[n], [sd[n] for sd in sds.values()], [1, 1, 1], t)
            np.testing.assert_allclose(got[n], want, rtol=1e-5, atol=1e-7, err_msg=n)
    assert git(repo, "status", "--porcelain").stdout == ""


def test_octopus_multislerp_through_git(repo: Path) -> None:
    """A built-in N-model geometric method through real git: `git merge a b c` with multislerp
    gives, per tensor changed in several heads, merge_many_tensors of the three (a head that
    left it unchanged contributing the base's value), recorded as multislerp of 3 models."""
    from git_theta_like.merge.compute import merge_many_tensors

    sds = three_finetunes(repo, '[merge]\nstrategy = "multislerp"\n')
    gtl(repo, "merge", "a", "b", "c")
    got = load(repo)
    for name in ("model.layers.0.mlp.weight", "model.layers.1.mlp.weight"):
        want = merge_many_tensors(sds["base"][name], [sds[h][name] for h in "abc"], "multislerp")
        assert got[name].tobytes() == want.tobytes(), name
        assert recipe(repo, name)["merge"] == "multislerp" and recipe(repo, name)["merge-models"] == "3"
    assert got["model.norm.weight"].tobytes() == sds["c"]["model.norm.weight"].tobytes()  # one side
