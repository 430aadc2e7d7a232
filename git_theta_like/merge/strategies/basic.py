"""Strategies that pick or interpolate: ours, theirs, base, average, linear (weighted)."""

from __future__ import annotations

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
    summary = "element-wise mean (ours + theirs) / 2"

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        return (ours + theirs) * 0.5


class Linear(Strategy):
    name = "linear"
    summary = "weighted average (w_o ours + w_t theirs) / (w_o + w_t)"
    params = (
        Param("ours", float, 0.5, "weight of our version"),
        Param("theirs", float, 0.5, "weight of their version"),
        Param("normalize", bool, True, "divide by the sum of the weights"),
    )

    def validate(self, where: str) -> None:
        if self["normalize"] and self["ours"] + self["theirs"] == 0:
            raise MergeConfigError(f"{where}: linear weights sum to 0 and normalize is true")

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        wo, wt = float(self["ours"]), float(self["theirs"])
        if self["normalize"]:
            s = wo + wt
            wo, wt = wo / s, wt / s
        return ours * wo + theirs * wt
