"""Strategies that pick or interpolate: ours, theirs, base, average, linear (weighted)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies.base import Param, Strategy, TensorContext

if TYPE_CHECKING:
    from torch import Tensor


def _selecting(version: str, text: str) -> type[Strategy]:
    """The strategy named for one version of the tensor ("ours", "theirs" or "base") that picks
    that version as it is: no arithmetic, any dtype."""

    class Select(Strategy):
        name = version
        summary = text
        selects = version

        def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
            picked = {"ours": ours, "theirs": theirs, "base": base}[version]
            if picked is None:
                raise MergeConfigError(f"strategy {version} needs the tensor in the merge base")
            return picked

    Select.__name__ = Select.__qualname__ = version.title()
    return Select


Ours = _selecting("ours", "keep our version of the tensor")
Theirs = _selecting("theirs", "take their version of the tensor")
Base = _selecting("base", "go back to the merge base (drop both changes)")


class Average(Strategy):
    name = "average"
    elementwise = True
    summary = "element-wise mean (ours + theirs) / 2; of N models, sum / N"
    max_models = None

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        return (ours + theirs) * 0.5

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        self.model_values(ctx, len(models))  # average takes no per-model parameters
        if len(models) == 2:
            return self.merge(base, models[0], models[1], ctx)
        return functools.reduce(operator.add, models) / len(models)


class Linear(Strategy):
    name = "linear"
    elementwise = True
    summary = "weighted average (w_o ours + w_t theirs) / (w_o + w_t)"
    params = (
        Param("ours", float, 0.5, "weight of our version"),
        Param("theirs", float, 0.5, "weight of their version"),
        Param("normalize", bool, True, "divide by the sum of the weights"),
        Param("weight", float, 1.0, "N-way merges: weight of each model (set per model)", option=True),
        Param(
            "conventions",
            str,
            "paper",
            "paper, or mergekit: mergekit's operations (Σ w_i θ_i accumulated from 0, then / Σ w_i)",
            choices=("paper", "mergekit"),
            option=True,
        ),
    )
    max_models = None
    per_model_params = ("weight",)

    def validate(self, where: str) -> None:
        if self["normalize"] and self["ours"] + self["theirs"] == 0:
            raise MergeConfigError(f"{where}: linear weights sum to 0 and normalize is true")

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        wo, wt = float(self["ours"]), float(self["theirs"])
        if self["conventions"] == "mergekit":
            return self._mergekit([ours, theirs], [wo, wt])
        if self["normalize"]:
            s = wo + wt
            wo, wt = wo / s, wt / s
        return ours * wo + theirs * wt

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        """Σ w_i θ_i (/ Σ w_i with normalize), w_i the per-model weights (ours/theirs are the
        two-model merge's weights)."""
        if len(models) == 2 and not any(ctx.per_model):
            return self.merge(base, models[0], models[1], ctx)
        weights = [float(v["weight"]) for v in self.model_values(ctx, len(models))]
        if self["normalize"] and sum(weights) == 0:
            raise MergeConfigError("strategy linear: weights sum to 0 and normalize is true")
        if self["conventions"] == "mergekit":
            return self._mergekit(models, weights)
        if self["normalize"]:
            total = sum(weights)
            weights = [w / total for w in weights]
        return functools.reduce(operator.add, [m * w for m, w in zip(models, weights, strict=True)])

    def _mergekit(self, models: Sequence[Tensor], weights: list[float]) -> Tensor:
        """mergekit's linear_merge, operation for operation: the weights a tensor of the compute
        dtype, each w_i θ_i added into zeros with addcmul_, then divided by their sum (the same
        bits as mergekit, where w_o θ_o + w_t θ_t with normalized weights differs in the last
        bit for most weights that are not powers of two)."""
        import torch

        first = models[0]
        w = torch.tensor(weights, dtype=first.dtype, device=first.device)
        result = torch.zeros_like(first)
        for m, c in zip(models, w.unbind(0), strict=True):
            result.addcmul_(m, c)
        if self["normalize"]:
            result.div_(w.sum(dim=0))
        return result
