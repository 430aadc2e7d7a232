"""Merge strategies against independent float64 references of their papers' formulas, DARE's
reproducibility, parameter validation, config precedence, and the three-way plan's conflicts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry
from git_theta_like.merge import MergeConfigError, make_strategy, merge_tensors
from git_theta_like.merge.compute import from_bytes, to_bytes
from git_theta_like.merge.config import MergeConfig, parse_set, parse_toml
from git_theta_like.merge.plan import fisher_path, plan_merge
from git_theta_like.merge.strategies import STRATEGIES
from git_theta_like.merge.strategies.base import Strategy
from git_theta_like.merge.strategies.task_vectors import dare_mask, tensor_seed

SHAPE = (96, 80)
RTOL = 1e-6


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-300))


@pytest.fixture
def tensors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pre-trained tensor and two fine-tunes of it (float32), as a merge sees them."""
    rng = np.random.default_rng(42)
    base = (rng.standard_normal(SHAPE) * 0.05).astype(np.float32)
    ours = (base + rng.standard_normal(SHAPE) * 0.01).astype(np.float32)
    theirs = (base + rng.standard_normal(SHAPE) * 0.01).astype(np.float32)
    return base, ours, theirs


def f64(*arrays: np.ndarray) -> list[np.ndarray]:
    return [a.astype(np.float64) for a in arrays]


# ------------------------------------------------------------------ references (numpy, float64)


def ref_trim(tau: np.ndarray, density: float) -> np.ndarray:
    """TIES step 1: keep the top-k% entries by magnitude (k = round(density * n), at least 1)."""
    flat = np.abs(tau).ravel()
    k = max(1, round(density * flat.size))
    threshold = np.sort(flat)[::-1][k - 1]
    return np.where(np.abs(tau) >= threshold, tau, 0.0)


def ref_elect_disjoint_mean(taus: list[np.ndarray]) -> np.ndarray:
    """TIES steps 2-3: gamma = sgn(sum_t tau_t); mean over {t : sgn(tau_t) = gamma, tau_t != 0}."""
    gamma = np.sign(np.sum(taus, axis=0))
    num = np.zeros_like(taus[0])
    cnt = np.zeros_like(taus[0])
    for tau in taus:
        agree = (np.sign(tau) == gamma) & (tau != 0)
        num += np.where(agree, tau, 0.0)
        cnt += agree
    return np.divide(num, cnt, out=np.zeros_like(num), where=cnt > 0)


def ref_slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    ua, ub = a / np.linalg.norm(a), b / np.linalg.norm(b)
    cos = float(np.sum(ua * ub))
    if abs(cos) > 0.9995:
        return (1 - t) * a + t * b
    omega = math.acos(cos)
    return math.sin((1 - t) * omega) / math.sin(omega) * a + math.sin(t * omega) / math.sin(omega) * b


# ------------------------------------------------------------------ each strategy


def test_average_and_linear(tensors) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = tensors
    b, o, t = f64(base, ours, theirs)
    assert rel_err(merge_tensors(base, ours, theirs, "average"), (o + t) / 2) < RTOL
    got = merge_tensors(base, ours, theirs, "linear", ours=0.7, theirs=0.3)
    assert rel_err(got, 0.7 * o + 0.3 * t) < RTOL
    got = merge_tensors(base, ours, theirs, "linear", ours=3, theirs=1)  # normalized: 0.75 / 0.25
    assert rel_err(got, 0.75 * o + 0.25 * t) < RTOL
    got = merge_tensors(base, ours, theirs, "linear", ours=0.5, theirs=0.8, normalize=False)
    assert rel_err(got, 0.5 * o + 0.8 * t) < RTOL


@pytest.mark.parametrize("lam", [1.0, 0.4])
def test_task_arithmetic(tensors, lam: float) -> None:  # type: ignore[no-untyped-def]
    """Ilharco et al. 2023: theta = theta_0 + lambda * sum_t (theta_t - theta_0)."""
    base, ours, theirs = tensors
    b, o, t = f64(base, ours, theirs)
    got = merge_tensors(base, ours, theirs, "task-arithmetic", **{"lambda": lam})
    assert rel_err(got, b + lam * ((o - b) + (t - b))) < RTOL


