"""mergekit YAML recipes through the command line: `git theta-like merge --recipe FILE` merges
the branches a mergekit config names as it says (the same merge as the equivalent
`.theta-like.toml`, byte for byte), and `git theta-like show REV --recipe` prints the recipe a
merge commit records as a mergekit config that merges the same again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl, gtl_here
from fixtures import safetensors_bytes

from git_theta_like.errors import MergeConfigError
from git_theta_like.gitio.repo import Repo
from git_theta_like.merge import config
from git_theta_like.merge.mergekit import Conditional, Gradient, MergedTensor, from_merged, load_recipe
from git_theta_like.merge.strategies import make_strategy

F = "model.safetensors"
LAYERS = 5

RECIPE = """\
merge_method: ties
base_model: main
models:
  - model: a
    parameters: {weight: 0.5, density: 0.5}
  - model: b
    parameters: {weight: 0.3}
  - model: c
    parameters: {weight: [0.2, 0.6]}
parameters:
  density: [0.3, 0.9]
dtype: float32
"""

# the same merge as a .theta-like.toml says it (what the recipe implies, spelled out)
TOML = """\
[merge]
strategy = "ties"
conventions = "mergekit"
normalize = true
rescale = false
density = [0.3, 0.9]
weights = {a = 0.5, b = 0.3, c = [0.2, 0.6]}
densities = {a = 0.5}
"""


def model(seed: int | None) -> bytes:
    """A small model: embeddings, LAYERS layers, a final norm; seed None: the base, else a
    fine-tune of it (every tensor changed)."""
    rng = np.random.default_rng(0)
    names = ["model.embed.weight"]
    names += [f"model.layers.{i}.mlp.weight" for i in range(LAYERS)]
    names += ["model.norm.weight"]
    sd = {n: (rng.standard_normal((8, 8)) * 0.05).astype(np.float32) for n in names}
    if seed is not None:
        ft = np.random.default_rng(seed)
        sd = {n: (a + ft.standard_normal(a.shape) * 0.01).astype(np.float32) for n, a in sd.items()}
    return safetensors_bytes({n: ("F32", a.shape, a.tobytes()) for n, a in sd.items()})


@pytest.fixture
def three(repo: Path) -> Path:
    """main: the base model; branches a, b, c: three fine-tunes of it. HEAD: main."""
    (repo / F).write_bytes(model(None))
    git(repo, "add", F)
    git(repo, "commit", "-qm", "base")
    for i, b in enumerate("abc", start=1):
        git(repo, "checkout", "-qb", b, "main")
        (repo / F).write_bytes(model(i))
        git(repo, "add", F)
        git(repo, "commit", "-qm", f"fine-tune {b}")
    git(repo, "checkout", "-q", "main")
    return repo


@pytest.fixture
def history(repo: Path) -> Path:
    """main and three branches a, b, c off it, without checkpoints: what a recipe's checks of
    revisions look at (nothing is merged)."""
    git(repo, "commit", "-q", "--allow-empty", "-m", "base")
    for b in "abc":
        git(repo, "checkout", "-qb", b, "main")
        git(repo, "commit", "-q", "--allow-empty", "-m", b)
    git(repo, "checkout", "-q", "main")
    return repo


def manifest_at(repo: Path, rev: str) -> str:
    return git(repo, "cat-file", "blob", f"{rev}:{F}").stdout


@pytest.mark.slow
def test_recipe_octopus_equals_the_toml_and_show_round_trips(three: Path, tmp_path: Path) -> None:
    repo = three
    recipe = tmp_path / "merge.yml"
    recipe.write_text(RECIPE)
    # the recipe's merge: HEAD is the base_model, the three models are merged into it
    git(repo, "checkout", "-qb", "by-recipe", "main")
    gtl(repo, "merge", "--recipe", str(recipe))
    by_recipe = manifest_at(repo, "HEAD")
    parents = git(repo, "log", "-1", "--format=%P").stdout.split()
    assert parents == git(repo, "rev-parse", "a", "b", "c").stdout.split()  # git leaves out HEAD
    lines = [ln for ln in by_recipe.splitlines() if "merge=ties" in ln]
    assert len(lines) == LAYERS + 2  # every tensor merged
    assert all("conventions:mergekit" in ln and "merge-models=3" in ln for ln in lines)
    assert "merge-per-model=density:0.5/-/-,weight:0.5/0.3/0.2" in lines[0]  # embed: t = 0
    assert "density:0.9," in next(ln for ln in lines if "layers.4." in ln)  # the last layer
    merged_file = (repo / F).read_bytes()

    # the same merge configured by .theta-like.toml: the same bytes
    git(repo, "checkout", "-qb", "by-toml", "main")
    (repo / ".theta-like.toml").write_text(TOML)
    gtl(repo, "merge", "a", "b", "c")
    assert manifest_at(repo, "HEAD") == by_recipe
    assert (repo / F).read_bytes() == merged_file

    # the recipe wins over .theta-like.toml (here another strategy)
    git(repo, "checkout", "-qb", "over-toml", "main")
    (repo / ".theta-like.toml").write_text('[merge]\nstrategy = "average"\n')
    gtl(repo, "merge", "--recipe", str(recipe), "b", "a", "c")  # BRANCH...: the models, checked
    assert manifest_at(repo, "HEAD") == by_recipe
    (repo / ".theta-like.toml").unlink()

    # show --recipe: the recorded merge as a mergekit config, which merges the same again
    shown = gtl(repo, "show", "by-recipe", "--recipe").stdout
    r = load_recipe(shown, "shown")
    assert r.mergekit_method == "ties" and [m.model for m in r.models] == ["a", "b", "c"]
    assert r.base_model == git(repo, "rev-parse", "main").stdout.strip()
    assert r.params["density"] == Gradient((0.3, 0.9))
    assert r.models[2].params["weight"] == Gradient((0.2, 0.6))
    assert gtl(repo, "show", "by-recipe", F, "--recipe").stdout == shown
    again = tmp_path / "again.yml"
    again.write_text(shown)
    git(repo, "checkout", "-qb", "again", "main")
    gtl(repo, "merge", "--recipe", str(again))
    assert manifest_at(repo, "HEAD") == by_recipe


@pytest.mark.slow
def test_recipe_with_one_other_model_is_a_two_head_merge(three: Path, tmp_path: Path) -> None:
    repo = three
    recipe = tmp_path / "two.yml"
    recipe.write_text(
        "merge_method: dare_ties\nbase_model: main\nmodels:\n"
        "  - model: a\n    parameters: {weight: 0.7, density: 0.6}\n"
        "  - model: b\n    parameters: {weight: [0.3, 0.5]}\n"
        "parameters: {density: 0.8}\n"
    )
    git(repo, "checkout", "-qb", "two", "a")  # HEAD: model a; b is merged into it
    gtl(repo, "merge", "--recipe", str(recipe))
    assert len(git(repo, "log", "-1", "--format=%P").stdout.split()) == 2
    got = manifest_at(repo, "HEAD")
    assert got.count("merge=dare-ties") == LAYERS + 2 and "merge-models" not in got

    git(repo, "checkout", "-qb", "two-toml", "a")
    (repo / ".theta-like.toml").write_text(
        '[merge]\nstrategy = "dare-ties"\nconventions = "mergekit"\nnormalize = false\n'
        "rescale = true\ndensity = 0.8\n"
        "weights = {a = 0.7, b = [0.3, 0.5]}\ndensities = {a = 0.6}\n"
    )
    gtl(repo, "merge", "b")
    assert manifest_at(repo, "HEAD") == got
    (repo / ".theta-like.toml").unlink()

    shown = gtl(repo, "show", "two", "--recipe").stdout
    r = load_recipe(shown, "shown")
    assert [m.model for m in r.models] == [git(repo, "rev-parse", "a").stdout.strip(), "b"]
    again = tmp_path / "again.yml"
    again.write_text(shown)
    git(repo, "checkout", "-qb", "two-again", "a")
    gtl(repo, "merge", "--recipe", str(again))
    assert manifest_at(repo, "HEAD") == got


def test_recipe_errors_name_the_problem(history: Path, tmp_path: Path) -> None:
    repo = history

    def heads(text: str) -> list[str]:
        return config.recipe_heads(Repo(repo), load_recipe(text, "r.yml"))

    ties = "merge_method: ties\nmodels: [a, b, c]\nbase_model: "
    assert heads(ties + "main") == ["a", "b", "c"]
    with pytest.raises(MergeConfigError, match=r"base_model 'main~1' \(.*\) is not the merge base"):
        heads(ties + "main~1")
    with pytest.raises(MergeConfigError, match="'org/model' is not a branch or revision"):
        heads("merge_method: ties\nmodels: [a, org/model]\nbase_model: main")
    git(repo, "checkout", "-q", "a")
    with pytest.raises(MergeConfigError, match="HEAD is neither one of the recipe's models"):
        heads("merge_method: ties\nmodels: [b, c]\nbase_model: main")
    assert heads(ties + "main") == ["b", "c"]  # HEAD: model a
    git(repo, "checkout", "-q", "main")
    slerp = "merge_method: slerp\nbase_model: a\nmodels: [b]\nparameters: {t: 0.3}\n"
    with pytest.raises(MergeConfigError, match="slerp's base_model \\(a\\) is ours"):
        heads(slerp)
    git(repo, "checkout", "-q", "a")
    assert heads(slerp) == ["b"]
    git(repo, "checkout", "-q", "main")
    with pytest.raises(MergeConfigError, match="out_dtype"):
        heads(ties + "main\nout_dtype: bfloat16")
    with pytest.raises(MergeConfigError, match="out_dtype float16"):
        heads(ties + "main\ndtype: bfloat16\nout_dtype: float16")
    assert heads(ties + "main\ndtype: bfloat16\nout_dtype: bfloat16") == ["a", "b", "c"]  # mergekit's default
    with pytest.raises(MergeConfigError, match="are not the recipe's models"):
        config.recipe_heads(Repo(repo), load_recipe(ties + "main", "r.yml"), ["a", "b"])

    # the merge driver and the octopus strategy read the recipe that merge --recipe names
    f64 = tmp_path / "f64.yml"
    f64.write_text(ties + "main\ndtype: float64\n")
    cfg = config.load(Repo(repo), {config.ENV_RECIPE: str(f64)})
    assert cfg.recipe is not None and cfg.recipe.method == "ties" and cfg.precision == "float64"
    with pytest.raises(MergeConfigError, match="exclude each other"):
        config.load(Repo(repo), {config.ENV_RECIPE: str(f64), config.ENV_STRATEGY: "ties"})
    with pytest.raises(MergeConfigError, match="cannot read the recipe"):
        config.load(Repo(repo), {config.ENV_RECIPE: str(tmp_path / "gone.yml")})

    bad = tmp_path / "bad.yml"
    bad.write_text("merge_method: ties\nslices: []\nmodels: [a, b]\n")
    p = gtl(repo, "merge", "--recipe", str(bad), check=False)
    assert p.returncode != 0 and "slices" in p.stderr
    good = tmp_path / "good.yml"
    good.write_text(ties + "main\n")
    p = gtl(repo, "merge", "--recipe", str(good), "--strategy", "ties", check=False)
    assert p.returncode == 2 and "no --strategy or --set" in p.stderr
    p = gtl(repo, "show", "main", "--recipe", check=False)
    assert p.returncode != 0 and "not a merge commit" in p.stderr
    assert git(repo, "rev-parse", "HEAD").stdout == git(repo, "rev-parse", "main").stdout  # nothing merged
    gtl_here(repo, "status")  # the repository is as it was


def test_from_merged_fits_values_gradients_and_conditions() -> None:
    def ties(**kw: object) -> MergedTensor:
        layer = kw.pop("layer")
        name = str(kw.pop("name"))
        return MergedTensor(name, layer, make_strategy("ties", {"conventions": "mergekit", **kw}))  # type: ignore[arg-type]

    rows = [
        ties(name=f"l.{i}.w", layer=i, density=round(0.2 + 0.15 * i, 12), **{"lambda": 1.0}) for i in range(5)
    ]
    rows.append(ties(name="head", layer=None, density=0.2))
    r = from_merged(rows, ["a", "b"], "base", 5, "rev")
    assert r.params["density"] == Gradient((0.2, 0.8))  # the fewest knots that give every value
    assert r.params["lambda"] == 1.0 and "conventions" not in r.params
    # values that do not follow the layers: one condition per tensor, longer names first
    odd = [ties(name="x.w", layer=None, density=0.3), ties(name="ax.w", layer=None, density=0.4)]
    got = from_merged(odd, ["a", "b"], "base", 0, "rev").params["density"]
    assert got == (Conditional("ax.w", 0.4), Conditional("x.w", 0.3))
    with pytest.raises(MergeConfigError, match="several strategies"):
        from_merged([rows[0], MergedTensor("z", None, make_strategy("average"))], ["a", "b"], "b", 0, "r")
    with pytest.raises(MergeConfigError, match="no mergekit counterpart"):
        from_merged([MergedTensor("z", None, make_strategy("average"))], ["a", "b"], "base", 0, "r")
    paper = MergedTensor("z", None, make_strategy("ties", {"density": 0.2}))
    with pytest.raises(MergeConfigError, match="conventions=paper, which a mergekit config cannot say"):
        from_merged([paper], ["a", "b"], "base", 0, "r")


def test_a_recipe_configures_the_merge_as_the_equivalent_toml_does() -> None:
    names = ["model.embed.weight", *(f"model.layers.{i}.mlp.weight" for i in range(LAYERS))]
    by_recipe = config.MergeConfig(recipe=load_recipe(RECIPE, "merge.yml"))
    rules, default = config.parse_toml(TOML)
    by_toml = config.MergeConfig(rules=rules, default=default, config_params={"density": "0.1"})
    for cfg in (by_recipe, by_toml):
        cfg.bind_models(["a", "b", "c"])
    by_recipe.config_params = {"density": "0.1"}  # git config does not tune a recipe
    records = []
    for name in names:
        t = config.layer_t(name, LAYERS)
        got = by_recipe.choose(F, name, t)
        want = config.MergeConfig(rules=rules, default=default)
        want.bind_models(["a", "b", "c"])
        assert (got.strategy, got.per_model) == (
            want.choose(F, name, t).strategy,
            want.choose(F, name, t).per_model,
        )
        assert by_toml.choose(F, name, t).strategy["density"] == 0.1  # (while it tunes the toml's)
        records.append(MergedTensor(name, config.layer_index(name), got.strategy, got.per_model))
    # what show --recipe does with such records: the same recipe, gradients and all
    again = from_merged(records, ["a", "b", "c"], "main", LAYERS, "rev")
    assert again.params["density"] == Gradient((0.3, 0.9))
    assert [dict(m.params) for m in again.models] == [
        {"weight": 0.5, "density": 0.5},
        {"weight": 0.3},
        {"weight": Gradient((0.2, 0.6))},
    ]
    with pytest.raises(MergeConfigError, match=r"model\(s\) d are not among the recipe's models"):
        config.MergeConfig(recipe=load_recipe(RECIPE, "merge.yml")).bind_models(["a", "b", "c", "d"])


def bf16_model(seed: int | None) -> bytes:
    """model(seed) with every tensor in bfloat16."""
    import torch
    from safetensors.torch import load

    return safetensors_bytes(
        {
            n: ("BF16", tuple(t.shape), t.to(torch.bfloat16).view(torch.uint8).numpy().tobytes())
            for n, t in load(model(seed)).items()
        }
    )


def test_a_bfloat16_recipe_merges_as_mergekit_and_show_says_so(repo: Path, tmp_path: Path) -> None:
    """`dtype: bfloat16` (most mergekit configs on the Hub say it): a bfloat16 model merged with
    every operation in bfloat16, bit for bit what mergekit's merge gives; the precision recorded
    (merge-precision) and shown again as the recipe's dtype, which merges the same again."""
    import torch
    from safetensors.torch import load

    api = pytest.importorskip("mergekit.merge_methods.api", reason="mergekit is not installed")
    for branch, seed in (("main", None), ("a", 1), ("b", 2)):
        if branch != "main":
            git(repo, "checkout", "-qb", branch, "main")
        (repo / F).write_bytes(bf16_model(seed))
        git(repo, "add", F)
        git(repo, "commit", "-qm", branch)
    git(repo, "checkout", "-q", "main")
    text = (
        "merge_method: ties\nbase_model: main\nmodels:\n"
        "  - model: a\n    parameters: {weight: 0.7, density: 0.4}\n"
        "  - model: b\n    parameters: {weight: 0.5, density: 0.6}\n"
        "dtype: bfloat16\nout_dtype: bfloat16\n"
    )
    recipe = tmp_path / "bf16.yml"
    recipe.write_text(text)
    git(repo, "checkout", "-qb", "merged", "main")
    gtl(repo, "merge", "--recipe", str(recipe))
    lines = [ln for ln in manifest_at(repo, "HEAD").splitlines() if "merge=ties" in ln]
    assert len(lines) == LAYERS + 2 and all("merge-precision=bfloat16" in ln for ln in lines)
    got = load((repo / F).read_bytes())
    sides = [load(bf16_model(s)) for s in (None, 1, 2)]
    for name, t in got.items():
        want = api.merge_tensors(
            [sd[name] for sd in sides],
            "ties",
            parameters={"weight": [0.7, 0.5], "density": [0.4, 0.6]},
            base_index=0,
            dtype=torch.bfloat16,
            out_dtype=torch.bfloat16,
        )
        assert t.dtype == torch.bfloat16 and torch.equal(t.view(torch.uint8), want.view(torch.uint8)), name
    assert "conventions=mergekit in bfloat16]" in gtl(repo, "ls-files", "-v").stdout
    shown = gtl(repo, "show", "merged", "--recipe").stdout
    assert "dtype: bfloat16" in shown
    again = tmp_path / "again.yml"
    again.write_text(shown)
    git(repo, "checkout", "-qb", "again", "main")
    gtl(repo, "merge", "--recipe", str(again))
    assert manifest_at(repo, "HEAD") == manifest_at(repo, "merged")
    # the same recipe computed in float32 gives other bits: the precision is what ran
    git(repo, "checkout", "-qb", "in-f32", "main")
    recipe.write_text(text.replace("dtype: bfloat16\nout_dtype: bfloat16\n", "dtype: float32\n"))
    gtl(repo, "merge", "--recipe", str(recipe))
    in_f32 = load((repo / F).read_bytes())
    assert any(not torch.equal(in_f32[n], t) for n, t in got.items())
    assert "merge-precision" not in manifest_at(repo, "HEAD")


def test_a_recorded_recipe_reads_as_one_line_of_words() -> None:
    """The listing's recipe of a tensor line: the strategy, its parameters as k=v, `in P` for a
    recorded precision, one space between words (a strategy with no parameters too)."""
    from git_theta_like.semdiff.listing import merge_recipe

    assert merge_recipe((("merge", "average"), ("merge-precision", "bfloat16"))) == "average in bfloat16"
    assert merge_recipe((("merge", "average"),)) == "average"
    ties = (("merge", "ties"), ("merge-params", "density:0.2,lambda:1.0"), ("merge-precision", "float16"))
    assert merge_recipe(ties) == "ties density=0.2 lambda=1.0 in float16"
    assert merge_recipe((("size", "12"),)) is None
