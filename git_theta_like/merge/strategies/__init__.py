"""Merge strategies: how a tensor changed on both sides becomes one tensor.

Each strategy is a small class with its parameters declared (`Param`: type, default, range),
validated when the strategy is made (`make_strategy`), before any work starts. `merge()` works
on torch tensors that share one compute dtype (base.PRECISIONS) and one device; the merge
base is θ₀, the pre-trained model, so the task vectors are τ_ours = ours - base and
τ_theirs = theirs - base. Formulas are in docs/merging.md; each one is tested against an
independent float64 reference (tests/test_merge_strategies.py).

The strategies live one family per module (basic; task_vectors: the generalized task-vector
method and its configurations task-arithmetic, ties, dare, dare-ties, breadcrumbs, della, ...;
slerp; geometric: model-stock, nuslerp, multislerp, karcher; sce; fisher; patch; the base class in base.py);
this package is their registry. `merge_many` merges N models where a strategy's `max_models`
allows it (None: any number). They import torch only inside the functions that
compute, so that declaring, listing and validating strategies (CLI, config) stays cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies.base import Param, Strategy, Value, format_value
from git_theta_like.merge.strategies.basic import Average, Base, Linear, Ours, Theirs
from git_theta_like.merge.strategies.fisher import Fisher
from git_theta_like.merge.strategies.geometric import Karcher, ModelStock, MultiSlerp, NuSlerp
from git_theta_like.merge.strategies.patch import Patch
from git_theta_like.merge.strategies.sce import Sce
from git_theta_like.merge.strategies.slerp import Slerp
from git_theta_like.merge.strategies.task_vectors import (
    Breadcrumbs,
    BreadcrumbsTies,
    Dare,
    DareTies,
    Della,
    DellaLinear,
    TaskArithmetic,
    Ties,
)

# ------------------------------------------------------------------ parameters


# ------------------------------------------------------------------ context


# ------------------------------------------------------------------ strategies


# The one registry of strategies: name -> class.
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        Average,
        Linear,
        TaskArithmetic,
        Ties,
        Dare,
        DareTies,
        Breadcrumbs,
        BreadcrumbsTies,
        Della,
        DellaLinear,
        Sce,
        ModelStock,
        Slerp,
        NuSlerp,
        MultiSlerp,
        Karcher,
        Fisher,
        Patch,
        Ours,
        Theirs,
        Base,
    )
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
            parse_value(cls, key, value, f"{where} ({cls.name})")


def parse_value(cls: type[Strategy], key: str, value: object, where: str) -> Value:
    """One parameter's value as `cls` declares it (an alias: its target's value), without the
    checks across parameters (those need the strategy's other values)."""
    declared = {p.name: p for p in cls.params}
    if key in cls.aliases:
        target, factor = cls.aliases[key]
        num = Param(key, float, 0.0, "").parse(value, where)
        return declared[target].parse(float(num) / factor, f"{where} ({key}={value})")
    if key not in declared:
        raise MergeConfigError(f"{where}: {cls.name} has no parameter {key!r}")
    return declared[key].parse(value, where)


@dataclass
class StrategyHelp:
    name: str
    summary: str
    params: list[str] = field(default_factory=list)


def _domain(p: Param) -> str:
    if p.kind is bool:
        return " (true/false)"
    if p.kind is str:
        return f" (one of {', '.join(p.choices)})"
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