@pytest.mark.parametrize(("density", "lam"), [(0.2, 1.0), (0.5, 0.8), (1.0, 1.0), (0.01, 1.3)])
def test_ties(tensors, density: float, lam: float) -> None:  # type: ignore[no-untyped-def]
    """Yadav et al. 2023: trim top-k% per task vector, elect sign by total mass, disjoint mean."""
    base, ours, theirs = tensors
    b, o, t = f64(base, ours, theirs)
    taus = [ref_trim(o - b, density), ref_trim(t - b, density)]
    ref = b + lam * ref_elect_disjoint_mean(taus)
    got = merge_tensors(base, ours, theirs, "ties", density=density, **{"lambda": lam})
    assert rel_err(got, ref) < RTOL
    # the paper's k (top-k%) is the same parameter in percent
    assert np.array_equal(got, merge_tensors(base, ours, theirs, "ties", k=density * 100, **{"lambda": lam}))


def test_ties_sign_election_by_mass() -> None:
    """A hand-checked case: signs disagree, the side with more mass wins, ties average."""
    base = np.zeros(4, np.float32)
    ours = np.array([1.0, -3.0, 2.0, 0.0], np.float32)
    theirs = np.array([-2.0, 1.0, 4.0, 5.0], np.float32)
    got = merge_tensors(base, ours, theirs, "ties", density=1.0)
    assert got.tolist() == [-2.0, -3.0, 3.0, 5.0]


@pytest.mark.parametrize(("drop", "rescale"), [(0.5, True), (0.9, True), (0.3, False), (0.0, True)])
def test_dare(tensors, drop: float, rescale: bool) -> None:  # type: ignore[no-untyped-def]
    """Yu et al. 2024: tau' = m * tau / (1 - p), m ~ Bernoulli(1 - p); theta = theta_0 + lambda sum tau'."""
    base, ours, theirs = tensors
    b, o, t = f64(base, ours, theirs)
    name, seed, lam = "layer.0.weight", 7, 0.9
    scale = 1 / (1 - drop) if rescale else 1.0
    masks = [
        dare_mask(SHAPE, drop, tensor_seed(seed, name, side)).numpy() if drop else np.ones(SHAPE, bool)
        for side in ("ours", "theirs")
    ]
    ref = b + lam * (masks[0] * (o - b) * scale + masks[1] * (t - b) * scale)
    got = merge_tensors(
        base, ours, theirs, "dare", drop=drop, rescale=rescale, seed=seed, name=name, **{"lambda": lam}
    )
    assert rel_err(got, ref) < RTOL
    if drop:
        kept = masks[0].mean()
        assert abs(kept - (1 - drop)) < 4 * math.sqrt(drop * (1 - drop) / masks[0].size)
        assert not np.array_equal(masks[0], masks[1]), "each side draws its own mask"


def test_dare_ties(tensors) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = tensors
    b, o, t = f64(base, ours, theirs)
    name, drop = "w", 0.6
    m = [dare_mask(SHAPE, drop, tensor_seed(0, name, side)).numpy() for side in ("ours", "theirs")]
    taus = [m[0] * (o - b) / (1 - drop), m[1] * (t - b) / (1 - drop)]
    ref = b + ref_elect_disjoint_mean(taus)
    assert rel_err(merge_tensors(base, ours, theirs, "dare-ties", drop=drop, name=name), ref) < RTOL


def test_dare_is_reproducible_from_its_seed(tensors) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = tensors
    a = merge_tensors(base, ours, theirs, "dare", drop=0.7, seed=3, name="x")
    assert np.array_equal(a, merge_tensors(base, ours, theirs, "dare", drop=0.7, seed=3, name="x"))
    assert not np.array_equal(a, merge_tensors(base, ours, theirs, "dare", drop=0.7, seed=4, name="x"))
    assert not np.array_equal(a, merge_tensors(base, ours, theirs, "dare", drop=0.7, seed=3, name="y"))
    # torch input, any device: the masks are drawn on the CPU generator
    tb, to, tt = (torch.from_numpy(x) for x in (base, ours, theirs))
    assert np.array_equal(merge_tensors(tb, to, tt, "dare", drop=0.7, seed=3, name="x").numpy(), a)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.5, 1.0])
def test_slerp(tensors, t: float) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = tensors
    _, o, th = f64(base, ours, theirs)
    assert rel_err(merge_tensors(base, ours, theirs, "slerp", t=t), ref_slerp(o, th, t)) < RTOL


