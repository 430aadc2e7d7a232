"""Strategies that work on angles between models or task vectors: Model Stock (interpolation
toward the base by the angle of the task vectors), NuSLERP (mergekit's spherical interpolation
of two task vectors, whole, row- or column-wise), Multi-SLERP (barycentric interpolation of N on
the sphere) and the Karcher mean (the Riemannian mean of N models on the sphere)."""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies.base import ManyModels, Param, TensorContext
from git_theta_like.merge.strategies.slerp import dot64

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The tensor as vectors along its last dimension (a vector: one row)."""
    return t.reshape(1, -1) if t.dim() < 2 else t.reshape(-1, t.shape[-1])


class ModelStock(ManyModels):
    name = "model-stock"
    summary = "t * mean(models) + (1 - t) * base, t = k cos / (1 + (k-1) cos)  (Jang et al. 2024)"
    params = (
        Param(
            "filter_wise", bool, False, "one angle per row (vector along the last dimension), not per tensor"
        ),
    )
    needs_base = True
    max_models = None

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        """cos θ: the mean cosine between the task vectors, pair by pair (norms floored at
        1e-6, cosines clamped to [-1, 1]); t = 0 where 1 + (k-1) cos θ is within 1e-6 of 0."""
        import torch

        self.model_values(ctx, len(models))  # no per-model parameters
        if base is None:
            raise MergeConfigError("strategy model-stock needs the tensor in the merge base")
        k = len(models)
        taus = [m - base for m in models]
        average = functools.reduce(operator.add, models) / k
        if not self["filter_wise"]:
            norms = [math.sqrt(dot64(t, t)) for t in taus]
            cosines = [
                max(-1.0, min(1.0, dot64(taus[i], taus[j]) / max(norms[i] * norms[j], 1e-6)))
                for i in range(k)
                for j in range(i + 1, k)
            ]
            cos = sum(cosines) / len(cosines)
            den = 1 + (k - 1) * cos
            t = 0.0 if abs(den) < 1e-6 else k * cos / den
            return average * t + base * (1.0 - t)
        rows = [_rows(t).double() for t in taus]
        norms_r = [r.norm(dim=-1) for r in rows]
        cos_r = torch.stack(
            [
                ((rows[i] * rows[j]).sum(-1) / (norms_r[i] * norms_r[j]).clamp(min=1e-6)).clamp(-1, 1)
                for i in range(k)
                for j in range(i + 1, k)
            ]
        ).mean(0)
        den_r = 1 + (k - 1) * cos_r
        singular = den_r.abs() < 1e-6
        t_r = torch.where(singular, torch.zeros_like(cos_r), k * cos_r / torch.where(singular, 1.0, den_r))
        t_col = t_r.to(base.dtype).unsqueeze(-1)
        out = _rows(average) * t_col + _rows(base) * (1 - t_col)
        return out.reshape(base.shape)


def nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, flatten: bool, row_wise: bool) -> torch.Tensor:
    """sin((1-t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1 with cos θ the cosine of v0 and v1: of the
    whole tensors (`flatten`), else of each vector along the last dimension (`row_wise`: along
    the first); the linear interpolation where they are (anti)parallel (1 - cos² <= 1e-16)."""
    import torch

    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)

    def unit(x: torch.Tensor) -> torch.Tensor:
        n: torch.Tensor = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return x / n.clamp(min=1e-7)

    cos = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= 1e-16
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    sin = torch.where(colinear, torch.ones_like(theta), torch.sin(theta))
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if row_wise and not flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape)


class NuSlerp(ManyModels):
    name = "nuslerp"
    summary = "mergekit's NuSLERP: slerp of the two task vectors, t = w_theirs / (w_ours + w_theirs)"
    params = (
        Param("weight", float, 1.0, "weight of each model (set per model; t = w_2 / (w_1 + w_2))"),
        Param("nuslerp_flatten", bool, True, "one angle for the whole tensor (else per row or column)"),
        Param("nuslerp_row_wise", bool, False, "without flatten: slerp along the first dimension"),
        Param("use_base", bool, True, "slerp the task vectors around the base (false: the models)"),
    )
    needs_base = True
    per_model_params = ("weight",)

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        if len(models) != 2:
            raise MergeConfigError(f"strategy nuslerp merges two versions, not {len(models)}")
        w0, w1 = (float(v["weight"]) for v in self.model_values(ctx, 2))
        t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
        flatten, row_wise = bool(self["nuslerp_flatten"]), bool(self["nuslerp_row_wise"])
        if not self["use_base"]:
            return nuslerp(t, models[0], models[1], flatten, row_wise)
        if base is None:
            raise MergeConfigError("strategy nuslerp needs the tensor in the merge base (or use_base=false)")
        return base + nuslerp(t, models[0] - base, models[1] - base, flatten, row_wise)


class MultiSlerp(ManyModels):
    name = "multislerp"
    summary = (
        "Multi-SLERP: the N task vectors (or models) interpolated on the sphere, scaled by their mean norm"
    )
    params = (
        Param("weight", float, 1.0, "weight of each model (set per model)", option=True),
        Param("normalize_weights", bool, True, "divide the weights by their sum"),
        Param("eps", float, 1e-8, "added to norms before dividing by them", 0),
        Param("use_base", bool, True, "interpolate the task vectors around the base (false: the models)"),
    )
    needs_base = True
    max_models = None
    per_model_params = ("weight",)

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        """mergekit's multislerp, operation for operation (Goddard's Multi-SLERP): with
        α = w / Σ w (normalize_weights) and x_i the task vectors (or the models), u_i = x_i / (‖x_i‖
        + eps); μ = Σ α_i u_i / ‖Σ α_i u_i‖; the tangent τ = Σ α_i (u_i - ⟨u_i, μ⟩ μ) mapped back,
        μ cos ‖τ‖ + τ sin ‖τ‖ / ‖τ‖ (‖τ‖ + eps), times Σ α_i ‖x_i‖. Where Σ α_i u_i vanishes (antipodal
        models): two models are interpolated linearly, more are an error."""
        import torch

        weights = [float(v["weight"]) for v in self.model_values(ctx, len(models))]
        use_base = bool(self["use_base"])
        if use_base and base is None:
            raise MergeConfigError(
                "strategy multislerp needs the tensor in the merge base (or use_base=false)"
            )
        eps = float(self["eps"])
        xs = torch.stack(list(models), dim=0)
        if use_base:
            assert base is not None
            xs -= base
        flat = xs.view(xs.shape[0], -1)
        w = torch.tensor(weights, dtype=flat.dtype, device=flat.device)
        if self["normalize_weights"]:
            w = w / w.sum()
        norms = torch.norm(flat, dim=-1, keepdim=True)
        units = flat / (norms + eps)
        mean = (units * w.view(-1, 1)).sum(0)
        mean_norm = torch.norm(mean)
        if mean_norm < eps:
            if len(models) != 2:
                raise MergeConfigError(
                    "strategy multislerp: the weighted directions cancel (antipodal models whose "
                    "weights balance): give other weights"
                )
            res = (xs[0] * w[0] + xs[1] * w[1]).view(xs.shape[1:])
        else:
            mean = mean / mean_norm
            dots = (units * mean).sum(-1, keepdim=True)
            tangent = ((units - dots * mean) * w.view(-1, 1)).sum(0)
            t_norm = torch.norm(tangent) + eps
            res = mean * torch.cos(t_norm) + tangent * (torch.sin(t_norm) / t_norm)
            res = (res * (norms.squeeze(-1) * w).sum()).view(xs.shape[1:])
        return res + base if base is not None and use_base else res


class Karcher(ManyModels):
    name = "karcher"
    summary = "Karcher (Riemannian) mean of the models' directions, scaled by their mean norm"
    params = (
        Param("max_iter", int, 10, "most iterations", 1, 10_000),
        Param("tol", float, 1e-5, "stop when the tangent step is shorter than this", 0, lo_open=True),
        Param("weight", float, 1.0, "weight of each model (set per model)", 0, option=True),
    )
    max_models = None
    per_model_params = ("weight",)

    def merge_many(self, base: Tensor | None, models: Sequence[Tensor], ctx: TensorContext) -> Tensor:
        """u_i = θ_i / ‖θ_i‖; μ ← exp_μ(Σ α_i θ_i/sin θ_i (u_i - cos θ_i μ)), cos θ_i = ⟨μ, u_i⟩,
        from the normalized weighted mean of the u_i, until the step is below tol; the result is
        (Σ α_i ‖θ_i‖) μ, α_i = w_i / Σ w. Models shorter than tol are left out of μ."""
        weights = [float(v["weight"]) for v in self.model_values(ctx, len(models))]
        total = sum(weights)
        if total <= 0:
            raise MergeConfigError("strategy karcher: the model weights sum to 0")
        alphas = [w / total for w in weights]
        tol, max_iter = float(self["tol"]), int(self["max_iter"])
        norms = [math.sqrt(dot64(m, m)) for m in models]
        valid = [i for i, n in enumerate(norms) if n > tol and alphas[i] > 0]
        if not valid:
            return models[0] * 0.0
        units = {i: models[i] / norms[i] for i in valid}
        a_sum = sum(alphas[i] for i in valid)
        a = {i: alphas[i] / a_sum for i in valid}
        mean = sum((units[i] * a[i] for i in valid[1:]), units[valid[0]] * a[valid[0]])
        mean_norm = math.sqrt(dot64(mean, mean))
        mean = units[valid[0]].clone() if mean_norm < tol else mean / mean_norm
        for _ in range(max_iter):
            tangent = mean * 0.0
            for i in valid:
                dot = max(-1.0, min(1.0, dot64(mean, units[i])))
                theta = math.acos(dot)
                if theta < tol:
                    continue
                tangent = tangent + (units[i] - mean * dot) * (a[i] * theta / math.sin(theta))
            step = math.sqrt(dot64(tangent, tangent))
            if step < tol:
                break
            mean = mean * math.cos(step) + tangent * (math.sin(step) / step)
            norm = math.sqrt(dot64(mean, mean))
            if norm > tol:
                mean = mean / norm
        return mean * sum(alpha * n for alpha, n in zip(alphas, norms, strict=True))
