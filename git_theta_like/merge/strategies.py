"""Merge strategies: how a tensor changed on both sides becomes one tensor.

Each strategy is a small class with its parameters declared (`Param`: type, default, range),
validated when the strategy is made (`make_strategy`), before any work starts. `merge()` works
on torch tensors that share one compute dtype (float32 or float64) and one device; the merge
base is θ₀, the pre-trained model, so the task vectors are τ_ours = ours - base and
τ_theirs = theirs - base. Formulas are in docs/merging.md; each one is tested against an
independent float64 reference (tests/test_merge_strategies.py).

This module imports torch only inside the functions that compute, so that declaring, listing
and validating strategies (CLI, config) stays cheap.
"""

from __future__ import annotations

import difflib
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from git_theta_like.errors import ThetaLikeError

if TYPE_CHECKING:
    import torch
    from torch import Tensor

Value = float | int | bool


class MergeConfigError(ThetaLikeError):
    """An unknown strategy, an unknown parameter or a bad parameter value."""


# ------------------------------------------------------------------ parameters


@dataclass(frozen=True)
class Param:
    """A declared strategy parameter: name, type, default and allowed range."""

    name: str
    kind: type  # float, int or bool
    default: Value
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # the range excludes lo
    hi_open: bool = False

    def parse(self, value: object, where: str) -> Value:
        """The value as this parameter's type, or MergeConfigError naming `where`."""
        what = f"{where}: parameter {self.name}"
        if self.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise MergeConfigError(f"{what} must be true or false, not {value!r}")
        if isinstance(value, bool):
            raise MergeConfigError(f"{what} must be a number, not {value!r}")
        try:
            if self.kind is int:
                if isinstance(value, float):
                    if not value.is_integer():
                        raise ValueError
                    out: Value = int(value)
                else:
                    out = int(str(value).strip())
            else:
                out = float(value) if isinstance(value, int | float) else float(str(value).strip())
        except ValueError:
            kind = "an integer" if self.kind is int else "a number"
            raise MergeConfigError(f"{what} must be {kind}, not {value!r}") from None
        if not math.isfinite(out):
            raise MergeConfigError(f"{what} must be finite, not {value!r}")
        self._check_range(out, what)
        return out

    def _check_range(self, v: float, what: str) -> None:
        low_bad = self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo)
        high_bad = self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi)
        if low_bad or high_bad:
            raise MergeConfigError(f"{what} must be in {self.range_text()}, not {v!r}")

    def range_text(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        left = "(" if self.lo_open or self.lo is None else "["
        right = ")" if self.hi_open or self.hi is None else "]"
        return f"{left}{lo}, {hi}{right}"


def format_value(v: Value) -> str:
    """A parameter value as recorded in manifests and shown to people (no spaces)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if not v.is_integer() else f"{v:.1f}"
    return str(v)


# ------------------------------------------------------------------ context


@dataclass
class TensorContext:
    """What a strategy may need beyond the three versions of a tensor."""

    name: str = ""  # the tensor's name: seeds DARE's masks
    fisher: tuple[torch.Tensor, torch.Tensor] | None = None  # diagonal Fisher of ours, theirs


# ------------------------------------------------------------------ strategies


class Strategy:
    """Base class. Subclasses declare `name`, `summary`, `params` and implement `merge`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    params: ClassVar[tuple[Param, ...]] = ()
    # alias -> (parameter, factor): e.g. TIES's k (percent) is density * 100
    aliases: ClassVar[dict[str, tuple[str, float]]] = {}
    selects: ClassVar[str | None] = None  # "ours"/"theirs"/"base": picks a version, no arithmetic
    needs_base: ClassVar[bool] = False  # uses the task vectors (ours - base, theirs - base)
    needs_fisher: ClassVar[bool] = False

    def __init__(self, values: Mapping[str, object] | None = None, where: str = "") -> None:
        where = where or f"strategy {self.name}"
        declared = {p.name: p for p in self.params}
        parsed: dict[str, Value] = {}
        for key, raw in (values or {}).items():
            if key in self.aliases:
                target, factor = self.aliases[key]
                num = Param(key, float, 0.0, "").parse(raw, where)
                parsed[target] = declared[target].parse(float(num) / factor, f"{where} ({key}={raw})")
                continue
            if key not in declared:
                known = sorted([*declared, *self.aliases])
                hint = f"parameters: {', '.join(known)}" if known else "it takes no parameters"
                raise MergeConfigError(f"{where}: {self.name} has no parameter {key!r} ({hint})")
            parsed[key] = declared[key].parse(raw, where)
        self.values: dict[str, Value] = {p.name: parsed.get(p.name, p.default) for p in self.params}
        self.validate(where)

    def validate(self, where: str) -> None:
        """Checks across parameters (subclasses)."""

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Strategy) and (self.name, self.values) == (other.name, other.values)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.values.items()))))

    def recipe(self) -> str:
        """Parameters as `key:value,...`, as the manifest records them (empty: none)."""
        return ",".join(f"{k}:{format_value(v)}" for k, v in self.values.items())

    def describe(self) -> str:
        args = " ".join(f"{k}={format_value(v)}" for k, v in self.values.items())
        return f"{self.name} {args}".strip()

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    def merge(
        self, base: torch.Tensor | None, ours: torch.Tensor, theirs: torch.Tensor, ctx: TensorContext
    ) -> torch.Tensor:
        raise NotImplementedError