def test_slerp_of_parallel_vectors_is_lerp() -> None:
    a = np.linspace(1, 2, 50, dtype=np.float32)
    got = merge_tensors(np.zeros(50, np.float32), a, 2 * a, "slerp", t=0.25)
    assert rel_err(got, a.astype(np.float64) * 1.25) < RTOL


def test_fisher(tensors) -> None:  # type: ignore[no-untyped-def]
    """Matena & Raffel 2022: theta = sum_i l_i F_i theta_i / sum_i l_i F_i (F floored)."""
    base, ours, theirs = tensors
    rng = np.random.default_rng(1)
    fo = (rng.random(SHAPE) ** 3).astype(np.float32)
    ft = (rng.random(SHAPE) ** 3).astype(np.float32)
    fo[0, :5] = 0  # floored
    _, o, t = f64(base, ours, theirs)
    for lo, lt, floor in ((1.0, 1.0, 1e-6), (0.3, 0.7, 1e-3)):
        a = np.maximum(fo.astype(np.float64), floor) * lo
        c = np.maximum(ft.astype(np.float64), floor) * lt
        ref = (a * o + c * t) / (a + c)
        got = merge_tensors(base, ours, theirs, "fisher", fisher=(fo, ft), ours=lo, theirs=lt, floor=floor)
        assert rel_err(got, ref) < RTOL


def test_selectors_return_a_version_unchanged(tensors) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = tensors
    assert np.array_equal(merge_tensors(base, ours, theirs, "ours"), ours)
    assert np.array_equal(merge_tensors(base, ours, theirs, "theirs"), theirs)
    assert np.array_equal(merge_tensors(base, ours, theirs, "base"), base)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_in_float64_is_exact_to_float64_rounding(tensors, name: str) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = (x.astype(np.float64) for x in tensors)
    extra = {"fisher": (np.ones(SHAPE), np.full(SHAPE, 2.0))} if name == "fisher" else {}
    got = merge_tensors(base, ours, theirs, name, **extra)
    assert got.dtype == np.float64 and got.shape == SHAPE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["average", "task-arithmetic", "ties", "dare", "dare-ties", "slerp"])
def test_cuda_gives_the_cpu_result(tensors, name: str) -> None:  # type: ignore[no-untyped-def]
    base, ours, theirs = tensors
    cpu = merge_tensors(base, ours, theirs, name, name="w", device="cpu")
    gpu = merge_tensors(base, ours, theirs, name, name="w", device="cuda")
    assert rel_err(gpu, cpu.astype(np.float64)) < RTOL


# ------------------------------------------------------------------ dtypes: computed wide, cast back exactly


@pytest.mark.parametrize("dtype", ["F16", "BF16", "F8_E4M3", "F8_E5M2", "F64"])
def test_results_are_cast_back_to_the_stored_dtype(dtype: str) -> None:
    from git_theta_like.merge import compute

    td = compute.torch_dtype(dtype)
    rng = np.random.default_rng(3)
    vals = [torch.from_numpy(rng.standard_normal(SHAPE) * 0.5).to(td) for _ in range(3)]
    raws = [to_bytes(v) for v in vals]
    s = make_strategy("task-arithmetic")
    out = compute.run(s, dtype, SHAPE, raws[0], raws[1], raws[2], device=torch.device("cpu"))
    b, o, t = (v.double() for v in vals)
    truth = b + (o - b) + (t - b)
    got = from_bytes(out, dtype, SHAPE, torch.device("cpu"))
    assert got.dtype == td and len(out) == len(raws[0])
    diff = (got.double() - truth).abs()
    # one rounding to the stored dtype, plus the (much smaller) float32/float64 accumulation error
    acc = torch.finfo(torch.float64 if dtype == "F64" else torch.float32).eps
    inputs = torch.stack([b.abs(), o.abs(), t.abs()]).amax(0)
    ulp = truth.abs() * torch.finfo(td).eps + torch.finfo(td).tiny + 4 * acc * inputs
    assert bool((diff <= ulp).all()), "at most one rounding step from the float64 result"


def test_float8_saturates_instead_of_nan() -> None:
    big = torch.tensor([400.0, -400.0, 1.0]).to(torch.float8_e4m3fn)
    out = merge_tensors(torch.zeros_like(big), big, big, "task-arithmetic")
    assert out.float().tolist() == [448.0, -448.0, 2.0]


