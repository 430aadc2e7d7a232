"""Task-vector strategies (τ = side - base): task arithmetic, TIES (trim, elect sign,
disjoint merge), DARE (drop and rescale) and DARE-TIES."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from git_theta_like.merge.strategies.base import Param, Strategy, TensorContext

if TYPE_CHECKING:
    import torch
    from torch import Tensor


class TaskArithmetic(Strategy):
    name = "task-arithmetic"
    summary = "base + lambda * (tau_ours + tau_theirs)  (Ilharco et al. 2023)"
    params = (Param("lambda", float, 1.0, "scale of the summed task vectors"),)
    needs_base = True

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        assert base is not None
        return base + ((ours - base) + (theirs - base)) * float(self["lambda"])


def trim_top_k(tau: torch.Tensor, density: float) -> torch.Tensor:
    """TIES's trim: keep the round(density * n) entries of largest magnitude (at least one),
    zero the rest. Entries tied with the smallest kept magnitude are kept too."""
    import torch

    n = tau.numel()
    if density >= 1.0 or n == 0:
        return tau
    k = max(1, round(density * n))
    mag = tau.abs().reshape(-1)
    threshold = torch.kthvalue(mag.cpu() if mag.device.type == "mps" else mag, n - k + 1).values
    return torch.where(
        tau.abs() >= threshold.to(tau.device), tau, torch.zeros((), dtype=tau.dtype, device=tau.device)
    )


def disjoint_merge(taus: list[torch.Tensor]) -> torch.Tensor:
    """TIES's elect + disjoint mean: the sign with the larger total mass wins (sign of the sum),
    then the mean over the task vectors that agree with it (zero where none does)."""
    import torch

    total = taus[0] + taus[1] if len(taus) == 2 else torch.stack(taus).sum(0)
    sign = torch.sign(total)
    agree_sum = torch.zeros_like(total)
    count = torch.zeros_like(total)
    for tau in taus:
        agree = (torch.sign(tau) == sign) & (tau != 0)
        agree_sum += torch.where(agree, tau, torch.zeros((), dtype=tau.dtype, device=tau.device))
        count += agree
    return agree_sum / count.clamp(min=1)


class Ties(Strategy):
    name = "ties"
    summary = "trim, elect sign, disjoint mean of task vectors  (Yadav et al. 2023)"
    params = (
        Param(
            "density",
            float,
            0.2,
            "fraction of each task vector kept (largest magnitudes)",
            0,
            1,
            lo_open=True,
        ),
        Param("lambda", float, 1.0, "scale of the merged task vector"),
    )
    aliases = {"k": ("density", 100.0)}  # k: the paper's top-k%, in percent
    needs_base = True

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        assert base is not None
        d = float(self["density"])
        taus = [trim_top_k(ours - base, d), trim_top_k(theirs - base, d)]
        return base + disjoint_merge(taus) * float(self["lambda"])


def tensor_seed(seed: int, name: str, side: str) -> int:
    """A 63-bit seed for one tensor of one side: the same on every machine and device."""
    digest = hashlib.sha256(f"{seed}\0{name}\0{side}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def dare_mask(shape: tuple[int, ...] | torch.Size, drop: float, seed: int) -> torch.Tensor:
    """Keep-mask of DARE: each entry kept with probability 1 - drop. Drawn on the CPU generator,
    so a seed gives the same mask on any device."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return torch.rand(tuple(shape), generator=g, dtype=torch.float32) >= drop


def dare_sparsify(tau: torch.Tensor, drop: float, rescale: bool, seed: int) -> torch.Tensor:
    """Drop each entry with probability `drop`, rescale the rest by 1 / (1 - drop)."""
    import torch

    if drop == 0.0:
        return tau
    keep = dare_mask(tau.shape, drop, seed).to(tau.device)
    out = torch.where(keep, tau, torch.zeros((), dtype=tau.dtype, device=tau.device))
    return out * (1.0 / (1.0 - drop)) if rescale else out


_DARE_PARAMS = (
    Param("drop", float, 0.5, "probability of dropping each task-vector entry", 0, 1, hi_open=True),
    Param("rescale", bool, True, "rescale kept entries by 1 / (1 - drop)"),
    Param("seed", int, 0, "random seed: the same seed gives the same merge", 0, 2**63 - 1),
    Param("lambda", float, 1.0, "scale of the merged task vector"),
)


class Dare(Strategy):
    name = "dare"
    summary = "drop and rescale task vectors, then add them  (Yu et al. 2024)"
    params = _DARE_PARAMS
    needs_base = True

    def sparse_taus(self, base: Tensor, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> list[Tensor]:
        p, rescale, seed = float(self["drop"]), bool(self["rescale"]), int(self["seed"])
        return [
            dare_sparsify(ours - base, p, rescale, tensor_seed(seed, ctx.name, "ours")),
            dare_sparsify(theirs - base, p, rescale, tensor_seed(seed, ctx.name, "theirs")),
        ]

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        assert base is not None
        t_o, t_t = self.sparse_taus(base, ours, theirs, ctx)
        return base + (t_o + t_t) * float(self["lambda"])


class DareTies(Dare):
    name = "dare-ties"
    summary = "DARE's drop and rescale, then TIES's sign election and disjoint mean"

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        assert base is not None
        return base + disjoint_merge(self.sparse_taus(base, ours, theirs, ctx)) * float(self["lambda"])
