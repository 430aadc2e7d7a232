"""SLERP: spherical interpolation of the two task vectors (lerp when they are parallel)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from git_theta_like.merge.strategies.base import Param, Strategy, TensorContext

DOT_THRESHOLD = 0.9995  # |cos| above this: the vectors are (anti)parallel, slerp falls back to lerp

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def dot64(a: torch.Tensor, b: torch.Tensor, chunk: int = 1 << 22) -> float:
    """sum(a * b) accumulated in float64, chunk by chunk (no float64 copy of the tensors)."""
    import torch

    fa, fb = a.reshape(-1), b.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for s in range(0, fa.numel(), chunk):
        total += torch.dot(fa[s : s + chunk].double(), fb[s : s + chunk].double())
    return float(total)


class Slerp(Strategy):
    name = "slerp"
    summary = "spherical interpolation between ours (t=0) and theirs (t=1)"
    params = (Param("t", float, 0.5, "interpolation factor: 0 is ours, 1 is theirs", 0, 1),)

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        t = float(self["t"])
        na, nb = math.sqrt(dot64(ours, ours)), math.sqrt(dot64(theirs, theirs))
        cos = dot64(ours, theirs) / (na * nb) if na > 0 and nb > 0 else 1.0
        if abs(cos) > DOT_THRESHOLD:
            return ours * (1.0 - t) + theirs * t
        omega = math.acos(max(-1.0, min(1.0, cos)))
        s = math.sin(omega)
        return ours * (math.sin((1.0 - t) * omega) / s) + theirs * (math.sin(t * omega) / s)