# ------------------------------------------------------------------ parameters


def test_bad_strategy_and_parameters_are_clear_errors() -> None:
    with pytest.raises(MergeConfigError, match=r"unknown merge strategy 'tie'.*did you mean ties"):
        make_strategy("tie")
    with pytest.raises(
        MergeConfigError, match=r"ties has no parameter 'densty' \(parameters: density, k, lambda\)"
    ):
        make_strategy("ties", {"densty": 0.2})
    with pytest.raises(MergeConfigError, match=r"density must be in \(0, 1\], not 1.5"):
        make_strategy("ties", {"density": "1.5"})
    with pytest.raises(MergeConfigError, match=r"density must be a number, not 'lots'"):
        make_strategy("ties", {"density": "lots"})
    with pytest.raises(MergeConfigError, match=r"drop must be in \[0, 1\)"):
        make_strategy("dare", {"drop": 1})
    with pytest.raises(MergeConfigError, match=r"seed must be an integer"):
        make_strategy("dare", {"seed": 1.5})
    with pytest.raises(MergeConfigError, match=r"rescale must be true or false"):
        make_strategy("dare", {"rescale": "maybe"})
    with pytest.raises(MergeConfigError, match=r"average has no parameter 't' \(it takes no parameters\)"):
        make_strategy("average", {"t": 0.5})
    with pytest.raises(MergeConfigError, match=r"weights sum to 0"):
        make_strategy("linear", {"ours": 1, "theirs": -1})
    with pytest.raises(MergeConfigError, match=r"must be finite"):
        make_strategy("task-arithmetic", {"lambda": "nan"})
    s = make_strategy("TIES", {"density": "0.3", "lambda": 1})
    assert s.describe() == "ties density=0.3 lambda=1.0" and s.recipe() == "density:0.3,lambda:1.0"


# ------------------------------------------------------------------ config precedence


class FakeRepo:
    def __init__(self, config: dict[str, str] | None = None) -> None:
        self.config = config or {}
        self.workdir = None
        self.git_dir = Path("/nonexistent-git-dir")  # no merge or replay in progress

    def config_get(self, key: str) -> str | None:
        return self.config.get(key)

    @property
    def git(self):  # type: ignore[no-untyped-def]
        cfg = self.config

        class Entry:
            def __init__(self, k: str, v: str) -> None:
                self.name, self.value = k, v

        class G:
            config = [Entry(k, v) for k, v in cfg.items()]

        return G()

    def rev_blob(self, rev: str, path: str) -> None:
        return None


TOML = """
[merge]
strategy = "task-arithmetic"
lambda = 0.8

[[merge.rules]]
tensor = "*embeddings*"
strategy = "ours"

[[merge.rules]]
tensor = ["*attention*", "*attn*"]
strategy = "ties"
density = 0.2

[[merge.rules]]
path = "heads/*.safetensors"
strategy = "theirs"

[other-section]
ignored = true
"""


def choose(cfg: MergeConfig, tensor: str, path: str = "model.safetensors") -> str:
    return cfg.choose(path, tensor).strategy.describe()


def test_toml_rules_first_match_wins_then_default() -> None:
    from git_theta_like.merge.config import load

    cfg = load(FakeRepo(), env={}, toml_text=TOML)
    assert choose(cfg, "bert.embeddings.word") == "ours"
    assert choose(cfg, "layer.0.attention.q") == "ties density=0.2 lambda=1.0"
    assert choose(cfg, "layer.0.attn.embeddings") == "ours"  # rule order decides
    assert choose(cfg, "layer.0.mlp") == "task-arithmetic lambda=0.8"
    assert choose(cfg, "layer.0.mlp", "heads/cls.safetensors") == "theirs"
    assert choose(cfg, "layer.0.mlp", "other/heads/cls.safetensors") == "task-arithmetic lambda=0.8"
    assert choose(load(FakeRepo(), env={}, toml_text=None), "x") == "average"


