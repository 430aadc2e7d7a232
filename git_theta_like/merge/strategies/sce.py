"""SCE (FuseChat, Wan et al. 2024): select the task-vector entries that vary most across the
models, calculate each model's weight from its task vector's energy, erase the entries whose sign
disagrees with the elected one, then the weighted mean. mergekit's `sce`, formula for formula."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies.base import ManyModels, Param, TensorContext

if TYPE_CHECKING:
    from torch import Tensor


class Sce(ManyModels):
    name = "sce"
    summary = "select by variance, calculate weights, erase minority signs  (Wan et al. 2024)"
    params = (
        Param(
            "select_topk",
            float,
            1.0,
            "fraction of entries kept: those whose task vectors vary most across models",
            0,
            1,
        ),
    )
    needs_base = True
    max_models = None

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        """S: keep the k = int(select_topk · #{var ≠ 0}) entries of largest variance Var_i(τ_i)
        (population variance; select_topk = 1 keeps all); C: w_i = mean(τ_i²) / Σ_j mean(τ_j²)
        (1/N when Σ < 1e-6); E: γ = + where Σ τ_i >= 0, else -; θ = θ₀ + Σ_i w_i m_i τ_i /
        max(Σ_i w_i m_i, 1e-6), m_i = [sgn τ_i = γ]."""
        import torch

        self.model_values(ctx, len(models))  # no per-model parameters
        if base is None:
            raise MergeConfigError("strategy sce needs the tensor in the merge base")
        tvs = torch.stack([m - base for m in models])
        topk = float(self["select_topk"])
        if topk < 1:
            var = torch.var(tvs, dim=0, unbiased=False)
            k = int(int(torch.count_nonzero(var)) * topk)
            mask = torch.zeros_like(var)
            if k > 0:
                mask.view(-1)[torch.topk(var.abs().reshape(-1), k=k, largest=True).indices] = 1
            tvs = tvs * mask.unsqueeze(0)
        majority = (tvs.sum(dim=0) >= 0).to(tvs.dtype) * 2 - 1
        erase = tvs.sign() == majority
        energy = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1).double()
        total = float(energy.sum())
        w = (torch.full_like(energy, 1.0 / len(models)) if abs(total) < 1e-6 else energy / total).to(
            tvs.dtype
        )
        w = w.reshape(-1, *([1] * (tvs.dim() - 1)))
        ew = w * erase
        return base + (tvs * ew).sum(dim=0) / ew.sum(dim=0).clamp(min=1e-6)
