"""What every strategy is made of: declared parameters (`Param`: type, default, range), the
per-tensor context, and the `Strategy` base class. Imports torch only for type checking."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from git_theta_like.dtypes import Buffer
from git_theta_like.errors import MergeConfigError

# An element-wise strategy (and patch, on bits) merges a larger tensor this many elements at a
# time: inputs in the compute dtype, intermediates and masks then take a few blocks of memory
# (1 MiB each in float32) rather than a few copies of the tensor, on the CPU as on a GPU. TIES's
# combine holds some 10 blocks at once: 1 << 20 put 40 MiB on the merge driver's peak where
# 1 << 18 puts 10 (a BERT-base TIES merge: 601 -> 560 MiB, in the same time).
BLOCK_ELEMENTS = 1 << 18

# What a merge may compute in (`theta-like.merge.precision`, `--precision`, a mergekit config's
# `dtype`): float32 (the default; float64 for F64 tensors), float64, or a 16-bit float as mergekit
# computes with `dtype: bfloat16` (each operation rounded to it, then cast back to the stored dtype)
PRECISIONS = ("float32", "float64", "bfloat16", "float16")

Value = float | int | bool | str
# (lo, hi) -> elements lo..hi of a merged tensor, flat, in the compute dtype (Strategy.prepare_many)
Blocks = Callable[[int, int], "torch.Tensor"]

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Param:
    """A declared strategy parameter: name, type, default and allowed range (or, for a `str`
    parameter, its choices). An `option` is a refinement with a default that keeps the method
    as it was (a per-model weight, mergekit's conventions, ...): recipes show it only when it is
    set to something else, and error messages list it apart from the method's parameters."""

    name: str
    kind: type  # float, int, bool or str (one of `choices`)
    default: Value
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # the range excludes lo
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    option: bool = False

    def parse(self, value: object, where: str) -> Value:
        """The value as this parameter's type, or MergeConfigError naming `where`."""
        what = f"{where}: parameter {self.name}"
        if self.kind is str:
            text = str(value).strip().lower() if isinstance(value, str) else None
            if text not in self.choices:
                raise MergeConfigError(f"{what} must be one of {', '.join(self.choices)}, not {value!r}")
            return text
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
                    out: float | int = int(value)
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


@dataclass
class TensorContext:
    """What a strategy may need beyond the three versions of a tensor."""

    name: str = ""  # the tensor's name: seeds DARE's masks
    fisher: tuple[torch.Tensor, torch.Tensor] | None = None  # diagonal Fisher of ours, theirs
    # N-way merges: per model (in the order of `models`), that model's values of the strategy's
    # `per_model_params` (e.g. {"weight": 0.7, "density": 0.3}); missing keys take the strategy's
    # value. Empty: every model uses the strategy's values.
    per_model: Sequence[Mapping[str, Value]] = field(default_factory=tuple)


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
    # computes on the tensors' bits in numpy (merge_bits) rather than on torch tensors (merge)
    bitwise: ClassVar[bool] = False
    # each element of the result depends only on the same element of the inputs (no norms,
    # top-k, random masks or shapes): the merge may run on blocks of a tensor, the same bits
    elementwise: ClassVar[bool] = False
    # how many models (besides the base) merge_many takes: 2 for a strategy that only has the
    # three-way `merge`, None for any number
    max_models: ClassVar[int | None] = 2
    # parameters a configuration may set per model (weights = {ours = 0.7, feature/x = 0.3})
    per_model_params: ClassVar[tuple[str, ...]] = ()

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
                known = sorted([*(p.name for p in self.params if not p.option), *self.aliases])
                options = sorted(p.name for p in self.params if p.option)
                hint = f"parameters: {', '.join(known)}" if known else "it takes no parameters"
                more = f"; options: {', '.join(options)}" if options else ""
                raise MergeConfigError(f"{where}: {self.name} has no parameter {key!r} ({hint}){more}")
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

    def recorded(self) -> list[tuple[str, Value]]:
        """The values a recipe shows: every parameter, and each option set away from its default."""
        return [
            (p.name, self.values[p.name])
            for p in self.params
            if not p.option or self.values[p.name] != p.default
        ]

    def recipe(self) -> str:
        """Parameters as `key:value,...`, as the manifest records them (empty: none)."""
        return ",".join(f"{k}:{format_value(v)}" for k, v in self.recorded())

    def describe(self) -> str:
        args = " ".join(f"{k}={format_value(v)}" for k, v in self.recorded())
        return f"{self.name} {args}".strip()

    def __repr__(self) -> str:
        return f"<{self.describe()}>"

    def merge(
        self, base: torch.Tensor | None, ours: torch.Tensor, theirs: torch.Tensor, ctx: TensorContext
    ) -> torch.Tensor:
        raise NotImplementedError

    def merge_many(
        self, base: torch.Tensor | None, models: Sequence[torch.Tensor], ctx: TensorContext
    ) -> torch.Tensor:
        """Merge N >= 2 models (octopus merges; models[0] is ours). Strategies that generalize to
        N task vectors override this; the default is the three-way `merge` for two models."""
        if len(models) == 2 and not any(ctx.per_model):
            return self.merge(base, models[0], models[1], ctx)
        if len(models) != 2:
            raise MergeConfigError(f"strategy {self.name} merges two versions, not {len(models)}")
        raise MergeConfigError(f"strategy {self.name} takes no per-model parameters")

    def prepare_many(
        self, base: torch.Tensor | None, models: Sequence[torch.Tensor], ctx: TensorContext
    ) -> Blocks | None:
        """For a strategy that decides on whole tensors (a threshold, a mask) and then works entry
        by entry: do the deciding, and return (lo, hi) -> elements lo..hi of the merged tensor,
        flat, in the compute dtype (the merge then runs in blocks, the same bits as merge_many).
        None (the default): merge_many merges whole tensors."""
        return None

    def model_values(self, ctx: TensorContext, n: int) -> list[dict[str, Value]]:
        """For each of the n models, its values of `per_model_params`: ctx.per_model's, parsed
        and range-checked here (nothing there is trusted), else the strategy's own."""
        if ctx.per_model and len(ctx.per_model) != n:
            raise MergeConfigError(
                f"strategy {self.name}: {len(ctx.per_model)} sets of per-model parameters for {n} models"
            )
        declared = {p.name: p for p in self.params}
        out = []
        for i in range(n):
            given = ctx.per_model[i] if ctx.per_model else {}
            vals: dict[str, Value] = {k: self.values[k] for k in self.per_model_params}
            for key, raw in given.items():
                if key not in self.per_model_params:
                    allowed = ", ".join(self.per_model_params) or "none"
                    raise MergeConfigError(
                        f"strategy {self.name}: {key!r} cannot be set per model "
                        f"(per-model parameters: {allowed})"
                    )
                vals[key] = declared[key].parse(raw, f"strategy {self.name}, model {i + 1}")
            out.append(vals)
        return out

    def merge_bits(self, base: Buffer, ours: Buffer, theirs: Buffer, dtype: str, name: str = "") -> Buffer:
        """The merged raw bytes, for `bitwise` strategies."""
        raise NotImplementedError


class ManyModels(Strategy):
    """A strategy written as merge_many (any number of models, or two with per-model values):
    its three-way merge is merge_many of [ours, theirs]. Subclasses override merge_many."""

    def merge(
        self, base: torch.Tensor | None, ours: torch.Tensor, theirs: torch.Tensor, ctx: TensorContext
    ) -> torch.Tensor:
        return self.merge_many(base, [ours, theirs], ctx)
