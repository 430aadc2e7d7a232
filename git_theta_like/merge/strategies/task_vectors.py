"""Task-vector strategies (τ_i = model_i - base), as configurations of ONE generalized method
(mergekit's "generalized task arithmetic"):

    θ = θ₀ + λ · combine(w_i · sparsify(τ_i))

sparsify: none (task arithmetic), TIES's magnitude trim, DARE's random drop, Model Breadcrumbs'
outlier-and-small drop, DELLA's magnitude-ranked random drop; combine: the weighted sum (divided
by Σ w_i with `normalize`), or TIES's sign election and disjoint (weighted) mean. Every
strategy takes any number of models (octopus merges); the two-model `merge` is `merge_many` of
[ours, theirs].

`conventions = "mergekit"` follows mergekit's code where it departs from the papers, so that a
mergekit merge is reproduced bit for bit (TIES-family; the random masks of DARE and DELLA are
ours, seeded): k = max(1, int(density · n)) entries kept by `argsort` order (exactly k, ties
broken as torch's argsort breaks them), the sign elected positive where the weighted sum is 0,
`rescale` matching each sparsified task vector's L1 norm to the original's, and mergekit's
order of operations.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies.base import Blocks, ManyModels, Param, TensorContext, Value

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

CONVENTIONS = ("paper", "mergekit")
SIGN_METHODS = ("sum", "count")


# ------------------------------------------------------------------ sparsifiers


# A sparsifier decided on a whole task vector, applied element by element: (a block of τ, flat;
# the block's first and last element + 1) -> that block of the sparsified τ. TIES's trims keep
# only a threshold or a mask (and a rescale factor) of the whole tensor; others the result.
KeepRule = Callable[["Tensor", int, int], "Tensor"]


def _identity(tau: Tensor, lo: int, hi: int) -> Tensor:
    return tau


def _precomputed(full: Tensor) -> KeepRule:
    flat = full.reshape(-1)
    return lambda tau, lo, hi: flat[lo:hi]


def _applied(rule: KeepRule, tau: Tensor) -> Tensor:
    """The rule applied to the whole of tau, in tau's shape."""
    return rule(tau.reshape(-1), 0, tau.numel()).reshape(tau.shape)


def _l1_factor(tau: Tensor, masked: Tensor, eps: float = 1e-7) -> Tensor | None:
    """l1_rescale's factor (None: unchanged), from the whole tensors."""
    before = tau.abs().sum()
    after = masked.abs().sum()
    if before < eps or after < eps:
        return None
    return before / after


def _l1_scaled(rule: KeepRule, tau: Tensor) -> KeepRule:
    """The rule, its result scaled to tau's L1 norm (l1_rescale, the factor taken once from the
    whole tensor)."""
    factor = _l1_factor(tau, _applied(rule, tau))
    return rule if factor is None else (lambda blk, lo, hi: rule(blk, lo, hi) * factor)


def trim_top_k(tau: torch.Tensor, density: float) -> torch.Tensor:
    """TIES's trim: keep the round(density * n) entries of largest magnitude (at least one),
    zero the rest. Entries tied with the smallest kept magnitude are kept too."""
    return _applied(trim_top_k_rule(tau, density), tau)


def trim_top_k_rule(tau: torch.Tensor, density: float) -> KeepRule:
    """trim_top_k as a rule: the threshold of the whole tensor, kept entry by entry."""
    flat = tau.reshape(-1)
    return trim_top_k_rule_of(
        lambda lo, hi: flat[lo:hi], tau.numel(), density, tau, at=functools.partial(flat.index_select, 0)
    )