def test_git_config_overrides_rules_and_command_line_overrides_git_config() -> None:
    from git_theta_like.merge.config import load

    repo = FakeRepo({"theta-like.merge.density": "0.5"})
    cfg = load(repo, env={}, toml_text=TOML)
    assert choose(cfg, "layer.0.attention.q") == "ties density=0.5 lambda=1.0"  # parameter tuned
    assert choose(cfg, "bert.embeddings.word") == "ours"  # rules still choose the strategy
    repo.config["theta-like.merge.strategy"] = "slerp"
    cfg = load(repo, env={}, toml_text=TOML)
    assert choose(cfg, "bert.embeddings.word") == "slerp t=0.5"  # replaces the rules
    env = {"GIT_THETA_LIKE_MERGE_STRATEGY": "ties", "GIT_THETA_LIKE_MERGE_SET": "lambda=0.7"}
    cfg = load(repo, env=env, toml_text=TOML)
    assert choose(cfg, "bert.embeddings.word") == "ties density=0.5 lambda=0.7"
    cfg = load(repo, env={"GIT_THETA_LIKE_MERGE_SET": "density=0.1,t=0.9"}, toml_text=TOML)
    assert choose(cfg, "x") == "slerp t=0.9"
    repo.config.pop("theta-like.merge.strategy")
    cfg = load(repo, env={"GIT_THETA_LIKE_MERGE_SET": "density=0.1"}, toml_text=TOML)
    assert choose(cfg, "layer.0.attention.q") == "ties density=0.1 lambda=1.0"


def test_config_errors_name_their_source() -> None:
    from git_theta_like.merge.config import load

    with pytest.raises(MergeConfigError, match=r"rule 1: ties has no parameter 'densty'"):
        parse_toml('[[merge.rules]]\ntensor = "*"\nstrategy = "ties"\ndensty = 0.2\n')
    with pytest.raises(MergeConfigError, match=r"rule 1: unknown merge strategy 'avg'"):
        parse_toml('[[merge.rules]]\ntensor = "*"\nstrategy = "avg"\n')
    with pytest.raises(MergeConfigError, match=r"rule 1: needs path and/or tensor"):
        parse_toml('[[merge.rules]]\nstrategy = "ours"\n')
    with pytest.raises(MergeConfigError, match=r"not valid TOML"):
        parse_toml("[merge\n")
    with pytest.raises(MergeConfigError, match=r"command line: ties has no parameter 't'"):
        load(FakeRepo(), env={"GIT_THETA_LIKE_MERGE_STRATEGY": "ties", "GIT_THETA_LIKE_MERGE_SET": "t=1"})
    with pytest.raises(MergeConfigError, match=r"no strategy has a parameter 'bogus'"):
        load(FakeRepo({"theta-like.merge.bogus": "1"}), env={})
    with pytest.raises(MergeConfigError, match=r"is not key=value"):
        parse_set(["density"], "--set")


# ------------------------------------------------------------------ the plan: each conflict kind


def entry(
    name: str, raw: str, dtype: str = "F32", shape: tuple[int, ...] = (4,), offset: int = 0
) -> TensorEntry:
    ref = ObjectRef(raw * 64, "0" * 64, 10, "raw")
    return TensorEntry(name, dtype, shape, offset, 4 * math.prod(shape) if dtype != "I64" else 32, ref)


def manifest(*entries: TensorEntry) -> Manifest:
    tensors, pos = [], 100
    for e in entries:
        tensors.append(TensorEntry(e.name, e.dtype, e.shape, pos, e.length, e.obj))
        pos += e.length
    return Manifest("safetensors", pos, 100, ObjectRef("f" * 64, "0" * 64, 10, "raw"), tensors)


def reasons(plan) -> dict[str | None, str]:  # type: ignore[no-untyped-def]
    return {c.tensor: c.reason for c in plan.conflicts}


def test_plan_one_sided_changes_never_conflict() -> None:
    base = manifest(entry("a", "1"), entry("b", "1"), entry("c", "1"), entry("d", "1"))
    ours = manifest(entry("a", "2"), entry("b", "1"), entry("d", "1"), entry("new", "5"))  # c deleted
    theirs = manifest(entry("a", "1"), entry("b", "3"), entry("c", "1"), entry("d", "1", "I64", (4,)))
    plan = plan_merge("m.safetensors", base, ours, theirs, MergeConfig())
    assert not plan.conflicts and not plan.jobs
    sides = {s.name: s.side for s in plan.slots}
    assert sides == {"a": "ours", "b": "theirs", "d": "theirs", "new": "ours"}
    assert plan.synthesize  # d changed dtype on theirs, new added on ours: neither layout fits


