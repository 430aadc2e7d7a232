"""Fisher-weighted averaging, with the Fisher tensors committed next to each checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies.base import Param, Strategy, TensorContext

if TYPE_CHECKING:
    from torch import Tensor


class Fisher(Strategy):
    name = "fisher"
    summary = "Fisher-weighted average with diagonal Fisher tensors  (Matena & Raffel 2022)"
    params = (
        Param("ours", float, 1.0, "model weight of our version", 0),
        Param("theirs", float, 1.0, "model weight of their version", 0),
        Param("floor", float, 1e-6, "Fisher values are raised to at least this", 0, lo_open=True),
    )
    needs_fisher = True

    def validate(self, where: str) -> None:
        if self["ours"] + self["theirs"] == 0:
            raise MergeConfigError(f"{where}: fisher weights ours and theirs are both 0")

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        if ctx.fisher is None:
            raise MergeConfigError(f"tensor {ctx.name!r}: fisher needs the Fisher tensors of both sides")
        floor = float(self["floor"])
        f_o = ctx.fisher[0].clamp(min=floor) * float(self["ours"])
        f_t = ctx.fisher[1].clamp(min=floor) * float(self["theirs"])
        return (f_o * ours + f_t * theirs) / (f_o + f_t)