def trim_top_k_rule_of(
    span: Callable[[int, int], torch.Tensor],
    n: int,
    density: float,
    like: torch.Tensor,
    at: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> KeepRule:
    """trim_top_k_rule of the task vector whose elements lo..hi (flat) span(lo, hi) gives: a merge
    passes model[lo:hi] - base[lo:hi], so that on the CPU neither the task vector nor its
    magnitudes are ever whole in memory (the threshold is found in passes over blocks).
    `like`: a tensor of the task vector's dtype and device; `at`, where given: its elements at
    some positions (an index tensor; see _select_span)."""
    import torch

    if density >= 1.0 or n == 0:
        return _identity
    k = max(1, round(density * n))
    threshold = _kth_largest_of(span, n, k, like, at=at)
    if threshold is None:
        mag = span(0, n).abs()
        threshold = torch.kthvalue(mag.cpu() if mag.device.type == "mps" else mag, n - k + 1).values
        del mag
    t = threshold.to(like.device)
    zero = torch.zeros((), dtype=like.dtype, device=like.device)
    return lambda blk, lo, hi: torch.where(blk.abs() >= t, blk, zero)


def _kth_largest(mag: torch.Tensor, k: int) -> torch.Tensor | None:
    """The k-th largest of mag (CPU, no NaN) by a selection (_select), several times faster than
    torch.kthvalue; None where it does not apply (the caller asks kthvalue)."""
    flat = mag.reshape(-1)
    span = lambda lo, hi: flat[lo:hi]  # noqa: E731
    return _kth_largest_of(
        span, mag.numel(), k, mag, magnitudes=True, at=functools.partial(flat.index_select, 0)
    )


def _selectable(like: torch.Tensor) -> bool:
    """Whether the selections below take a tensor like this: on the CPU, float32, float64 or a
    16-bit float (those compared in float32, where they are exact)."""
    import torch

    return like.device.type == "cpu" and like.dtype in (
        torch.float32,
        torch.float64,
        torch.float16,
        torch.bfloat16,
    )


def _kth_largest_of(
    span: Callable[[int, int], torch.Tensor],
    n: int,
    k: int,
    like: torch.Tensor,
    *,
    magnitudes: bool = False,
    at: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """The k-th largest magnitude of the n values span(lo, hi) gives (`magnitudes`: they are
    magnitudes already; `at`: the values at an index tensor's positions, for a sample) as a 0-d
    tensor of like's dtype: block by block for float32 and the 16-bit floats (_select_span,
    compared in float32, where they are exact), float64 whole (_select). None off the CPU, for
    other dtypes, or when a NaN is among them."""
    import torch

    if not _selectable(like):
        return None

    def magnitudes_of(blk: torch.Tensor) -> np.ndarray:
        m = blk if magnitudes else blk.abs()
        return (m if m.dtype in (torch.float32, torch.float64) else m.float()).numpy()

    def mags(lo: int, hi: int) -> np.ndarray:
        return magnitudes_of(span(lo, hi))

    def mags_at(idx: np.ndarray) -> np.ndarray:
        assert at is not None
        return magnitudes_of(at(torch.from_numpy(idx)))

    found = (
        _select(mags(0, n), k)
        if like.dtype == torch.float64
        else _select_span(mags, n, k, None if at is None else mags_at)
    )
    if found is None:
        return None
    return torch.tensor(found[0]).to(like.dtype)  # a value of the magnitudes: exact in their dtype


# entries a radix selection counts at a time: bounds its scratch memory (4 MiB blocks of float32
# were also faster than 16 MiB ones on a 23M-entry embedding, 7.5 vs 8.4 s for a whole TIES merge)
RADIX_BLOCK = 1 << 20


def _select(values: np.ndarray, k: int) -> tuple[np.floating, int, int] | None:
    """(t, above, equal): the k-th largest of the magnitudes `values` (1-D, >= 0, 1 <= k <= n),
    how many entries are above it and how many equal to it; None when a NaN is among them (the
    largest, to a sort: the callers leave such a tensor to torch). float32 by a radix selection
    over blocks of it (_select_blocks), other dtypes by numpy's introselect of a copy. `values`
    is left as it is."""
    import numpy as np

    n = values.size
    if values.dtype != np.float32:
        part = np.partition(values, n - k)
        if np.isnan(part[n - k :]).any():
            return None
        t = part[n - k]
        return t, int(np.count_nonzero(part[n - k + 1 :] > t)), int(np.count_nonzero(part == t))
    return _select_blocks(_radix_blocks(lambda lo, hi: values[lo:hi], n), k)


def _radix_blocks(span: Callable[[int, int], np.ndarray], n: int) -> Callable[[], Iterator[np.ndarray]]:
    """_select_blocks's input: span(lo, hi) over 0..n, RADIX_BLOCK entries at a time."""
    return lambda: (span(lo, min(n, lo + RADIX_BLOCK)) for lo in range(0, n, RADIX_BLOCK))


# entries sampled to bracket the k-th largest (_select_bracketed), and how many standard
# deviations of the sample's count above it the bracket spans on either side
SAMPLE = 1 << 15
SAMPLE_SIGMAS = 5.0


def _select_span(
    mags: Callable[[int, int], np.ndarray],
    n: int,
    k: int,
    mags_at: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.floating, int, int] | None:
    """_select of the n float32 magnitudes mags(lo, hi) gives a block at a time: where their
    values at sampled positions can be had (`mags_at`, an index array -> those magnitudes) and
    the tensor is large, in one pass that counts the entries above a bracket drawn from a sample
    and keeps the few inside it (_select_bracketed), else (or where the bracket misses) by the
    radix selection's two passes (_select_blocks). The same answer either way."""
    if mags_at is not None and n >= 8 * SAMPLE and k < n:
        found = _select_bracketed(mags, n, k, mags_at)
        if found is not False:
            return found
    return _select_blocks(_radix_blocks(mags, n), k)


def _select_bracketed(
    mags: Callable[[int, int], np.ndarray], n: int, k: int, mags_at: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.floating, int, int] | None | Literal[False]:
    """_select_span by a sample: SAMPLE positions drawn (a fixed seed, with replacement) give
    magnitudes whose order statistics bracket the k-th largest with SAMPLE_SIGMAS standard
    deviations of the sample's count above it to spare on each side; one pass over the blocks
    counts the entries above the bracket and equal to either end (where a value many entries
    share falls) and keeps those strictly inside it (about 2% of them at density 0.2), where the
    k-th largest is then selected. False where the bracket does not hold it or would keep too
    many (the caller takes the radix selection); None where a NaN is among the magnitudes.
    Exact whatever the sample: the counts say whether the bracket holds it."""
    import numpy as np

    s = SAMPLE
    idx = np.sort(np.random.default_rng(n).integers(0, n, s))
    sample = np.sort(mags_at(idx))  # ascending
    if np.isnan(sample[-1]):
        return None
    expected = s * k / n  # sample entries at or above the k-th largest, on average
    spread = SAMPLE_SIGMAS * (expected * (1 - k / n)) ** 0.5 + 1
    upper, lower = int(expected - spread), int(expected + spread) + 1  # counts from the top
    hi = sample[s - upper] if upper >= 1 else np.float32(np.inf)
    if lower >= s:
        return False  # the bracket would reach the smallest: no pass saved
    lo = sample[s - lower]
    limit = 2 * (lower - upper) * n // s + s  # twice the entries the bracket should keep, at most
    above = at_hi = at_lo = kept = 0  # entries above hi, equal to hi, equal to lo, between them
    inside: list[np.ndarray] = []
    for start in range(0, n, RADIX_BLOCK):
        blk = mags(start, min(n, start + RADIX_BLOCK))
        if np.isnan(blk.max()):
            return None
        over, from_hi = int(np.count_nonzero(blk > hi)), blk >= hi
        above += over
        at_hi += int(np.count_nonzero(from_hi)) - over
        if lo == hi:
            continue
        past_lo = blk > lo
        at_lo += int(np.count_nonzero(blk >= lo)) - int(np.count_nonzero(past_lo))
        part = blk[past_lo ^ from_hi]  # lo < entry < hi
        kept += part.size
        if kept > limit:
            return False
        inside.append(part)
    # the k-th largest: above the bracket (missed), hi, inside it, lo or below it (missed)
    if k <= above or k > above + at_hi + kept + at_lo:
        return False
    if k <= above + at_hi:
        return hi, above, at_hi
    if k > above + at_hi + kept:
        return lo, above + at_hi + kept, at_lo
    values = np.concatenate(inside)
    rank = values.size - (k - above - at_hi)
    t = np.partition(values, rank)[rank]
    return t, above + at_hi + int(np.count_nonzero(values > t)), int(np.count_nonzero(values == t))


def _select_blocks(blocks: Callable[[], Iterator[np.ndarray]], k: int) -> tuple[np.floating, int, int] | None:
    """_select of float32 magnitudes that `blocks()` yields a block at a time (called twice: the
    blocks need never be whole in memory). Non-negative floats order as their bits do: a
    histogram of the top 16 bits names the bin that holds t, then a selection among that bin's
    entries alone (2-3x faster than numpy's introselect of the whole tensor, which moreover
    needs a copy)."""
    import numpy as np

    def bins(blk: np.ndarray) -> np.ndarray:  # the top 16 bits of a block's entries, the sign's
        return (blk.view(np.uint32) >> 16) & 0x7FFF  # cleared (±0 counts as +0)

    counts = np.zeros(1 << 15, np.int64)
    for blk in blocks():
        counts += np.bincount(bins(blk), minlength=1 << 15)
        if counts[0x7F80:].any() and np.isnan(blk).any():  # infinities and NaNs live up there
            return None
    at_or_above = np.cumsum(counts[::-1])[::-1]  # entries in bin b or above
    b = int(np.flatnonzero(at_or_above >= k)[-1])
    above = int(at_or_above[b] - counts[b])
    inside = np.concatenate([blk[bins(blk) == b] for blk in blocks()])
    rank = len(inside) - (k - above)
    t = np.partition(inside, rank)[rank]
    return t, above + int(np.count_nonzero(inside > t)), int(np.count_nonzero(inside == t))


def l1_rescale(tau: torch.Tensor, masked: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """masked scaled so that its L1 norm is tau's (unchanged when either norm is below eps):
    mergekit's `rescale` (RescaleNorm.l1), operation for operation."""
    factor = _l1_factor(tau, masked, eps)
    return masked if factor is None else masked * factor


def trim_top_k_mergekit(tau: torch.Tensor, density: float, rescale: bool) -> torch.Tensor:
    """mergekit's `magnitude`: exactly k = max(1, int(density * n)) entries, the first k of a
    descending argsort of |tau| (on the CPU in float32), kept through a 0/1 mask."""
    return _applied(trim_top_k_mergekit_rule(tau, density, rescale), tau)


def trim_top_k_mergekit_rule(tau: torch.Tensor, density: float, rescale: bool) -> KeepRule:
    """trim_top_k_mergekit as a rule over the whole tensor (and its L1 factor): what the sort
    keeps, found without it where _kept_by_sort applies, else the sort's 0/1 mask."""
    import torch

    if density >= 1:
        return _identity
    if tau.numel() == 0:
        return lambda blk, lo, hi: torch.zeros_like(blk)
    n = tau.numel()
    k = max(1, int(density * n))
    flat = tau.reshape(-1)
    mags = lambda lo, hi: flat[lo:hi].abs().float().numpy()  # noqa: E731
    mags_at = lambda idx: flat.index_select(0, torch.from_numpy(idx)).abs().float().numpy()  # noqa: E731
    rule = _kept_by_sort(mags, n, k, tau, mags_at) if _selectable(tau) else None
    if rule is None:
        w = flat.abs()
        if w.device.type == "cpu":
            w = w.float()
        mask = torch.zeros(n, dtype=tau.dtype, device=tau.device)
        mask[torch.argsort(w, descending=True)[:k]] = 1
        del w
        rule = lambda blk, lo, hi: blk * mask[lo:hi]  # noqa: E731
    return _l1_scaled(rule, tau) if rescale else rule


def trim_top_k_mergekit_rule_of(model: torch.Tensor, base: torch.Tensor, density: float) -> KeepRule | None:
    """trim_top_k_mergekit_rule (no rescale) of model - base, with neither the task vector nor its
    magnitudes ever whole in memory: the k-th largest magnitude found over blocks (_argsort_top_k),
    the rule recomputing each block's magnitudes. None off the CPU, for other dtypes, with a NaN
    among the magnitudes or where the sort's order cannot be replayed: the caller takes the
    whole-tensor way."""
    import torch

    if density >= 1:
        return _identity
    n = model.numel()
    if n == 0:
        return lambda blk, lo, hi: torch.zeros_like(blk)
    if not _selectable(model):
        return None
    fm, fb = model.reshape(-1), base.reshape(-1)

    def mags(lo: int, hi: int) -> np.ndarray:  # mergekit's |tau| (in float32 on the CPU)
        return (fm[lo:hi] - fb[lo:hi]).abs().float().numpy()

    def mags_at(idx: np.ndarray) -> np.ndarray:
        at = torch.from_numpy(idx)
        return (fm.index_select(0, at) - fb.index_select(0, at)).abs().float().numpy()

    return _kept_by_sort(mags, n, max(1, int(density * n)), model, mags_at)


def _kept_by_sort(
    mags: Callable[[int, int], np.ndarray],
    n: int,
    k: int,
    like: Tensor,
    mags_at: Callable[[np.ndarray], np.ndarray] | None = None,
) -> KeepRule | None:
    """The rule keeping what the first k of mergekit's sort of the magnitudes mags(lo, hi) pick
    (_argsort_top_k), each block's magnitudes recomputed from the block; `like`: a tensor of
    the task vector's dtype; `mags_at`: the magnitudes at given positions (see _select_span).
    None where _argsort_top_k does not apply."""
    import numpy as np
    import torch

    found = _argsort_top_k(
        mags,
        n,
        k,
        exact=like.dtype != torch.float64,
        held={torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(like.dtype, "float32"),
        mags_at=mags_at,
    )
    if found is None:
        return None
    t = torch.tensor(found[0])  # float32, as the magnitudes compared
    tied = found[1]

    def rule(blk: Tensor, lo: int, hi: int) -> Tensor:
        w = blk.abs().float()
        if tied is None:
            return blk * (w >= t)
        m = w > t
        a, b = np.searchsorted(tied, (lo, hi))
        if b > a:
            m[torch.from_numpy(tied[a:b] - lo)] = True
        return blk * m

    return rule


def _argsort_top_k(
    mags: Callable[[int, int], np.ndarray],
    n: int,
    k: int,
    *,
    exact: bool,
    held: str = "float32",
    mags_at: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.floating, np.ndarray | None] | None:
    """What the first k of a descending argsort (torch's, on the CPU) of the n float32 magnitudes
    mags(lo, hi) gives a block at a time pick, found by a selection (_select_span, 10-20x faster
    than the sort; `mags_at`: see there): (t, tied) -- every entry above t, the k-th largest, and
    of those equal to t the ones `tied` lists (sorted indices), or all of them (tied None: none
    is left out, or t = 0 where the magnitudes are `exact`ly the task vector's: its entries of
    magnitude 0 are ±0, and ±0 times 1 or 0 is the same ±0). Where entries equal to t are left
    out, the sort's tie order decides which: replayed without sorting (argsort_ties; `held`: see
    tied_in_top_k). None where a NaN is among the magnitudes or the replay gives up (the caller
    sorts)."""
    from git_theta_like.merge.strategies.argsort_ties import tied_in_top_k

    if k >= n:
        return None
    found = _select_span(mags, n, k, mags_at)
    if found is None:
        return None
    t, above, equal = found
    if above + equal == k or (t == 0 and exact):
        return t, None
    if not torch_sorts_as_replayed():
        return None
    tied = tied_in_top_k(mags, n, k, t, held)
    if tied is None or tied.size != k - above:
        return None
    return t, tied


def _slice(a: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return a[lo:hi]


@functools.cache
def torch_sorts_as_replayed() -> bool:
    """Whether the torch in use orders ties in a CPU argsort as argsort_ties replays it (libstdc++'s
    std::sort), checked once per process on arrays whose ties span several partition steps and
    the final insertion sort: a torch that sorts differently gets mergekit's sort itself."""
    import numpy as np
    import torch

    from git_theta_like.merge.strategies.argsort_ties import tied_in_top_k

    rng = np.random.default_rng(0)
    for n in (40, 3000):
        w = rng.integers(0, 4, n).astype(np.float32)
        k = n // 3
        first = torch.argsort(torch.from_numpy(w), descending=True)[:k].numpy()
        t = np.sort(w)[n - k]
        got = tied_in_top_k(functools.partial(_slice, w), n, k, t)
        if got is None or not np.array_equal(got, np.sort(first[w[first] == t])):
            return False
    return True


def breadcrumbs(tau: torch.Tensor, density: float, gamma: float, rescale: bool) -> torch.Tensor:
    """Model Breadcrumbs (Davari & Belilovsky 2024): drop the int(gamma * n) entries of largest
    magnitude (outliers) and the smallest, so that int(density * n) remain (fewer outliers are
    dropped when density + gamma > 1), as mergekit counts them; `rescale`: to the L1 norm."""
    import torch

    if density >= 1:
        return tau
    n = tau.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    w = tau.abs().reshape(-1)
    if w.device.type == "cpu":
        w = w.float()
    order = torch.sort(w, descending=False).indices
    mask = torch.zeros(n, dtype=tau.dtype, device=tau.device)
    mask[order[n_bot : n_bot + target]] = 1
    masked = tau * mask.reshape_as(tau)
    return l1_rescale(tau, masked) if rescale else masked


def tensor_seed(seed: int, name: str, side: str) -> int:
    """A 63-bit seed for one tensor of one side: the same on every machine and device."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{side}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def side_name(index: int) -> str:
    """The name that seeds model `index`'s masks: ours, theirs, then model3, model4, ..."""
    return ("ours", "theirs")[index] if index < 2 else f"model{index + 1}"


def uniform(shape: tuple[int, ...] | torch.Size, seed: int) -> torch.Tensor:
    """Uniform [0, 1) float32 draws from the CPU generator seeded with `seed` (the same on
    every device)."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return torch.rand(tuple(shape), generator=g, dtype=torch.float32)


def dare_mask(shape: tuple[int, ...] | torch.Size, drop: float, seed: int) -> torch.Tensor:
    """Keep-mask of DARE: each entry kept with probability 1 - drop. Drawn on the CPU generator,
    so a seed gives the same mask on any device."""
    return uniform(shape, seed) >= drop


def dare_sparsify(tau: torch.Tensor, drop: float, rescale: bool, seed: int) -> torch.Tensor:
    """Drop each entry with probability `drop`, rescale the rest by 1 / (1 - drop)."""
    import torch

    if drop == 0.0:
        return tau
    keep = dare_mask(tau.shape, drop, seed).to(tau.device)
    out = torch.where(keep, tau, torch.zeros((), dtype=tau.dtype, device=tau.device))
    return out * (1.0 / (1.0 - drop)) if rescale else out


def della_keep_probabilities(tau: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """DELLA's MagPrune: within each row (the tensor as [shape[0], -1]; a vector is one row),
    the entry of rank r (0 = smallest magnitude, m - 1 = largest; ties by position) is kept with
    probability density - epsilon + 2 epsilon r / (m - 1) (density for a one-entry row)."""
    import torch

    rows = tau.reshape(1, -1) if tau.dim() < 2 else tau.reshape(tau.shape[0], -1)
    m = rows.shape[1]
    order = torch.argsort(rows.abs(), dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(m, device=tau.device).expand_as(order))
    scaled = ranks.to(tau.dtype) / (m - 1) if m > 1 else torch.full_like(rows, 0.5)
    return ((density - epsilon) + scaled * (2 * epsilon)).reshape(tau.shape)


def della_sparsify(
    tau: torch.Tensor, density: float, epsilon: float, rescale: bool, seed: int, l1: bool = False
) -> torch.Tensor:
    """DELLA (Deep et al. 2024): keep each entry with its MagPrune probability p_i, rescale the
    kept ones by 1 / p_i (the paper), or to the original L1 norm (`l1`: mergekit's rescale)."""
    import torch

    if density >= 1.0 or tau.numel() == 0:
        return tau
    p = della_keep_probabilities(tau, density, epsilon)
    keep = uniform(tau.shape, seed).to(tau.device) < p
    masked = torch.where(keep, tau, torch.zeros((), dtype=tau.dtype, device=tau.device))
    if not rescale:
        return masked
    return l1_rescale(tau, masked) if l1 else masked / p


def check_della(density: float, epsilon: float, where: str) -> None:
    if density < 1.0 and not (density - epsilon > 0 and density + epsilon <= 1):
        raise MergeConfigError(
            f"{where}: della needs density - epsilon > 0 and density + epsilon <= 1 "
            f"(keep probabilities in (0, 1]), not density={density!r}, epsilon={epsilon!r}"
        )


# ------------------------------------------------------------------ sign election


def elect_sign(taus: Sequence[torch.Tensor], method: str = "sum") -> torch.Tensor:
    """TIES's elect: per entry, the sign of Σ τ_i (`sum`: the total mass, the paper's) or of
    Σ sgn(τ_i) (`count`: the majority of signs); a tie is 0 (no task vector agrees)."""
    import torch

    if method == "count":
        total = functools.reduce(operator.add, [torch.sign(t) for t in taus])
    else:
        total = taus[0] + taus[1] if len(taus) == 2 else torch.stack(list(taus)).sum(0)
    return torch.sign(total)


def disjoint_merge(
    taus: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    sign_method: str = "sum",
    normalize: bool = True,
) -> torch.Tensor:
    """TIES's elect + disjoint mean: the elected sign (see elect_sign), then the sum of the
    (weighted) task vectors that agree with it, divided by the sum of their weights (the mean
    for unit weights; zero where none agrees); without `normalize`, the sum alone."""
    import torch

    sign = elect_sign(taus, sign_method)
    agree_sum = torch.zeros_like(sign)
    count = torch.zeros_like(sign)
    zero = torch.zeros((), dtype=sign.dtype, device=sign.device)
    for i, tau in enumerate(taus):
        agree = (torch.sign(tau) == sign) & (tau != 0)
        agree_sum += torch.where(agree, tau, zero)
        if weights is None or weights[i] == 1.0:
            count += agree
        else:
            count += torch.where(
                agree, torch.full((), weights[i], dtype=sign.dtype, device=sign.device), zero
            )
    if not normalize:
        return agree_sum
    if weights is None or all(w == 1.0 for w in weights):
        return agree_sum / count.clamp(min=1)
    return agree_sum / torch.where(count == 0, torch.ones((), dtype=count.dtype, device=count.device), count)


# ------------------------------------------------------------------ the generalized method


def _option(
    name: str,
    kind: type,
    default: Value,
    text: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    choices: tuple[str, ...] = (),
) -> Param:
    return Param(name, kind, default, text, lo, hi, lo_open, choices=choices, option=True)


LAMBDA = Param("lambda", float, 1.0, "scale of the merged task vector")
WEIGHT = _option("weight", float, 1.0, "weight w_i of a model's task vector (set per model)")
CONVENTIONS_PARAM = _option(
    "conventions",
    str,
    "paper",
    "paper, or mergekit: follow mergekit's code (integer k, argsort order, + on a tie, L1 rescale)",
    choices=CONVENTIONS,
)
SIGN_METHOD = _option(
    "sign_method",
    str,
    "sum",
    "sign election: sum (the larger total mass, the paper's) or count (the majority of signs)",
    choices=SIGN_METHODS,
)


def normalize_param(default: bool) -> Param:
    return _option("normalize", bool, default, "divide by the sum of the weights (of the agreeing models)")


def rescale_l1_param(default: bool) -> Param:
    return _option("rescale", bool, default, "rescale each sparsified task vector to its L1 norm")


def density_param(default: float, text: str) -> Param:
    return Param("density", float, default, text, 0, 1, lo_open=True)


class TaskVectorMerge(ManyModels):
    """θ₀ + λ · combine(w_i · sparsify(τ_i)); subclasses choose `sparsifier` and `consensus`."""

    sparsifier: ClassVar[str | None] = None  # None, "magnitude", "random", "breadcrumbs", "della"
    consensus: ClassVar[bool] = False  # TIES's sign election and disjoint mean
    needs_base = True
    max_models = None
    per_model_params: ClassVar[tuple[str, ...]] = ("weight",)

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        blocks = self.prepare_many(base, models, ctx)
        assert base is not None  # prepare_many said so otherwise
        return blocks(0, base.numel()).reshape(base.shape)

    def prepare_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Blocks:
        """Each model's sparsifier decided on its whole task vector (a threshold or mask where it
        can, else the sparsified vector), then the rest of the method entry by entry: returns
        (lo, hi) -> elements lo..hi of the merged tensor, flat (compute.py runs it in blocks)."""
        if base is None:
            raise MergeConfigError(f"strategy {self.name} needs the tensor in the merge base")
        vals = self.model_values(ctx, len(models))
        mergekit = self["conventions"] == "mergekit"
        rules = [
            self.keep_rule_of(m, base, v, ctx.name, i, l1=mergekit)
            for i, (m, v) in enumerate(zip(models, vals, strict=True))
        ]
        flat_base, flat_models = base.reshape(-1), [m.reshape(-1) for m in models]

        def block(lo: int, hi: int) -> Tensor:
            b = flat_base[lo:hi]
            taus = [rule(m[lo:hi] - b, lo, hi) for rule, m in zip(rules, flat_models, strict=True)]
            return self._combine(b, taus, vals, mergekit)

        return block

    def keep_rule_of(
        self, model: Tensor, base: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool
    ) -> KeepRule:
        """keep_rule of the task vector model - base. No sparsifier: none computed;
        a subclass that decides in passes over blocks of it overrides this, so that it is never
        whole in memory."""
        if self.sparsifier is None:
            return _identity
        return self.keep_rule(model - base, v, name, index, l1=l1)

    def keep_rule(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> KeepRule:
        """One model's sparsifier as a rule over blocks of its task vector (see KeepRule): the
        sparsified vector, decided on the whole tensor, unless a subclass keeps less."""
        if self.sparsifier is None:
            return _identity
        return _precomputed(self.sparsify(tau, v, name, index, l1=l1))

    def sparsify(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> Tensor:
        """One model's task vector, sparsified with its values `v` (paper conventions unless l1)."""
        return tau

    def _combine(
        self, base: Tensor, taus: list[Tensor], vals: list[dict[str, Value]], mergekit: bool
    ) -> Tensor:
        """The sparsified task vectors combined and added to the base (one block of them)."""
        if mergekit:
            return self._combine_mergekit(base, taus, vals)
        weights = [float(v["weight"]) for v in vals]
        if any(w != 1.0 for w in weights):
            taus = [tau * w for tau, w in zip(taus, weights, strict=True)]
        if self.consensus:
            mixed = disjoint_merge(taus, weights, str(self["sign_method"]), bool(self["normalize"]))
        else:
            mixed = functools.reduce(operator.add, taus)
            if self["normalize"]:
                total = sum(weights)
                if total == 0:
                    raise MergeConfigError(f"strategy {self.name}: weights sum to 0 and normalize is true")
                if total != 1.0:
                    mixed = mixed / total
        return base + mixed * float(self["lambda"])

    def _combine_mergekit(self, base: Tensor, taus: list[Tensor], vals: list[dict[str, Value]]) -> Tensor:
        """mergekit's GeneralizedTaskArithmeticMerge.merge_group, operation for operation, after
        the sparsification."""
        import torch

        deltas = base.new_empty((len(taus), *base.shape))
        for i, tau in enumerate(taus):
            deltas[i] = tau
        del taus
        weights = torch.tensor([float(v["weight"]) for v in vals], dtype=deltas.dtype, device=deltas.device)
        while deltas.dim() > weights.dim():
            weights.unsqueeze_(-1)
        deltas.mul_(weights)
        if self.consensus:
            if self["sign_method"] == "count":
                sign = deltas.sign().to(base.dtype)
                majority = (sign.sum(dim=0) >= 0).to(base.dtype) * 2 - 1
                mask = sign == majority
                del sign, majority
            else:
                # mergekit's sign(delta) == (sum >= 0) * 2 - 1, in fewer passes: a delta agrees
                # when it is > 0 where the sum is >= 0, < 0 elsewhere (0 and NaN never agree)
                positive = deltas.sum(dim=0) >= 0
                mask = torch.where(positive, deltas > 0, deltas < 0)
                del positive
            divisor = (weights * mask).sum(dim=0)
            deltas.mul_(mask)  # deltas * mask, in place (its ±0 where a delta disagrees)
            mixed = deltas.sum(dim=0)
            del deltas, mask
            divisor[divisor == 0] = 1
        else:
            mixed = deltas.sum(dim=0)
            divisor = weights.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        if self["normalize"]:
            mixed /= divisor
        if self["lambda"] != 1:
            mixed *= self["lambda"]
        return (base + mixed).to(base.dtype)


class TaskArithmetic(TaskVectorMerge):
    name = "task-arithmetic"
    elementwise = True
    summary = "base + lambda * sum_i w_i tau_i  (Ilharco et al. 2023)"
    params = (
        Param("lambda", float, 1.0, "scale of the summed task vectors"),
        WEIGHT,
        normalize_param(False),
        CONVENTIONS_PARAM,
    )


class Ties(TaskVectorMerge):
    name = "ties"
    summary = "trim, elect sign, disjoint mean of task vectors  (Yadav et al. 2023)"
    params = (
        density_param(0.2, "fraction of each task vector kept (largest magnitudes)"),
        LAMBDA,
        WEIGHT,
        normalize_param(True),
        rescale_l1_param(False),
        SIGN_METHOD,
        CONVENTIONS_PARAM,
    )
    aliases = {"k": ("density", 100.0)}  # k: the paper's top-k%, in percent
    sparsifier = "magnitude"
    consensus = True
    per_model_params = ("weight", "density")

    def keep_rule_of(
        self, model: Tensor, base: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool
    ) -> KeepRule:
        d, rescale = float(v["density"]), bool(self["rescale"])
        if l1 and not (rescale and d < 1.0):
            rule = trim_top_k_mergekit_rule_of(model, base, d)
            if rule is not None:
                return rule
        if l1 or (rescale and d < 1.0):  # a mask of the whole tensor, or its L1 norm, are needed
            return super().keep_rule_of(model, base, v, name, index, l1=l1)
        fm, fb = model.reshape(-1), base.reshape(-1)
        return trim_top_k_rule_of(
            lambda lo, hi: fm[lo:hi] - fb[lo:hi],
            fm.numel(),
            d,
            model,
            at=lambda idx: fm.index_select(0, idx) - fb.index_select(0, idx),
        )

    def keep_rule(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> KeepRule:
        d, rescale = float(v["density"]), bool(self["rescale"])
        if l1:
            return trim_top_k_mergekit_rule(tau, d, rescale)
        rule = trim_top_k_rule(tau, d)
        return _l1_scaled(rule, tau) if rescale and d < 1.0 else rule

    def sparsify(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> Tensor:
        return _applied(self.keep_rule(tau, v, name, index, l1=l1), tau)


_DARE_PARAMS = (
    Param("drop", float, 0.5, "probability of dropping each task-vector entry", 0, 1, hi_open=True),
    Param("rescale", bool, True, "rescale kept entries by 1 / (1 - drop)"),
    Param("seed", int, 0, "random seed: the same seed gives the same merge", 0, 2**63 - 1),
    LAMBDA,
    WEIGHT,
    _option(
        "density",
        float,
        0.5,
        "keep probability, 1 - drop (mergekit's name; set per model)",
        0,
        1,
        lo_open=True,
    ),
)


class Dare(TaskVectorMerge):
    name = "dare"
    summary = "drop and rescale task vectors, then add them  (Yu et al. 2024)"
    params: ClassVar[tuple[Param, ...]] = (*_DARE_PARAMS, normalize_param(False), CONVENTIONS_PARAM)
    sparsifier = "random"
    per_model_params = ("weight", "density")

    def __init__(self, values: Mapping[str, object] | None = None, where: str = "") -> None:
        vals = dict(values or {})
        where = where or f"strategy {self.name}"
        if "density" in vals:
            density = float(self._declared("density").parse(vals.pop("density"), where))
            if "drop" in vals:
                drop = float(self._declared("drop").parse(vals["drop"], where))
                if abs((1.0 - drop) - density) > 1e-12:
                    raise MergeConfigError(
                        f"{where}: drop={drop!r} and density={density!r} disagree (density = 1 - drop)"
                    )
            else:
                vals["drop"] = 1.0 - density
        super().__init__(vals, where)
        self.values["density"] = 1.0 - float(self["drop"])

    @classmethod
    def _declared(cls, name: str) -> Param:
        return next(p for p in cls.params if p.name == name)

    def recorded(self) -> list[tuple[str, Value]]:
        return [(k, v) for k, v in super().recorded() if k != "density"]  # drop says it

    def sparsify(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> Tensor:
        # the strategy's own drop unless this model has its own density (no rounding through 1 - x)
        drop = float(self["drop"]) if v["density"] == self["density"] else 1.0 - float(v["density"])
        seed = tensor_seed(int(self["seed"]), name, side_name(index))
        if not l1:
            return dare_sparsify(tau, drop, bool(self["rescale"]), seed)
        masked = dare_sparsify(tau, drop, False, seed)
        return l1_rescale(tau, masked) if self["rescale"] and drop > 0 else masked


class DareTies(Dare):
    name = "dare-ties"
    summary = "DARE's drop and rescale, then TIES's sign election and disjoint mean"
    params = (*_DARE_PARAMS, normalize_param(True), SIGN_METHOD, CONVENTIONS_PARAM)
    consensus = True


_BREADCRUMBS_PARAMS = (
    density_param(0.9, "fraction of each task vector kept, after the outliers"),
    Param("gamma", float, 0.01, "fraction of largest-magnitude entries (outliers) dropped", 0, 1),
    LAMBDA,
    WEIGHT,
    rescale_l1_param(False),
)


class Breadcrumbs(TaskVectorMerge):
    name = "breadcrumbs"
    summary = "drop outliers and small entries of each task vector, then add them  (Davari & Belilovsky 2024)"
    params: ClassVar[tuple[Param, ...]] = (*_BREADCRUMBS_PARAMS, normalize_param(False), CONVENTIONS_PARAM)
    sparsifier = "breadcrumbs"
    per_model_params = ("weight", "density", "gamma")

    def sparsify(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> Tensor:
        return breadcrumbs(tau, float(v["density"]), float(v["gamma"]), bool(self["rescale"]))


class BreadcrumbsTies(Breadcrumbs):
    name = "breadcrumbs-ties"
    summary = "breadcrumbs' drop, then TIES's sign election and disjoint sum (mean with normalize)"
    params = (*_BREADCRUMBS_PARAMS, normalize_param(False), SIGN_METHOD, CONVENTIONS_PARAM)
    consensus = True


_DELLA_PARAMS = (
    density_param(0.5, "mean keep probability of each task-vector entry"),
    Param("epsilon", float, 0.15, "keep probabilities range over density -/+ epsilon by magnitude rank", 0),
    Param("rescale", bool, True, "rescale kept entries by 1 / (their keep probability)"),
    Param("seed", int, 0, "random seed: the same seed gives the same merge", 0, 2**63 - 1),
    LAMBDA,
    WEIGHT,
)


class Della(TaskVectorMerge):
    name = "della"
    summary = "magnitude-ranked random drop (MagPrune), sign election, disjoint mean  (Deep et al. 2024)"
    params: ClassVar[tuple[Param, ...]] = (
        *_DELLA_PARAMS,
        normalize_param(True),
        SIGN_METHOD,
        CONVENTIONS_PARAM,
    )
    sparsifier = "della"
    consensus = True
    per_model_params = ("weight", "density", "epsilon")

    def validate(self, where: str) -> None:
        check_della(float(self["density"]), float(self["epsilon"]), where)

    def sparsify(self, tau: Tensor, v: Mapping[str, Value], name: str, index: int, *, l1: bool) -> Tensor:
        d, e = float(v["density"]), float(v["epsilon"])
        check_della(d, e, f"strategy {self.name}, model {index + 1}")
        seed = tensor_seed(int(self["seed"]), name, side_name(index))
        return della_sparsify(tau, d, e, bool(self["rescale"]), seed, l1=l1)


class DellaLinear(Della):
    name = "della-linear"
    summary = "DELLA's magnitude-ranked drop, then the weighted sum of task vectors"
    params = (*_DELLA_PARAMS, normalize_param(False), CONVENTIONS_PARAM)
    consensus = False
