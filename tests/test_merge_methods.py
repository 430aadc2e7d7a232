"""Merge methods of N models (octopus merges) and the mergekit-era methods (breadcrumbs, DELLA,
SCE, Model Stock, NuSLERP, Karcher), each against an independent float64 numpy reference of
its paper's formula written here; TIES (and the other generalized task-vector methods) with
conventions=mergekit against mergekit's own code, bit for bit."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from git_theta_like.merge import MergeConfigError, make_strategy, merge_tensors
from git_theta_like.merge.compute import merge_many_tensors
from git_theta_like.merge.strategies import STRATEGIES
from git_theta_like.merge.strategies.base import TensorContext

SHAPE = (48, 40)
RTOL = 1e-6
NAME = "layer.3.mlp.weight"


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-300))


@pytest.fixture
def models() -> tuple[np.ndarray, list[np.ndarray]]:
    """A pre-trained tensor and three fine-tunes of it (float32)."""
    rng = np.random.default_rng(17)
    base = (rng.standard_normal(SHAPE) * 0.05).astype(np.float32)
    tunes = [(base + rng.standard_normal(SHAPE) * s).astype(np.float32) for s in (0.01, 0.012, 0.008)]
    return base, tunes


def f64(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)


def taus_of(base: np.ndarray, tunes: list[np.ndarray]) -> list[np.ndarray]:
    return [f64(t) - f64(base) for t in tunes]


# ------------------------------------------------------------------ references (numpy, float64)


def uniform(seed: int, name: str, index: int) -> np.ndarray:
    """The documented seeding: sha256(f"{seed}\\0{name}\\0{side}") -> torch's CPU generator,
    side = ours, theirs, model3, ...; float32 uniforms."""
    side = ("ours", "theirs")[index] if index < 2 else f"model{index + 1}"
    digest = hashlib.sha256(f"{seed}\0{name}\0{side}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    return torch.rand(SHAPE, generator=g, dtype=torch.float32).numpy().astype(np.float64)


def ref_trim(tau: np.ndarray, density: float) -> np.ndarray:
    k = max(1, round(density * tau.size))
    threshold = np.sort(np.abs(tau).ravel())[::-1][k - 1]
    return np.where(np.abs(tau) >= threshold, tau, 0.0)


def ref_l1(tau: np.ndarray, masked: np.ndarray) -> np.ndarray:
    return masked * (np.abs(tau).sum() / np.abs(masked).sum())


def ref_ties_combine(taus: list[np.ndarray], weights: list[float], method: str = "sum") -> np.ndarray:
    """gamma = sgn(sum_i w_i tau_i) (count: sgn(sum_i sgn(w_i tau_i)));
    result = sum_{i agrees} w_i tau_i / sum_{i agrees} w_i (0 where none agrees)."""
    wt = [w * t for w, t in zip(weights, taus, strict=True)]
    gamma = np.sign(sum(np.sign(x) for x in wt)) if method == "count" else np.sign(sum(wt))
    num = np.zeros_like(taus[0])
    den = np.zeros_like(taus[0])
    for w, x in zip(weights, wt, strict=True):
        agree = (np.sign(x) == gamma) & (x != 0)
        num += np.where(agree, x, 0.0)
        den += np.where(agree, w, 0.0)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def ref_breadcrumbs(tau: np.ndarray, density: float, gamma: float) -> np.ndarray:
    """Drop the int(gamma n) largest magnitudes and the smallest, so int(density n) remain."""
    n = tau.size
    target, top = int(density * n), int(gamma * n)
    bottom = max(0, n - target - top)
    order = np.argsort(np.abs(tau).ravel(), kind="stable")
    keep = np.zeros(n, bool)
    keep[order[bottom : bottom + target]] = True
    return np.where(keep.reshape(tau.shape), tau, 0.0)


def ref_della(tau: np.ndarray, density: float, eps: float, u: np.ndarray) -> np.ndarray:
    """MagPrune: in each row, rank r of |tau| (0 = smallest), keep probability
    p = density - eps + 2 eps r / (m - 1), kept entries divided by p."""
    ranks = np.argsort(np.argsort(np.abs(tau), axis=1, kind="stable"), axis=1, kind="stable")
    p = density - eps + 2 * eps * ranks / (tau.shape[1] - 1)
    return np.where(u < p, tau / p, 0.0)


def ref_slerp(t: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cos = float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    om = math.acos(max(-1.0, min(1.0, cos)))
    return (math.sin((1 - t) * om) * a + math.sin(t * om) * b) / math.sin(om)


def ref_multislerp(xs: list[np.ndarray], w: list[float], normalize: bool = True) -> np.ndarray:
    """Multi-SLERP (Goddard): the unit vectors' weighted mean mu, normalized; their weighted
    tangent vector at mu mapped back by the exponential map; scaled by the weighted mean norm
    (without the implementation's eps, which the float64 comparison sets to 0)."""
    a = np.array(w) / (sum(w) if normalize else 1.0)
    norms = [float(np.linalg.norm(x)) for x in xs]
    us = [x.ravel() / n for x, n in zip(xs, norms, strict=True)]
    mu = sum(ai * u for ai, u in zip(a, us, strict=True))
    mu = mu / np.linalg.norm(mu)
    tangent = sum(ai * (u - float(u @ mu) * mu) for ai, u in zip(a, us, strict=True))
    s = float(np.linalg.norm(tangent))
    out = math.cos(s) * mu + math.sin(s) * tangent / s
    return (float(a @ np.array(norms)) * out).reshape(xs[0].shape)


def ref_karcher(xs: list[np.ndarray], w: list[float], iters: int = 200) -> np.ndarray:
    """The weighted Riemannian mean on the unit sphere (fixed point of the gradient step
    mu <- exp_mu(sum a_i log_mu(u_i))), scaled by the weighted mean norm."""
    a = np.array(w) / sum(w)
    norms = [np.linalg.norm(x) for x in xs]
    us = [x.ravel() / n for x, n in zip(xs, norms, strict=True)]
    mu = sum(ai * u for ai, u in zip(a, us, strict=True))
    mu /= np.linalg.norm(mu)
    for _ in range(iters):
        tangent = np.zeros_like(mu)
        for ai, u in zip(a, us, strict=True):
            c = float(np.clip(mu @ u, -1, 1))
            th = math.acos(c)
            if th > 1e-12:
                tangent += ai * th / math.sin(th) * (u - c * mu)
        s = np.linalg.norm(tangent)
        if s < 1e-15:
            break
        mu = math.cos(s) * mu + math.sin(s) * tangent / s
        mu /= np.linalg.norm(mu)
    return (float(a @ np.array(norms)) * mu).reshape(xs[0].shape)


# ------------------------------------------------------------------ N-model generalizations

WEIGHTS = [0.5, 0.3, 0.2]


def test_average_and_linear_of_n_models(models) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    m = [f64(t) for t in tunes]
    assert rel_err(merge_many_tensors(base, tunes, "average"), sum(m) / 3) < RTOL
    per = [{"weight": w} for w in (3.0, 1.0, 1.0)]
    got = merge_many_tensors(base, tunes, "linear", per_model=per)
    assert rel_err(got, (3 * m[0] + m[1] + m[2]) / 5) < RTOL
    got = merge_many_tensors(base, tunes, "linear", per_model=per, normalize=False)
    assert rel_err(got, 3 * m[0] + m[1] + m[2]) < RTOL


@pytest.mark.parametrize("normalize", [False, True])
def test_task_arithmetic_of_n_models(models, normalize: bool) -> None:  # type: ignore[no-untyped-def]
    """theta_0 + lambda sum_i w_i tau_i (/ sum_i w_i with normalize, mergekit's option)."""
    base, tunes = models
    taus = taus_of(base, tunes)
    mixed = sum(w * t for w, t in zip(WEIGHTS, taus, strict=True)) / (sum(WEIGHTS) if normalize else 1)
    per = [{"weight": w} for w in WEIGHTS]
    got = merge_many_tensors(
        base, tunes, "task-arithmetic", per_model=per, normalize=normalize, **{"lambda": 0.8}
    )
    assert rel_err(got, f64(base) + 0.8 * mixed) < RTOL


@pytest.mark.parametrize(("method", "rescale"), [("sum", False), ("count", False), ("sum", True)])
def test_ties_of_n_models_with_weights_and_densities(models, method: str, rescale: bool) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    dens = [0.2, 0.5, 0.35]
    trimmed = [ref_trim(t, d) for t, d in zip(taus_of(base, tunes), dens, strict=True)]
    if rescale:
        trimmed = [ref_l1(t, x) for t, x in zip(taus_of(base, tunes), trimmed, strict=True)]
    ref = f64(base) + 1.2 * ref_ties_combine(trimmed, WEIGHTS, method)
    per = [{"weight": w, "density": d} for w, d in zip(WEIGHTS, dens, strict=True)]
    got = merge_many_tensors(
        base, tunes, "ties", per_model=per, sign_method=method, rescale=rescale, **{"lambda": 1.2}
    )
    assert rel_err(got, ref) < RTOL


def test_ties_without_normalize_sums_the_agreeing(models) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    trimmed = [ref_trim(t, 0.3) for t in taus_of(base, tunes)]
    gamma = np.sign(sum(trimmed))
    ref = f64(base) + sum(np.where((np.sign(t) == gamma) & (t != 0), t, 0.0) for t in trimmed)
    assert rel_err(merge_many_tensors(base, tunes, "ties", density=0.3, normalize=False), ref) < RTOL


@pytest.mark.parametrize("name", ["dare", "dare-ties"])
def test_dare_of_n_models_with_per_model_density(models, name: str) -> None:  # type: ignore[no-untyped-def]
    """tau_i' = m_i tau_i / p_i, m_i ~ Bernoulli(p_i), p_i the keep probability (density)."""
    base, tunes = models
    dens = [0.4, 0.7, 0.5]  # the third takes the strategy's: 1 - drop
    sparse = [
        np.where(uniform(5, NAME, i) >= 1 - d, t / d, 0.0)
        for i, (t, d) in enumerate(zip(taus_of(base, tunes), dens, strict=True))
    ]
    per = [
        {"density": 0.4, "weight": WEIGHTS[0]},
        {"density": 0.7, "weight": WEIGHTS[1]},
        {"weight": WEIGHTS[2]},
    ]
    got = merge_many_tensors(base, tunes, name, per_model=per, drop=0.5, seed=5, name=NAME)
    if name == "dare":
        ref = f64(base) + sum(w * t for w, t in zip(WEIGHTS, sparse, strict=True))
    else:
        ref = f64(base) + ref_ties_combine(sparse, WEIGHTS)
    assert rel_err(got, ref) < RTOL
    # density is the keep probability: the same strategy as drop = 1 - density
    assert make_strategy(name, {"density": 0.25}) == make_strategy(name, {"drop": 0.75})


# ------------------------------------------------------------------ the new methods


@pytest.mark.parametrize("name", ["breadcrumbs", "breadcrumbs-ties"])
def test_breadcrumbs(models, name: str) -> None:  # type: ignore[no-untyped-def]
    """Davari & Belilovsky 2024: per task vector, drop the gamma fraction of largest magnitudes
    and the smallest ones so that density remains; then sum (or TIES's election)."""
    base, tunes = models
    crumbs = [ref_breadcrumbs(t, 0.6, 0.05) for t in taus_of(base, tunes)]
    got = merge_many_tensors(base, tunes, name, density=0.6, gamma=0.05)
    mixed = sum(crumbs)
    if name == "breadcrumbs-ties":  # mergekit's default: no normalize, the sum of the agreeing
        gamma = np.sign(sum(crumbs))
        mixed = sum(np.where((np.sign(c) == gamma) & (c != 0), c, 0.0) for c in crumbs)
    assert rel_err(got, f64(base) + mixed) < RTOL
    kept = np.count_nonzero(crumbs[0])
    assert kept == int(0.6 * crumbs[0].size)
    assert np.abs(crumbs[0]).max() < np.abs(taus_of(base, tunes)[0]).max()  # the outliers went


@pytest.mark.parametrize("name", ["della", "della-linear"])
def test_della(models, name: str) -> None:  # type: ignore[no-untyped-def]
    """Deep et al. 2024: MagPrune keep probabilities by magnitude rank, rescale 1/p, then TIES's
    election and disjoint mean (della) or the sum (della-linear)."""
    base, tunes = models
    dens, eps = [0.5, 0.4, 0.6], [0.15, 0.1, 0.2]
    pruned = [
        ref_della(t, d, e, uniform(9, NAME, i))
        for i, (t, d, e) in enumerate(zip(taus_of(base, tunes), dens, eps, strict=True))
    ]
    per = [{"density": d, "epsilon": e} for d, e in zip(dens, eps, strict=True)]
    got = merge_many_tensors(base, tunes, name, per_model=per, seed=9, name=NAME)
    mixed = ref_ties_combine(pruned, [1.0] * 3) if name == "della" else sum(pruned)
    assert rel_err(got, f64(base) + mixed) < RTOL
    # larger magnitudes are kept more often: the probabilities do what the paper says
    tau = taus_of(base, tunes)[0]
    big = np.abs(tau) > np.median(np.abs(tau))
    kept = pruned[0] != 0
    assert kept[big].mean() > kept[~big].mean() + 0.05


def ref_sce(base: np.ndarray, tunes: list[np.ndarray], topk: float) -> np.ndarray:
    """FuseChat's SCE: Select the top-k entries by variance across the task vectors,
    Calculate w_i = mean(tau_i^2) / sum_j mean(tau_j^2), Erase the entries whose sign is not
    the elected one (+ where sum_i tau_i >= 0), theta_0 + sum w_i tau_i / sum w_i (agreeing)."""
    tvs = np.stack(taus_of(base, tunes))
    if topk < 1:
        var = tvs.var(axis=0)
        k = int(np.count_nonzero(var) * topk)
        keep = np.zeros(var.size, bool)
        keep[np.argsort(var.ravel())[::-1][:k]] = True
        tvs = tvs * keep.reshape(var.shape)
    gamma = np.where(tvs.sum(0) >= 0, 1.0, -1.0)
    energy = (tvs**2).reshape(len(tunes), -1).mean(1)
    w = (energy / energy.sum())[:, None, None] * (np.sign(tvs) == gamma)
    return f64(base) + (tvs * w).sum(0) / np.maximum(w.sum(0), 1e-6)


@pytest.mark.parametrize("topk", [1.0, 0.3])
def test_sce(models, topk: float) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    assert (
        rel_err(merge_many_tensors(base, tunes, "sce", select_topk=topk), ref_sce(base, tunes, topk)) < RTOL
    )


def ref_model_stock(base: np.ndarray, tunes: list[np.ndarray], filter_wise: bool) -> np.ndarray:
    """Jang et al. 2024: t = k cos / (1 + (k - 1) cos), cos the mean angle between the task
    vectors; theta = t * mean(theta_i) + (1 - t) * theta_0 (per row with filter_wise)."""
    taus = taus_of(base, tunes)
    k = len(tunes)
    axis = -1 if filter_wise else None
    cos = np.mean(
        [
            np.sum(taus[i] * taus[j], axis=axis)
            / (np.linalg.norm(taus[i], axis=axis) * np.linalg.norm(taus[j], axis=axis))
            for i in range(k)
            for j in range(i + 1, k)
        ],
        axis=0,
    )
    t = k * cos / (1 + (k - 1) * cos)
    if filter_wise:
        t = t[:, None]
    return t * (sum(f64(x) for x in tunes) / k) + (1 - t) * f64(base)


@pytest.mark.parametrize("filter_wise", [False, True])
def test_model_stock(models, filter_wise: bool) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    # fine-tunes that share a direction, as in the paper (cos well above 0)
    shared = (tunes[0] - base) * 0.8
    tunes = [(t + shared).astype(np.float32) for t in tunes]
    got = merge_many_tensors(base, tunes, "model-stock", filter_wise=filter_wise)
    assert rel_err(got, ref_model_stock(base, tunes, filter_wise)) < RTOL
    got2 = merge_tensors(base, tunes[0], tunes[1], "model-stock", filter_wise=filter_wise)
    assert rel_err(got2, ref_model_stock(base, tunes[:2], filter_wise)) < RTOL


@pytest.mark.parametrize(("flatten", "row_wise"), [(True, False), (False, False), (False, True)])
def test_nuslerp(models, flatten: bool, row_wise: bool) -> None:  # type: ignore[no-untyped-def]
    """slerp of the two task vectors with t = w_2 / (w_1 + w_2): whole, or vector by vector along
    the last dimension (row_wise: along the first)."""
    base, tunes = models
    a, b = taus_of(base, tunes[:2])
    t = 0.7 / (0.3 + 0.7)
    if flatten:
        mixed = ref_slerp(t, a, b)
    elif row_wise:
        mixed = np.stack([ref_slerp(t, a[:, j], b[:, j]) for j in range(SHAPE[1])], axis=1)
    else:
        mixed = np.stack([ref_slerp(t, a[i], b[i]) for i in range(SHAPE[0])])
    got = merge_many_tensors(
        base,
        tunes[:2],
        "nuslerp",
        per_model=[{"weight": 0.3}, {"weight": 0.7}],
        nuslerp_flatten=flatten,
        nuslerp_row_wise=row_wise,
    )
    assert rel_err(got, f64(base) + mixed) < RTOL
    with pytest.raises(Exception, match="nuslerp merges two versions, not 3"):
        merge_many_tensors(base, tunes, "nuslerp")


def test_karcher(models) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    xs = [f64(t) for t in tunes]
    got = merge_many_tensors(base, tunes, "karcher", max_iter=100, tol=1e-9)
    assert rel_err(got, ref_karcher(xs, [1, 1, 1])) < RTOL
    per = [{"weight": w} for w in WEIGHTS]
    got = merge_many_tensors(base, tunes, "karcher", per_model=per, max_iter=100, tol=1e-9)
    assert rel_err(got, ref_karcher(xs, WEIGHTS)) < RTOL
    # two models of one norm: the geodesic midpoint, i.e. slerp at t = 1/2
    a = xs[0]
    b = xs[1] * (np.linalg.norm(a) / np.linalg.norm(xs[1]))
    got = merge_tensors(base, a.astype(np.float32), b.astype(np.float32), "karcher", tol=1e-9, max_iter=50)
    assert rel_err(got, ref_slerp(0.5, a, b)) < RTOL


def test_multislerp(models) -> None:  # type: ignore[no-untyped-def]
    """Around the base (the task vectors) and of the models themselves, weights normalized or
    not, against the float64 formula; two models of one norm at equal weights: slerp at 1/2;
    weighted directions that cancel: linear for two models, an error for more."""
    base, tunes = models
    per = [{"weight": w} for w in WEIGHTS]
    got = merge_many_tensors(f64(base), [f64(t) for t in tunes], "multislerp", per_model=per, eps=0.0)
    assert rel_err(got, f64(base) + ref_multislerp(taus_of(base, tunes), WEIGHTS)) < 1e-12
    got = merge_many_tensors(base, tunes, "multislerp", per_model=per)
    assert rel_err(got, f64(base) + ref_multislerp(taus_of(base, tunes), WEIGHTS)) < RTOL
    got = merge_many_tensors(base, tunes, "multislerp", per_model=per, use_base=False)
    assert rel_err(got, ref_multislerp([f64(t) for t in tunes], WEIGHTS)) < RTOL
    halves = [{"weight": w / 2} for w in WEIGHTS]
    got = merge_many_tensors(base, tunes, "multislerp", per_model=halves, normalize_weights=False)
    want = f64(base) + ref_multislerp(taus_of(base, tunes), [w / 2 for w in WEIGHTS], normalize=False)
    assert rel_err(got, want) < RTOL
    a, b = taus_of(base, tunes[:2])
    b = b * (np.linalg.norm(a) / np.linalg.norm(b))
    got = merge_tensors(np.zeros_like(base), a.astype(np.float32), b.astype(np.float32), "multislerp")
    assert rel_err(got, ref_slerp(0.5, a, b)) < RTOL
    x = taus_of(base, tunes[:1])[0].astype(np.float32)
    zero = np.zeros_like(x)
    got = merge_tensors(zero, x, -x, "multislerp")  # cancel: (x - x) / 2
    assert np.array_equal(got, zero)
    with pytest.raises(MergeConfigError, match="directions cancel"):
        merge_many_tensors(
            zero, [x, -x, x * 0], "multislerp", per_model=[{"weight": 1}, {"weight": 1}, {"weight": 0}]
        )


# ------------------------------------------------------------------ two models: merge_many is merge


@pytest.mark.parametrize(
    "name", sorted(n for n, c in STRATEGIES.items() if c.max_models != 2 or n == "nuslerp")
)
def test_merge_many_of_two_models_is_the_two_model_merge(models, name: str) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    b, o, t = (torch.from_numpy(x) for x in (base, tunes[0], tunes[1]))
    s = make_strategy(name)
    ctx = TensorContext(name=NAME)
    two = s.merge(b, o, t, ctx)
    assert torch.equal(s.merge_many(b, [o, t], ctx), two)
    unit = TensorContext(name=NAME, per_model=({}, {}))
    assert torch.equal(s.merge_many(b, [o, t], unit), two)
    assert np.array_equal(merge_many_tensors(base, tunes[:2], name, name=NAME), two.numpy())


# ------------------------------------------------------------------ parameters and recipes


def test_options_are_shown_only_when_set_and_validated() -> None:
    s = make_strategy("ties", {"density": 0.3})
    assert s.recipe() == "density:0.3,lambda:1.0"
    s = make_strategy("ties", {"density": 0.3, "conventions": "MergeKit", "sign_method": "count"})
    assert s.describe() == "ties density=0.3 lambda=1.0 sign_method=count conventions=mergekit"
    assert (
        make_strategy("dare", {"density": 0.3}).describe() == "dare drop=0.7 rescale=true seed=0 lambda=1.0"
    )
    with pytest.raises(MergeConfigError, match=r"conventions must be one of paper, mergekit, not 'mk'"):
        make_strategy("ties", {"conventions": "mk"})
    with pytest.raises(MergeConfigError, match=r"sign_method must be one of sum, count, not 3"):
        make_strategy("ties", {"sign_method": 3})
    with pytest.raises(
        MergeConfigError,
        match=r"ties has no parameter 'x' \(parameters: density, k, lambda\); options: conventions, "
        r"normalize, rescale, sign_method, weight",
    ):
        make_strategy("ties", {"x": 1})
    with pytest.raises(MergeConfigError, match=r"drop=0.5 and density=0.3 disagree"):
        make_strategy("dare", {"drop": 0.5, "density": 0.3})
    with pytest.raises(MergeConfigError, match=r"della needs density - epsilon > 0"):
        make_strategy("della", {"density": 0.1})
    with pytest.raises(MergeConfigError, match=r"gamma must be in \[0, 1\]"):
        make_strategy("breadcrumbs", {"gamma": 2})
    with pytest.raises(MergeConfigError, match=r"select_topk must be in \[0, 1\]"):
        make_strategy("sce", {"select_topk": -0.1})
    with pytest.raises(MergeConfigError, match=r"max_iter must be in \[1, 10000\]"):
        make_strategy("karcher", {"max_iter": 0})


def test_per_model_values_are_checked_at_merge_time(models) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    with pytest.raises(
        MergeConfigError, match=r"'lambda' cannot be set per model \(per-model parameters: weight, density\)"
    ):
        merge_many_tensors(base, tunes, "ties", per_model=[{}, {}, {"lambda": 0.1}])
    with pytest.raises(MergeConfigError, match=r"model 3: ties has no parameter 'gamma'"):
        merge_many_tensors(base, tunes, "ties", per_model=[{}, {}, {"gamma": 0.1}])
    with pytest.raises(MergeConfigError, match=r"model 2: parameter density must be in \(0, 1\], not 1.5"):
        merge_many_tensors(base, tunes, "ties", per_model=[{}, {"density": 1.5}, {}])
    with pytest.raises(MergeConfigError, match=r"model 3: della needs density - epsilon > 0"):
        merge_many_tensors(base, tunes, "della", per_model=[{}, {}, {"density": 0.1}])
    with pytest.raises(MergeConfigError, match=r"weights sum to 0 and normalize is true"):
        merge_many_tensors(base, tunes[:2], "linear", per_model=[{"weight": 1}, {"weight": -1}])
    with pytest.raises(MergeConfigError, match=r"model 1: average has no parameter 'weight'"):
        merge_many_tensors(base, tunes, "average", per_model=[{"weight": 1}, {}, {}])
    with pytest.raises(
        MergeConfigError, match=r"'weight' cannot be set per model \(per-model parameters: none\)"
    ):
        make_strategy("average").model_values(TensorContext(per_model=({"weight": 1}, {})), 2)
    s = make_strategy("ties")
    with pytest.raises(MergeConfigError, match=r"2 sets of per-model parameters for 3 models"):
        s.model_values(TensorContext(per_model=({}, {})), 3)


# ------------------------------------------------------------------ bit for bit with mergekit


def mergekit_api() -> Callable[..., torch.Tensor]:
    mk = pytest.importorskip(
        "mergekit.merge_methods.api", reason="mergekit is not installed (pip install mergekit)"
    )
    return mk.merge_tensors  # type: ignore[no-any-return]


def mk_tensors(
    seed: int, n: int, shape: tuple[int, ...], dtype: torch.dtype, quantize: bool
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g) * 0.05
    out = [base]
    for _ in range(n):
        d = torch.randn(shape, generator=g) * 0.01
        if quantize:  # many equal magnitudes: exercises the tie-breaking of the trim
            d = torch.round(d * 300) / 300
        out.append(base + d)
    return [x.to(dtype) for x in out]


TIES_CASES = [
    # (n models, weights, densities, extra parameters, dtype, quantize)
    (2, [1.0, 1.0], [0.3, 0.3], {}, torch.float32, False),
    (3, [0.5, 0.3, 0.2], [0.3, 0.5, 0.7], {}, torch.float32, False),
    (3, [1.0, -0.5, 2.0], [0.1, 0.9, 1.0], {"normalize": False, "lambda": 0.7}, torch.float32, True),
    (4, [0.4, 0.4, 0.1, 0.1], [0.25, 0.25, 0.33, 0.5], {"rescale": True}, torch.float32, True),
    (2, [0.6, 0.4], [0.37, 0.21], {}, torch.bfloat16, True),
    (3, [1.0, 1.0, 1.0], [0.5, 0.5, 0.5], {"lambda": 1.3}, torch.float64, True),
]


def stream_the_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small tensors handled as a large tensor is: the replay's sides streamed
    (argsort_ties._Side) over scan blocks that do not divide them, and the trim's threshold
    bracketed from a sample (task_vectors._select_bracketed; 2048 entries or more)."""
    from git_theta_like.merge.strategies import argsort_ties, task_vectors

    monkeypatch.setattr(argsort_ties, "HOLD_ANYWAY", 0)
    monkeypatch.setattr(argsort_ties, "BLOCK", 301)
    monkeypatch.setattr(task_vectors, "SAMPLE", 256)


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(("n", "weights", "dens", "extra", "dtype", "quantize"), TIES_CASES)
def test_ties_conventions_mergekit_is_mergekit_bit_for_bit(
    n, weights, dens, extra, dtype, quantize, streamed, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    merge = mergekit_api()
    if streamed:
        stream_the_replay(monkeypatch)
    ts = mk_tensors(n * 7 + len(extra), n, (64, 48), dtype, quantize)
    params = {"weight": weights, "density": dens, **extra}
    want = merge(
        ts,
        "ties",
        parameters=params,
        base_index=0,
        dtype=torch.float32 if dtype != torch.float64 else None,
        out_dtype=dtype,
    )
    per = [{"weight": w, "density": d} for w, d in zip(weights, dens, strict=True)]
    got = merge_many_tensors(ts[0], ts[1:], "ties", per_model=per, conventions="mergekit", **extra)
    assert got.dtype == want.dtype and torch.equal(got.view(torch.uint8), want.view(torch.uint8))
    if not quantize and dtype == torch.float32:  # the paper's conventions differ, a little
        paper = merge_many_tensors(ts[0], ts[1:], "ties", per_model=per, **extra)
        assert not torch.equal(paper, want)


SIXTEEN_BIT_CASES = [
    # (ours, mergekit's, our parameters, per-model values, mergekit's parameters, with the base)
    (
        "linear",
        "linear",
        {"conventions": "mergekit"},
        [{"weight": 0.7}, {"weight": 0.3}],
        {"weight": [0.7, 0.3]},
        False,
    ),
    (
        "task-arithmetic",
        "task_arithmetic",
        {"conventions": "mergekit"},
        [{"weight": 0.8}, {"weight": 0.6}],
        {"weight": [0.8, 0.6]},
        True,
    ),
    (
        "ties",
        "ties",
        {"conventions": "mergekit"},
        [{"weight": 1.0, "density": 0.3}, {"weight": 0.5, "density": 0.6}],
        {"weight": [1.0, 0.5], "density": [0.3, 0.6]},
        True,
    ),
]


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(("ours", "theirs", "params", "per", "mk_params", "use_base"), SIXTEEN_BIT_CASES)
def test_16_bit_precision_computes_as_mergekits_dtype(  # type: ignore[no-untyped-def]
    ours, theirs, params, per, mk_params, use_base, stored, precision
) -> None:
    """A recipe's `dtype: bfloat16` / `float16` computes as mergekit does, bit for bit: the task
    vector methods with every operation rounded to it (our precision bfloat16 / float16), linear
    in float32 (mergekit's dtype only rounds its inputs and result); the result in the stored
    dtype (mergekit's `out_dtype` cast, where the file's dtype differs; for linear, whose dtype
    would round float32 inputs first, what mergekit gives them unrounded). The other precision
    gives other bits, so the test sees which one ran."""
    from git_theta_like.merge import mergekit as mergekit_module

    merge = mergekit_api()
    ts = mk_tensors(17, 2, (64, 48), stored, True)
    half = getattr(torch, precision)
    inputs = ts if use_base else ts[1:]
    want = merge(
        inputs, theirs, parameters=mk_params, base_index=0 if use_base else None, dtype=half, out_dtype=half
    )
    base_model = "base_model: o\n" if use_base else ""
    recipe = mergekit_module.load_recipe(
        f"merge_method: {theirs}\n{base_model}models: [a, b]\ndtype: {precision}\n", "r"
    )
    if recipe.precision == "float32":  # mergekit's linear: dtype rounds its inputs and result only
        assert theirs in mergekit_module.FLOAT32_METHODS
        if stored != half:  # a merge keeps the stored inputs as they are: mergekit without dtype
            want = merge(inputs, theirs, parameters=mk_params, base_index=None).to(stored)
            assert not torch.equal(want, merge(inputs, theirs, parameters=mk_params, dtype=half).to(stored))
    else:
        assert recipe.precision == precision
    got = merge_many_tensors(ts[0], ts[1:], ours, per_model=per, precision=recipe.precision, **params)
    assert got.dtype == stored
    assert torch.equal(got.view(torch.uint8), want.to(stored).view(torch.uint8))
    other = "float32" if recipe.precision != "float32" else precision
    in_other = merge_many_tensors(ts[0], ts[1:], ours, per_model=per, precision=other, **params)
    assert not torch.equal(in_other, got)


def test_ties_conventions_mergekit_sign_ties_and_count(models) -> None:  # type: ignore[no-untyped-def]
    merge = mergekit_api()
    from mergekit.merge_methods.generalized_task_arithmetic import (
        ConsensusMethod,
        GeneralizedTaskArithmeticMerge,
    )
    from mergekit.sparsify import SparsificationMethod

    # a weighted sum of exactly 0: mergekit elects +, the paper elects nothing
    base = torch.zeros(4)
    ours, theirs = torch.tensor([1.0, -2.0, 3.0, 0.5]), torch.tensor([-1.0, 2.0, 1.0, -0.5])
    got = merge_many_tensors(base, [ours, theirs], "ties", density=1.0, conventions="mergekit")
    want = merge([base, ours, theirs], "ties", parameters={"weight": 1.0, "density": 1.0}, base_index=0)
    assert torch.equal(got, want) and got.tolist() == [1.0, 2.0, 2.0, 0.5]
    assert merge_tensors(base, ours, theirs, "ties", density=1.0).tolist() == [0.0, 0.0, 2.0, 0.0]
    # the count vote (mergekit's ConsensusMethod.count, not registered under a name there)
    count_ties = GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod.count,
        sparsification_method=SparsificationMethod.magnitude,
        default_normalize=True,
        default_rescale=False,
        method_name="ties_count",
        method_pretty_name=None,
        method_reference_url=None,
    )
    ts = mk_tensors(3, 3, (32, 24), torch.float32, True)
    params = {"weight": [0.2, 0.5, 0.3], "density": [0.4, 0.4, 0.6]}
    want = merge(ts, count_ties, parameters=params, base_index=0)
    per = [{"weight": w, "density": d} for w, d in zip(params["weight"], params["density"], strict=True)]
    got = merge_many_tensors(
        ts[0], ts[1:], "ties", per_model=per, conventions="mergekit", sign_method="count"
    )
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("ours", "theirs", "extra"),
    [
        ("task-arithmetic", "task_arithmetic", {"normalize": True}),
        ("breadcrumbs", "breadcrumbs", {"density": [0.5, 0.6, 0.7], "gamma": [0.05, 0.01, 0.1]}),
        ("breadcrumbs-ties", "breadcrumbs_ties", {"density": [0.5, 0.6, 0.7], "gamma": [0.05, 0.01, 0.1]}),
    ],
)
def test_other_task_vector_methods_conventions_mergekit_bit_for_bit(
    ours: str, theirs: str, extra: dict
) -> None:  # type: ignore[type-arg]
    merge = mergekit_api()
    ts = mk_tensors(11, 3, (40, 30), torch.float32, True)
    weights = [0.5, 0.2, 0.3]
    want = merge(ts, theirs, parameters={"weight": weights, **extra}, base_index=0)
    lists = {k: v for k, v in extra.items() if isinstance(v, list)}
    per = [{"weight": w, **{k: v[i] for k, v in lists.items()}} for i, w in enumerate(weights)]
    shared = {k: v for k, v in extra.items() if not isinstance(v, list)}
    got = merge_many_tensors(ts[0], ts[1:], ours, per_model=per, conventions="mergekit", **shared)
    assert torch.equal(got, want)


@pytest.mark.parametrize(
    ("ours", "theirs", "ours_params", "mk_params", "use_base"),
    [
        ("linear", "linear", {}, {}, False),
        ("model-stock", "model_stock", {}, {}, True),
        ("model-stock", "model_stock", {"filter_wise": True}, {"filter_wise": True}, True),
        ("sce", "sce", {"select_topk": 0.4}, {"select_topk": 0.4}, True),
        ("karcher", "karcher", {}, {}, False),
        ("multislerp", "multislerp", {}, {}, True),
        ("multislerp", "multislerp", {"use_base": False}, {}, False),
        ("nuslerp", "nuslerp", {"nuslerp_flatten": False}, {"nuslerp_flatten": False}, True),
        (
            "nuslerp",
            "nuslerp",
            {"nuslerp_flatten": False, "nuslerp_row_wise": True},
            {"nuslerp_flatten": False, "nuslerp_row_wise": True},
            True,
        ),
    ],
)
def test_methods_agree_with_mergekit(
    ours: str, theirs: str, ours_params: dict, mk_params: dict, use_base: bool
) -> None:  # type: ignore[type-arg]
    merge = mergekit_api()
    g = torch.Generator().manual_seed(4)
    base = torch.randn(36, 28, generator=g) * 0.05
    shared = torch.randn(36, 28, generator=g) * 0.01
    n = 2 if ours == "nuslerp" else 3
    tunes = [base + shared + torch.randn(36, 28, generator=g) * 0.01 for _ in range(n)]
    weights = [0.6, 0.4] if n == 2 else [0.5, 0.3, 0.2]
    if ours in ("linear", "nuslerp", "multislerp"):
        mk_params = {**mk_params, "weight": weights}
        per = [{"weight": w} for w in weights]
    else:
        per = []
    inputs = [base, *tunes] if use_base else tunes
    want = merge(inputs, theirs, parameters=mk_params, base_index=0 if use_base else None).double()
    got = merge_many_tensors(base, tunes, ours, per_model=per, **ours_params).double()
    assert float((got - want).norm() / want.norm()) < 1e-6


# ------------------------------------------------------------------ CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(
    "name",
    [
        "ties",
        "dare-ties",
        "breadcrumbs-ties",
        "della",
        "della-linear",
        "sce",
        "model-stock",
        "karcher",
        "multislerp",
        "linear",
    ],
)
def test_cuda_gives_the_cpu_result_for_n_models(models, name: str) -> None:  # type: ignore[no-untyped-def]
    base, tunes = models
    cpu = merge_many_tensors(base, tunes, name, name=NAME, device="cpu")
    gpu = merge_many_tensors(base, tunes, name, name=NAME, device="cuda")
    assert rel_err(gpu, cpu.astype(np.float64)) < RTOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_ties_conventions_mergekit_on_cuda_is_mergekit_on_cuda() -> None:
    merge = mergekit_api()
    ts = [t.cuda() for t in mk_tensors(5, 3, (256, 192), torch.float32, True)]
    params = {"weight": [0.5, 0.3, 0.2], "density": [0.3, 0.5, 0.4]}
    want = merge(ts, "ties", parameters=params, base_index=0)
    per = [{"weight": w, "density": d} for w, d in zip(params["weight"], params["density"], strict=True)]
    got = merge_many_tensors(ts[0], ts[1:], "ties", per_model=per, conventions="mergekit")
    assert got.device.type == "cuda" and torch.equal(got, want)


def _trim_by_sort(tau: torch.Tensor, density: float) -> torch.Tensor:
    """mergekit's `magnitude` as its code has it: a mask of the first k of a descending argsort."""
    k = max(1, int(density * tau.numel()))
    mask = torch.zeros(tau.numel(), dtype=tau.dtype)
    mask[torch.argsort(tau.abs().reshape(-1).float(), descending=True)[:k]] = 1
    return tau * mask.reshape_as(tau)


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("kind", ["random", "zeros", "split tie", "whole tie", "nan", "tiny"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_the_trim_selects_what_the_sort_picks(
    kind: str, dtype: torch.dtype, streamed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The selection that replaces mergekit's argsort gives its bytes, both ways (the mask of the
    whole task vector, and the rule over blocks of model - base); where ties at the threshold
    make the sort's order decide, that order is replayed (a test that fails if it is wrong),
    its first sides held or streamed; a NaN leaves it to the sort."""
    from git_theta_like.merge.strategies import task_vectors as tv

    if streamed:
        stream_the_replay(monkeypatch)

    g = torch.Generator().manual_seed(len(kind))
    base = torch.randn(4000, generator=g, dtype=torch.float64)
    tau = torch.randn(4000, generator=g, dtype=torch.float64) * 0.01
    density = 0.3
    if kind == "zeros":  # most of the task vector unchanged: the k-th largest is 0
        tau[torch.rand(4000, generator=g) < 0.8] = 0.0
        tau[:7] = -0.0
    elif kind == "split tie":  # 1500 entries equal to the threshold, 1200 of them kept
        tau[:1500] = 0.5
        tau[5] = -0.5
    elif kind == "whole tie":  # every entry equal to the threshold kept: no sort needed
        tau = tau.clamp(-0.02, 0.02)
        tau[:1200] = 1.0
    elif kind == "nan":
        tau[3] = float("nan")
    elif kind == "tiny":  # float64 entries that are 0 in float32: which are kept still matters
        tiny = torch.rand(4000, generator=g) < 0.8
        base[tiny], tau[tiny] = 0.0, 1e-300
    model = (base + tau).to(dtype)
    base = base.to(dtype)
    tau = model - base
    k = max(1, int(density * tau.numel()))
    w = tau.abs().float().numpy()
    keep = tv._argsort_top_k(lambda lo, hi: w[lo:hi], w.size, k, exact=dtype != torch.float64)
    assert (keep is None) == (kind == "nan")
    want = _trim_by_sort(tau, density)
    got = tv.trim_top_k_mergekit(tau, density, rescale=False)
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
    rule = tv.trim_top_k_mergekit_rule_of(model, base, density)
    assert (rule is None) == (kind == "nan")
    if rule is not None:
        fm, fb, parts = model.reshape(-1), base.reshape(-1), []
        for lo in range(0, 4000, 700):  # blocks that do not divide the tensor
            hi = min(4000, lo + 700)
            parts.append(rule(fm[lo:hi] - fb[lo:hi], lo, hi))
        assert torch.equal(torch.cat(parts).view(torch.uint8), want.view(torch.uint8))


def test_a_torch_that_sorts_otherwise_gets_the_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay is used only when the torch in use orders ties as it replays them (true of the
    torch these tests run); when the check says otherwise, the trim sorts, with the same bytes."""
    from git_theta_like.merge.strategies import task_vectors as tv

    assert tv.torch_sorts_as_replayed()
    g = torch.Generator().manual_seed(2)
    base = torch.randn(3000, generator=g)
    model = base.clone()
    model[:1000] += 0.5  # 1000 entries tied, 900 kept
    tau = model - base
    want = _trim_by_sort(tau, 0.3)
    assert tv.trim_top_k_mergekit_rule_of(model, base, 0.3) is not None
    monkeypatch.setattr(tv, "torch_sorts_as_replayed", lambda: False)
    assert tv.trim_top_k_mergekit_rule_of(model, base, 0.3) is None
    w = tau.abs().numpy()
    assert tv._argsort_top_k(lambda lo, hi: w[lo:hi], w.size, 900, exact=True) is None
    got = tv.trim_top_k_mergekit(tau, 0.3, rescale=False)
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


def test_where_the_sort_would_heapsort_the_trim_sorts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past std::sort's depth limit the introsort switches to heapsort, which is not replayed:
    the replay says so (None) and the trim runs the sort, with the sort's bytes."""
    from git_theta_like.merge.strategies import argsort_ties
    from git_theta_like.merge.strategies import task_vectors as tv

    g = torch.Generator().manual_seed(4)
    base = torch.randn(3000, generator=g)
    model = base.clone()
    model[:1000] += 0.5
    monkeypatch.setattr(argsort_ties, "depth_limit", lambda n: 1)
    w = (model - base).abs().numpy()
    t = np.sort(w)[3000 - 900]
    assert argsort_ties.tied_in_top_k(lambda lo, hi: w[lo:hi], 3000, 900, t) is None
    assert tv.trim_top_k_mergekit_rule_of(model, base, 0.3) is None
    got = tv.trim_top_k_mergekit(model - base, 0.3, rescale=False)
    want = _trim_by_sort(model - base, 0.3)
    assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))


def test_the_replayed_sort_picks_the_ties_torch_argsort_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    """argsort_ties.tied_in_top_k against torch.argsort(descending=True) itself, on arrays where
    ties decide: few distinct values, one value over half the array, sparse, sorted either way,
    infinities, sizes around the insertion-sort threshold (16) and scan blocks that do not
    divide them; bfloat16 and float16 values with the side held in 2 bytes an entry; sides held
    from the first step, streamed while large, and streamed to the end."""
    from git_theta_like.merge.strategies import argsort_ties

    rng = np.random.default_rng(11)
    for trial in range(300):
        n = int(rng.choice([rng.integers(2, 40), rng.integers(2, 3000), rng.integers(2, 20000)]))
        kind = trial % 6
        if kind == 0:
            w = rng.integers(0, 3, n).astype(np.float32)
        elif kind == 1:
            w = rng.integers(0, 50, n).astype(np.float32)
        elif kind == 2:
            w = np.abs(rng.standard_normal(n)).astype(np.float32)
            w[rng.random(n) < 0.5] = w[0]
        elif kind == 3:
            w = np.zeros(n, np.float32)
            w[rng.random(n) < 0.1] = 1
        else:
            w = np.sort(rng.integers(0, 5, n).astype(np.float32))
            w = w if kind == 4 else w[::-1].copy()
        if trial % 7 == 0:  # infinities (an overflowed task vector) tie too
            w[rng.random(n) < 0.2] = np.inf
        blocks = (1, 100) if n <= 3000 else (500, 3000)  # scan blocks that do not divide n
        monkeypatch.setattr(argsort_ties, "BLOCK", int(rng.integers(*blocks)) if trial % 3 else 1 << 20)
        held = ("float32", "bfloat16", "float16")[trial % 3]  # the side kept in 2 bytes an entry
        # sides held from the start, streamed while large (the default), streamed to the end
        monkeypatch.setattr(argsort_ties, "HOLD", (1, 4, 1 << 40)[trial % 5 % 3])
        monkeypatch.setattr(argsort_ties, "HOLD_ANYWAY", 0 if trial % 4 else 1000)
        monkeypatch.setattr(argsort_ties, "MAX_STREAMED", 4 if trial % 2 else 64)
        if held != "float32":
            w = (w * np.float32(1.37)).astype(np.float32)  # values the 16-bit floats round
            w = torch.from_numpy(w).to(getattr(torch, held)).float().numpy()
        k = int(rng.integers(1, n))
        first = torch.argsort(torch.from_numpy(w), descending=True)[:k].numpy()
        t = np.sort(w)[n - k]
        want = np.sort(first[w[first] == t].astype(np.int64))
        got = argsort_ties.tied_in_top_k(lambda lo, hi, w=w: w[lo:hi], n, k, t, held)
        assert got is not None and np.array_equal(got, want), (trial, n, k)


def test_the_replay_follows_a_few_ties_by_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a real task vector's are: distinct magnitudes but for a handful equal to the k-th
    largest, which the replay follows through the steps by their ranks (no scan of the swaps)
    while it streams or only cuts; against torch.argsort."""
    from git_theta_like.merge.strategies import argsort_ties

    rng = np.random.default_rng(23)
    monkeypatch.setattr(argsort_ties, "HOLD_ANYWAY", 0)
    for trial in range(120):
        n = int(rng.integers(300, 6000))
        w = np.abs(rng.standard_normal(n)).astype(np.float32)
        k = int(rng.integers(1, n))
        t = np.sort(w)[n - k]
        copies = rng.choice(n, int(rng.integers(2, 12)), replace=False)
        w[copies] = t  # a few entries equal to the k-th largest, anywhere
        t = np.sort(w)[n - k]
        monkeypatch.setattr(argsort_ties, "BLOCK", int(rng.integers(5, 60)))
        monkeypatch.setattr(argsort_ties, "HOLD", (4, 1 << 40)[trial % 2])
        first = torch.argsort(torch.from_numpy(w), descending=True)[:k].numpy()
        want = np.sort(first[w[first] == t].astype(np.int64))
        got = argsort_ties.tied_in_top_k(lambda lo, hi, w=w: w[lo:hi], n, k, t)
        assert got is not None and np.array_equal(got, want), (trial, n, k)


def _test_magnitudes(rng: np.random.Generator, n: int, trial: int) -> np.ndarray:
    """n float32 gaussian magnitudes over many scales; by trial: half of them zero (some -0),
    coarse values (many ties), one value over half the tensor, infinities."""
    x = np.abs(rng.standard_normal(n) * 10.0 ** rng.integers(-8, 3)).astype(np.float32)
    if trial % 5 == 1:
        x[rng.random(n) < 0.5] = 0
        x[rng.random(n) < 0.2] = -0.0
    elif trial % 5 == 2:
        x = np.round(x * 3) / 3
    elif trial % 5 == 3:
        x[: n // 2] = x[0]
    elif trial % 5 == 4:
        x[rng.random(n) < 0.1] = np.inf
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_selection_finds_the_kth_largest_and_counts_its_ties(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """_select against a full sort: the k-th largest magnitude, how many are above it and how
    many equal, for gaussian magnitudes over many scales, zeros (and -0), coarse values with many
    ties, a value repeated across half the tensor, infinities, and radix blocks that do not divide
    the tensor; a NaN anywhere: None."""
    from git_theta_like.merge.strategies import task_vectors

    rng = np.random.default_rng(5)
    for trial in range(200):
        n = int(rng.integers(1, 3000))
        x = _test_magnitudes(rng, n, trial)
        if trial % 7 == 0:
            x[rng.integers(0, n)] = -0.0
        x = x.astype(dtype)
        monkeypatch.setattr(task_vectors, "RADIX_BLOCK", int(rng.integers(1, 5000)))
        k = int(rng.integers(1, n + 1))
        t = np.sort(x)[n - k]
        want = (t, int(np.count_nonzero(x > t)), int(np.count_nonzero(x == t)))
        got = task_vectors._select(x.copy(), k)
        assert got is not None and (got[0], got[1], got[2]) == want, (trial, got, want)
    x[int(rng.integers(0, n))] = np.nan
    assert task_vectors._select(x, 1) is None


def test_the_sampled_bracket_selects_what_the_radix_selection_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """_select_span with a sample (the bracket drawn from SAMPLE positions, one pass) against a
    full sort, for the magnitudes of the test above and brackets that hold (the radix selection
    not asked), that miss (too narrow: it is) and that would reach the smallest; a NaN anywhere
    (sampled or not): None."""
    from git_theta_like.merge.strategies import task_vectors

    radix = task_vectors._select_blocks
    asked: list[int] = []
    monkeypatch.setattr(task_vectors, "_select_blocks", lambda b, k: asked.append(k) or radix(b, k))
    monkeypatch.setattr(task_vectors, "SAMPLE", 1024)
    rng = np.random.default_rng(11)
    answered = 0
    for trial in range(300):
        n = int(rng.integers(8192, 20000))
        x = _test_magnitudes(rng, n, trial)
        sigmas = (5.0, 0.0, 1e6)[trial % 3]
        monkeypatch.setattr(task_vectors, "SAMPLE_SIGMAS", sigmas)
        monkeypatch.setattr(task_vectors, "RADIX_BLOCK", int(rng.integers(50, 5000)))
        k = int(rng.integers(1, n))
        t = np.sort(x)[n - k]
        want = (t, int(np.count_nonzero(x > t)), int(np.count_nonzero(x == t)))
        del asked[:]
        got = task_vectors._select_span(lambda lo, hi, x=x: x[lo:hi], n, k, lambda idx, x=x: x[idx])
        assert got is not None and (got[0], got[1], got[2]) == want, (trial, got, want)
        if sigmas == 1e6:
            assert asked == [k]
        answered += sigmas == 5.0 and not asked
    assert answered >= 95, answered  # of 100: the bracket held nearly always
    x = np.abs(rng.standard_normal(9000)).astype(np.float32)
    for where in (0, 1234, 8999):
        y = x.copy()
        y[where] = np.nan
        monkeypatch.setattr(task_vectors, "SAMPLE_SIGMAS", 5.0)
        assert task_vectors._select_span(lambda lo, hi, y=y: y[lo:hi], 9000, 800, y.__getitem__) is None
        y[:] = np.nan
        assert task_vectors._select_span(lambda lo, hi, y=y: y[lo:hi], 9000, 800, y.__getitem__) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_the_paper_trim_threshold_is_kthvalue(dtype: torch.dtype) -> None:
    """The selection that finds the paper trim's threshold gives kthvalue's value, ties included;
    a NaN leaves it to kthvalue."""
    from git_theta_like.merge.strategies.task_vectors import _kth_largest

    g = torch.Generator().manual_seed(3)
    mag = (torch.randn(5000, generator=g) * 0.01).abs().to(dtype)
    mag[:300] = mag[4000]  # a tie at many values' place
    for k in (1, 17, 300, 1250, 4999):
        got = _kth_largest(mag, k)
        assert got is not None and got.dtype == dtype
        assert torch.equal(got, torch.kthvalue(mag.float(), mag.numel() - k + 1).values.to(dtype))
    mag[7] = float("nan")
    assert _kth_largest(mag, 10) is None