def test_a_broken_config_only_matters_where_a_strategy_is_needed() -> None:
    from git_theta_like.merge.config import FailedConfig

    cfg = FailedConfig(error=MergeConfigError(".theta-like.toml rule 1: unknown merge strategy 'tie'"))
    base = manifest(entry("a", "1"), entry("b", "1"))
    ours, theirs = manifest(entry("a", "2"), entry("b", "1")), manifest(entry("a", "1"), entry("b", "3"))
    assert not plan_merge("m", base, ours, theirs, cfg).conflicts
    with pytest.raises(MergeConfigError, match="rule 1"):
        plan_merge("m", base, ours, manifest(entry("a", "3"), entry("b", "3")), cfg)


def test_plan_each_conflict_kind_is_named_with_its_reason() -> None:
    base = manifest(
        entry("shape", "1"), entry("dtype", "1"), entry("deleted_ours", "1"), entry("deleted_theirs", "1"),
        entry("ints", "1", "I64"), entry("float", "1"),
    )  # fmt: skip
    ours = manifest(
        entry("shape", "2", shape=(2, 2)), entry("dtype", "2", "F16"), entry("deleted_theirs", "2"),
        entry("ints", "2", "I64"), entry("float", "2"), entry("added", "2"),
    )  # fmt: skip
    theirs = manifest(
        entry("shape", "3", shape=(5,)), entry("dtype", "3", "BF16"), entry("deleted_ours", "3"),
        entry("ints", "3", "I64"), entry("float", "3"), entry("added", "3"),
    )  # fmt: skip
    plan = plan_merge("m.safetensors", base, ours, theirs, MergeConfig())
    r = reasons(plan)
    assert r["shape"] == "shape differs: ours [2,2], theirs [5]"
    assert r["dtype"] == "dtype differs: ours F16, theirs BF16"
    assert r["deleted_ours"] == "deleted in ours, changed in theirs"
    assert r["deleted_theirs"] == "changed in ours, deleted in theirs"
    assert r["ints"].startswith("I64 tensor changed on both sides: average (from default) works on float")
    assert "float" not in r  # averaged
    assert "added" not in r  # averaging needs no base
    cfg = MergeConfig(cli_strategy="ties")
    r = reasons(plan_merge("m.safetensors", base, ours, theirs, cfg))
    assert r["added"].startswith("added on both sides with different values; ties (from command line")
    cfg = MergeConfig(cli_strategy="fisher")
    r = reasons(plan_merge("m.safetensors", base, ours, theirs, cfg))
    assert r["float"].startswith("fisher (from command line (--strategy)): no Fisher tensor")
    # a rule choosing a version resolves the non-float tensor
    rules, _ = parse_toml('[[merge.rules]]\ntensor = "ints"\nstrategy = "theirs"\n')
    plan = plan_merge("m.safetensors", base, ours, theirs, MergeConfig(rules=rules))
    assert "ints" not in reasons(plan)
    # mergetool's best effort: conflicts take ours
    plan = plan_merge("m.safetensors", base, ours, theirs, MergeConfig(), fallback_ours=True)
    assert not plan.conflicts and len(plan.fallbacks) == 5


def test_plan_whole_file_cases() -> None:
    base = manifest(entry("a", "1"))
    ours = manifest(entry("a", "2"))
    assert plan_merge("m", base, ours, base, MergeConfig()).whole is ours
    assert plan_merge("m", base, base, ours, MergeConfig()).whole is ours
    opaque = Manifest("opaque", 10, 10, ObjectRef("e" * 64, "0" * 64, 10, "raw"))
    opaque2 = Manifest("opaque", 10, 10, ObjectRef("d" * 64, "0" * 64, 10, "raw"))
    plan = plan_merge("m", None, opaque, opaque2, MergeConfig())
    assert "stored whole" in plan.conflicts[0].reason


def test_fisher_file_convention() -> None:
    assert fisher_path("model.safetensors") == "model.fisher.safetensors"
    assert fisher_path("ckpt/pytorch_model.bin") == "ckpt/pytorch_model.fisher.bin"
    assert fisher_path("weights") == "weights.fisher"