class Ours(Strategy):
    name = "ours"
    summary = "keep our version of the tensor"
    selects = "ours"

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        return ours


class Theirs(Strategy):
    name = "theirs"
    summary = "take their version of the tensor"
    selects = "theirs"

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        return theirs


class Base(Strategy):
    name = "base"
    summary = "go back to the merge base (drop both changes)"
    selects = "base"

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        if base is None:
            raise MergeConfigError("strategy base needs the tensor in the merge base")
        return base


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


DOT_THRESHOLD = 0.9995  # |cos| above this: the vectors are (anti)parallel, slerp falls back to lerp


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


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (Average, Linear, TaskArithmetic, Ties, Dare, DareTies, Slerp, Fisher, Ours, Theirs, Base)
}
DEFAULT_STRATEGY = "average"


def strategy_class(name: str, where: str = "") -> type[Strategy]:
    cls = STRATEGIES.get(name.strip().lower())
    if cls is None:
        close = difflib.get_close_matches(name, list(STRATEGIES), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise MergeConfigError(
            f"{where + ': ' if where else ''}unknown merge strategy {name!r}{hint}; "
            f"choose one of {', '.join(STRATEGIES)}"
        )
    return cls


def make_strategy(name: str, values: Mapping[str, object] | None = None, where: str = "") -> Strategy:
    """The strategy `name` with these parameter values, validated."""
    cls = strategy_class(name, where)
    return cls(values, where or f"strategy {cls.name}")


def param_owners(key: str) -> list[type[Strategy]]:
    """Strategies that declare parameter `key` (or an alias of one)."""
    return [c for c in STRATEGIES.values() if key in {p.name for p in c.params} or key in c.aliases]


def applicable(cls: type[Strategy], values: Mapping[str, object]) -> dict[str, object]:
    """The subset of values that cls declares (overrides that apply to it)."""
    names = {p.name for p in cls.params} | set(cls.aliases)
    return {k: v for k, v in values.items() if k in names}


def check_overrides(values: Mapping[str, object], where: str) -> None:
    """Overrides without a strategy: each key must belong to some strategy, and parse there."""
    for key, value in values.items():
        owners = param_owners(key)
        if not owners:
            known = sorted({p.name for c in STRATEGIES.values() for p in c.params} | {"k"})
            raise MergeConfigError(
                f"{where}: no strategy has a parameter {key!r} (parameters: {', '.join(known)})"
            )
        for cls in owners:
            cls({key: value}, f"{where} ({cls.name})")


@dataclass
class StrategyHelp:
    name: str
    summary: str
    params: list[str] = field(default_factory=list)


def _domain(p: Param) -> str:
    if p.kind is bool:
        return " (true/false)"
    if p.kind is int:
        return " (an integer >= 0)" if p.lo == 0 else ""
    if p.lo is None and p.hi is None:
        return ""
    return f" (in {p.range_text()})"


def catalogue() -> list[StrategyHelp]:
    """Every strategy with its parameters, for `--help` and docs."""
    out = []
    for cls in STRATEGIES.values():
        ps = [f"{p.name}={format_value(p.default)}  {p.help}{_domain(p)}" for p in cls.params]
        ps += [f"{a}  the same as {t} = {a} / {f:g}" for a, (t, f) in cls.aliases.items()]
        out.append(StrategyHelp(cls.name, cls.summary, ps))
    return out