def test_strategies_do_not_import_torch_until_they_compute(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys; from git_theta_like.merge import make_strategy; "
        "from git_theta_like.merge.config import parse_toml; import git_theta_like.cli; "
        "make_strategy('ties', {'density': 0.3}); assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


ELEMENTWISE = sorted(name for name, cls in STRATEGIES.items() if cls.elementwise)


def test_the_elementwise_strategies_are_the_ones_expected() -> None:
    """A strategy marked element-wise is merged in blocks: only those whose formula is per element."""
    assert ELEMENTWISE == ["average", "linear", "task-arithmetic"]


BLOCKED = sorted(
    name
    for name, cls in STRATEGIES.items()
    if cls.elementwise or cls.prepare_many is not Strategy.prepare_many
)


def test_the_task_vector_strategies_merge_in_blocks() -> None:
    """Besides the element-wise ones, every task-vector method decides its sparsification on the
    whole tensor and then runs in blocks."""
    assert set(BLOCKED) == set(ELEMENTWISE) | {
        "ties",
        "dare",
        "dare-ties",
        "breadcrumbs",
        "breadcrumbs-ties",
        "della",
        "della-linear",
    }


@pytest.mark.parametrize("name", BLOCKED)
@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16", "F64"])
def test_a_merge_in_blocks_gives_the_bits_of_the_whole_tensor(
    name: str, dtype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run / run_many in blocks (a block size that does not divide the tensor, odd shape), and in
    blocks written over theirs's bytes (`into`), against one merge of the whole tensor: the same
    bytes, two models and three with per-model weights, both conventions where the strategy has
    them, L1 rescale on and off."""
    from git_theta_like.merge import compute
    from git_theta_like.merge.strategies import base as strategy_base
    from git_theta_like.merge.strategies import task_vectors

    rng = np.random.default_rng(7)
    shape = (37, 53)
    td = compute.torch_dtype(dtype)
    raw = [
        to_bytes(torch.from_numpy(rng.standard_normal(shape).astype(np.float64)).to(td)).tobytes()
        for _ in range(4)
    ]
    # ties at the cut-off of a trim: a block of equal deltas in every model
    tied = [np.frombuffer(r, np.uint8).copy() for r in raw]
    size = compute.dtypes.itemsize(dtype)
    for m in tied[1:]:
        m[: 200 * size] = tied[0][: 200 * size]
        m[200 * size : 400 * size] = np.tile(tied[0][:size], 200)
    raw = [t.tobytes() for t in tied]
    base, models = raw[0], raw[1:]
    settings: list[dict[str, object]] = [{}]
    if name == "linear":
        settings = [{"ours": 0.3, "theirs": 0.9}, {"normalize": False, "ours": 0.7, "theirs": 0.2}]
    elif name == "task-arithmetic":
        settings = [{"lambda": 0.8}, {"conventions": "mergekit", "normalize": True, "lambda": 1.3}]
    elif name != "average":
        cls = STRATEGIES[name]
        names = {p.name for p in cls.params}
        settings = [{"conventions": c} for c in ("paper", "mergekit")]
        if "rescale" in names:
            settings += [{**x, "rescale": not cls({})["rescale"]} for x in list(settings)]
    cpu = torch.device("cpu")
    for params in settings:
        strat = make_strategy(name, params)

        def both(strat: Strategy = strat, into: bool = False) -> list[bytes]:
            # into: the result written over the last model's bytes (as the merge producer does)
            theirs, last = bytearray(models[1]), bytearray(models[-1])
            two = compute.run(
                strat,
                dtype,
                shape,
                base,
                models[0],
                theirs,
                name="w",
                device=cpu,
                into=theirs if into else None,
            )
            assert (two.obj is theirs) == (into and len(theirs) // size > strategy_base.BLOCK_ELEMENTS)
            many = compute.run_many(
                strat,
                dtype,
                shape,
                base,
                [*models[:-1], last],
                name="w",
                per_model=[{"weight": 0.5}, {}, {"weight": 2.0}] if name != "average" else (),
                device=cpu,
                into=last if into else None,
            )
            return [bytes(two), bytes(many)]

        whole = both()
        monkeypatch.setattr(strategy_base, "BLOCK_ELEMENTS", 97)
        monkeypatch.setattr(task_vectors, "RADIX_BLOCK", 101)  # the trims' selections in blocks too
        blocked = both()
        blocked_into = both(into=True)
        monkeypatch.undo()
        assert blocked == whole, (name, params)
        assert blocked_into == whole, (name, params)
