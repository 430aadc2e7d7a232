"""mergekit merge configurations (YAML) as git-theta-like recipes, and back.

`load_recipe(text, where)` parses a mergekit config (`merge_method`, `base_model`,
`models: [{model, parameters}]`, top-level `parameters`, `dtype`, `out_dtype`) into a neutral,
validated `Recipe`: the method's name in our registry, the parameters as written (scalars, layer
gradients, `filter` conditions), per model, and the values that make our strategy compute what
mergekit computes (mergekit's defaults where ours differ, `conventions = "mergekit"`).
`to_yaml(recipe)` writes it back as a mergekit config. What we do not support (slices, modules,
passthrough, tokenizer settings, LoRA model references, an out_dtype other than the dtype,
methods without a counterpart here) is a MergeConfigError that names it; nothing is half-parsed.

Parameter names are mergekit's (ours are the same where they mean the same). A setting is a
scalar; a list of numbers, a gradient over the layers (mergekit interpolates it at the layer's
relative depth t in [0, 1]); or a list of `{filter, value}` conditions (the first whose filter is
a substring of the tensor name, or absent / "*", applies). `Recipe.strategy(tensor, t)` and
`Recipe.per_model(tensor, t)` resolve them for one tensor, as mergekit does.

The text is parsed with `yaml.safe_load` only (PyYAML), after bounding its size; the parsed
structure is walked with a bounded budget (YAML aliases cannot make it large).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies import make_strategy, parse_value, strategy_class
from git_theta_like.merge.strategies.base import Strategy, Value, format_value
from git_theta_like.merge.strategies.task_vectors import check_della

MAX_TEXT = 1 << 20  # bytes of YAML
MAX_ITEMS = 20_000  # scalars, lists and mappings walked in one config
MAX_MODELS = 1024

Scalar = float | int | bool | str


@dataclass(frozen=True)
class Gradient:
    """A list of numbers: the value at relative layer depth t interpolates linearly between
    them (mergekit's gradients)."""

    values: tuple[float, ...]


@dataclass(frozen=True)
class Conditional:
    """`{filter: "self_attn", value: ...}`: applies to tensors whose name contains filter
    (None or "*": every tensor)."""

    filter: str | None
    value: Scalar | Gradient


Setting = Scalar | Gradient | tuple[Conditional, ...]


@dataclass(frozen=True)
class MethodSpec:
    """How a mergekit method maps onto one of our strategies."""

    ours: str
    implied: Mapping[str, Value] = field(default_factory=dict)  # mergekit's defaults, conventions
    note: str = ""


_GTA = {"conventions": "mergekit"}
METHODS: dict[str, MethodSpec] = {
    "linear": MethodSpec("linear", {**_GTA, "normalize": True}),
    "task_arithmetic": MethodSpec("task-arithmetic", {**_GTA, "normalize": False}),
    "ties": MethodSpec("ties", {**_GTA, "density": 1.0, "normalize": True, "rescale": False}),
    "dare_linear": MethodSpec("dare", {**_GTA, "density": 1.0, "normalize": False, "rescale": True}),
    "dare_ties": MethodSpec("dare-ties", {**_GTA, "density": 1.0, "normalize": False, "rescale": True}),
    "breadcrumbs": MethodSpec(
        "breadcrumbs", {**_GTA, "density": 1.0, "gamma": 0.01, "normalize": False, "rescale": False}
    ),
    "breadcrumbs_ties": MethodSpec(
        "breadcrumbs-ties", {**_GTA, "density": 1.0, "gamma": 0.01, "normalize": False, "rescale": False}
    ),
    "della": MethodSpec(
        "della", {**_GTA, "density": 1.0, "epsilon": 0.15, "normalize": True, "rescale": True}
    ),
    "della_linear": MethodSpec(
        "della-linear", {**_GTA, "density": 1.0, "epsilon": 0.15, "normalize": False, "rescale": True}
    ),
    "sce": MethodSpec("sce", {"select_topk": 1.0}),
    "model_stock": MethodSpec("model-stock", {"filter_wise": False}),
    "nuslerp": MethodSpec("nuslerp", {"nuslerp_flatten": True, "nuslerp_row_wise": False}),
    "karcher": MethodSpec("karcher", {"max_iter": 10, "tol": 1e-5}),
    "multislerp": MethodSpec("multislerp", {"normalize_weights": True, "eps": 1e-8}),
    "slerp": MethodSpec("slerp", {}, "base_model is the t = 0 end (ours), the other model t = 1 (theirs)"),
}
UNSUPPORTED_METHODS = {
    "passthrough": "it assembles layers from models (slices), it does not merge tensors",
    "nearswap": "not implemented here",
    "ram": "not implemented here",
    "ramplus_tl": "not implemented here",
    "arcee_fusion": "not implemented here",
}
# mergekit parameters that do not change the result (memory only): accepted, not kept
NO_EFFECT = {"int8_mask"}
# our parameters a mergekit config does not set: implied by the method, or spelled mergekit's way
OURS_ONLY = {
    "conventions": "implied: a mergekit config is computed with mergekit's conventions",
    "drop": "use density (the keep probability, 1 - drop)",
    "k": "use density (k / 100)",
    "use_base": "implied by base_model being given or not",
}
DTYPES = ("float32", "float64", "float16", "bfloat16")
# mergekit methods that compute in float32 (float64 for float64 tensors) whatever the dtype
FLOAT32_METHODS = {"linear", "slerp"}
# our strategies that mergekit runs with or without a base_model (use_base: without one, it
# interpolates the models themselves)
BASE_OPTIONAL = ("nuslerp", "multislerp")
_TOP_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype")
_NOT_SUPPORTED_KEYS = {
    "slices": "slices (layer ranges from several models) are not supported: merge whole models",
    "modules": "modules are not supported: merge whole models",
    "tokenizer_source": "tokenizer settings are not supported: git-theta-like merges checkpoint tensors",
    "tokenizer": "tokenizer settings are not supported: git-theta-like merges checkpoint tensors",
    "chat_template": "chat templates are not supported: git-theta-like merges checkpoint tensors",
}


@dataclass(frozen=True)
class ModelSpec:
    """One model of the merge (not the base) and its own parameter settings."""

    model: str
    params: Mapping[str, Setting] = field(default_factory=dict)


@dataclass(frozen=True)
class Recipe:
    """A validated merge recipe: what a mergekit config says, in our terms."""

    method: str  # our strategy's name
    mergekit_method: str
    models: tuple[ModelSpec, ...]
    base_model: str | None = None
    params: Mapping[str, Setting] = field(default_factory=dict)  # top-level parameters
    implied: Mapping[str, Value] = field(default_factory=dict)  # so that we compute as mergekit does
    dtype: str | None = None  # mergekit's compute dtype: our precision (base.PRECISIONS)
    out_dtype: str | None = None
    where: str = "recipe"

    @property
    def precision(self) -> str:
        """Our compute precision for this recipe: mergekit's dtype (float32 when unset), except
        that mergekit's linear and slerp compute in float32 whatever a 16-bit dtype says (dtype
        only rounds their inputs and result), and so do we."""
        if self.dtype in ("bfloat16", "float16") and self.mergekit_method in FLOAT32_METHODS:
            return "float32"
        return self.dtype or "float32"

    def strategy(self, tensor: str = "", t: float = 0.0) -> Strategy:
        """The strategy for one tensor (t: its layer's relative depth, for gradients)."""
        values: dict[str, object] = dict(self.implied)
        for key, setting in self.params.items():
            v = evaluate(setting, tensor, t)
            if v is not None:
                values[key] = v
        return make_strategy(self.method, values, self.where)

    def per_model(self, tensor: str = "", t: float = 0.0) -> list[dict[str, Value]]:
        """Per model (in order), its own values for one tensor (the rest: the strategy's)."""
        out = []
        for spec in self.models:
            vals: dict[str, Value] = {}
            for key, setting in spec.params.items():
                v = evaluate(setting, tensor, t)
                if v is not None:
                    vals[key] = v
            out.append(vals)
        return out

    def resolved(self, tensor: str) -> tuple[dict[str, object], list[dict[str, object]]]:
        """The recipe for one tensor in the form of a `.theta-like.toml` rule, `{filter, value}`
        conditions decided by the tensor's name: the strategy's values (implied ones included)
        and, per model (in order), its own; a gradient is a list of numbers (evaluated over the
        layers by the merge configuration, as for a rule)."""
        plain: dict[str, object] = dict(self.implied)
        for key, setting in self.params.items():
            v = by_filter(setting, tensor)
            if v is not None:
                plain[key] = list(v.values) if isinstance(v, Gradient) else v
        per: list[dict[str, object]] = []
        for spec in self.models:
            vals: dict[str, object] = {}
            for key, setting in spec.params.items():
                v = by_filter(setting, tensor)
                if v is not None:
                    vals[key] = list(v.values) if isinstance(v, Gradient) else v
            per.append(vals)
        return plain, per


def by_filter(setting: Setting, tensor: str) -> Scalar | Gradient | None:
    """A setting with its `{filter, value}` conditions decided for one tensor name (None: no
    condition applies)."""
    if isinstance(setting, tuple):
        for cond in setting:
            if cond.filter is None or cond.filter == "*" or (tensor and cond.filter in tensor):
                return cond.value
        return None
    return setting


def evaluate(setting: Setting, tensor: str, t: float) -> Value | None:
    """A setting's value for one tensor at relative layer depth t, as mergekit evaluates it
    (None: no condition applies)."""
    value = by_filter(setting, tensor)
    if value is None:
        return None
    if isinstance(value, Gradient):
        vals = value.values
        scaled = t * (len(vals) - 1)
        i0 = int(scaled)
        i1 = min(len(vals) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * vals[i0] + frac * vals[i1]
    return value


# ------------------------------------------------------------------ parsing


class _Budget:
    def __init__(self, where: str) -> None:
        self.left = MAX_ITEMS
        self.where = where

    def spend(self, n: int = 1) -> None:
        self.left -= n
        if self.left < 0:
            raise MergeConfigError(f"{self.where}: the config is too large (more than {MAX_ITEMS} items)")


def load_recipe(text: str | bytes, where: str = "mergekit config") -> Recipe:
    """Parse and validate a mergekit YAML merge config (see the module's docstring).

    `where` names the config in error messages (a file name). Raises MergeConfigError."""
    import yaml  # PyYAML; types-PyYAML is not a dependency

    if isinstance(text, bytes):
        if len(text) > MAX_TEXT:
            raise MergeConfigError(f"{where}: larger than {MAX_TEXT} bytes; not a merge config")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MergeConfigError(f"{where}: not UTF-8 text ({e})") from None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT:
        raise MergeConfigError(f"{where}: larger than {MAX_TEXT} bytes; not a merge config")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MergeConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise MergeConfigError(f"{where}: a mergekit config is a mapping (merge_method: ..., models: ...)")
    budget = _Budget(where)
    for key in doc:
        if not isinstance(key, str):
            raise MergeConfigError(f"{where}: keys must be strings, not {key!r}")
        if key in _NOT_SUPPORTED_KEYS:
            raise MergeConfigError(f"{where}: {key}: {_NOT_SUPPORTED_KEYS[key]}")
        if key not in _TOP_KEYS:
            raise MergeConfigError(f"{where}: unknown key {key!r}{_hint(key, _TOP_KEYS)}")

    method = doc.get("merge_method")
    if not isinstance(method, str) or not method:
        raise MergeConfigError(f"{where}: merge_method is missing (e.g. merge_method: ties)")
    if method in UNSUPPORTED_METHODS:
        raise MergeConfigError(
            f"{where}: merge_method {method} is not supported ({UNSUPPORTED_METHODS[method]}); "
            f"supported: {', '.join(METHODS)}"
        )
    if method not in METHODS:
        raise MergeConfigError(
            f"{where}: unknown merge_method {method!r}{_hint(method, METHODS)}; "
            f"supported: {', '.join(METHODS)}"
        )
    spec = METHODS[method]
    cls = strategy_class(spec.ours, where)

    base = (
        _model_ref(doc["base_model"], f"{where}: base_model") if doc.get("base_model") is not None else None
    )
    raw_models = doc.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise MergeConfigError(
            f"{where}: models must be a non-empty list of {{model: NAME, parameters: {{...}}}}"
        )
    if len(raw_models) > MAX_MODELS:
        raise MergeConfigError(f"{where}: {len(raw_models)} models; at most {MAX_MODELS}")
    models: list[ModelSpec] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw_models):
        at = f"{where}: models[{i}]"
        budget.spend()
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict):
            raise MergeConfigError(f"{at}: must be a mapping {{model: NAME, parameters: {{...}}}}")
        for key in entry:
            if key not in ("model", "parameters"):
                raise MergeConfigError(f"{at}: unknown key {key!r} (model, parameters)")
        if "model" not in entry:
            raise MergeConfigError(f"{at}: model is missing")
        name = _model_ref(entry["model"], f"{at}.model")
        if name in seen:
            raise MergeConfigError(f"{at}: model {name!r} is listed twice")
        seen.add(name)
        params = _params(entry.get("parameters"), cls, f"{at}.parameters", budget, per_model=True)
        models.append(ModelSpec(name, params))
    if base is not None and base in seen:
        models = [m for m in models if m.model != base or m.params]
        if any(m.model == base for m in models):
            raise MergeConfigError(f"{where}: base_model {base!r} is also a model with parameters")
    _check_arity(spec, cls, base, models, where)
    params = _params(doc.get("parameters"), cls, f"{where}: parameters", budget, per_model=False)

    dtype = _dtype(doc.get("dtype"), f"{where}: dtype")  # our compute precision, any of DTYPES
    implied = dict(spec.implied)
    if cls.name in BASE_OPTIONAL and base is None:
        implied["use_base"] = False  # mergekit slerps the models themselves
    recipe = Recipe(
        method=cls.name,
        mergekit_method=method,
        models=tuple(models),
        base_model=base,
        params=params,
        implied=implied,
        dtype=dtype,
        out_dtype=_dtype(doc.get("out_dtype"), f"{where}: out_dtype"),
        where=where,
    )
    _check_values(recipe)
    return recipe


def _hint(word: str, choices: Sequence[str] | Mapping[str, object]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _model_ref(value: object, where: str) -> str:
    if isinstance(value, dict):
        raise MergeConfigError(f"{where}: only a model name is supported here, not a mapping ({value!r})")
    if not isinstance(value, str) or not value.strip():
        raise MergeConfigError(f"{where}: must be a model name, not {value!r}")
    if "+" in value:
        raise MergeConfigError(f"{where}: {value!r}: model+LoRA references are not supported")
    return value.strip()


def _dtype(value: object, where: str) -> str | None:
    if value is None:
        return None
    name = value[len("torch.") :] if isinstance(value, str) and value.startswith("torch.") else value
    if name not in DTYPES:
        raise MergeConfigError(f"{where}: {value!r} is not one of {', '.join(DTYPES)}")
    return str(name)


def _check_arity(
    spec: MethodSpec, cls: type[Strategy], base: str | None, models: list[ModelSpec], where: str
) -> None:
    n = len(models)
    if cls.needs_base and base is None and spec.ours not in BASE_OPTIONAL:
        raise MergeConfigError(f"{where}: merge_method {spec.ours} needs a base_model (the merge base)")
    if spec.ours == "slerp":
        if base is None or n != 1:
            raise MergeConfigError(f"{where}: slerp takes a base_model and exactly one other model")
        return
    if spec.ours == "karcher" and base is not None:
        raise MergeConfigError(
            f"{where}: karcher with a base_model (mergekit averages the base model too) is not supported: "
            "leave base_model out"
        )
    if spec.ours == "nuslerp" and n != 2:
        raise MergeConfigError(f"{where}: nuslerp takes exactly two models, not {n}")
    if spec.ours != "nuslerp" and n < 2 and spec.ours != "slerp":
        raise MergeConfigError(
            f"{where}: {spec.ours} needs at least two models besides the base_model, not {n}"
        )


def _params(
    raw: object, cls: type[Strategy], where: str, budget: _Budget, *, per_model: bool
) -> dict[str, Setting]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MergeConfigError(f"{where}: must be a mapping of parameter: value")
    declared = {p.name for p in cls.params}
    out: dict[str, Setting] = {}
    for key, value in raw.items():
        budget.spend()
        at = f"{where}.{key}"
        if not isinstance(key, str):
            raise MergeConfigError(f"{where}: parameter names must be strings, not {key!r}")
        if key in NO_EFFECT:
            continue
        if key in OURS_ONLY and key in declared:
            raise MergeConfigError(f"{at}: not a mergekit parameter ({OURS_ONLY[key]})")
        if key not in declared:
            known = sorted(cls.per_model_params if per_model else declared - set(OURS_ONLY))
            raise MergeConfigError(
                f"{at}: {cls.name} has no parameter {key!r}{_hint(key, known)} "
                f"(parameters: {', '.join(known)})"
            )
        if per_model and key not in cls.per_model_params:
            allowed = ", ".join(cls.per_model_params) or "none"
            raise MergeConfigError(f"{at}: {key} cannot be set per model (per-model parameters: {allowed})")
        out[key] = _setting(value, cls, key, at, budget)
    return out


def _setting(value: object, cls: type[Strategy], key: str, where: str, budget: _Budget) -> Setting:
    if isinstance(value, list):
        budget.spend(len(value))
        if not value:
            raise MergeConfigError(f"{where}: an empty list")
        if all(isinstance(v, dict) for v in value):
            conds = []
            for i, cond in enumerate(value):
                at = f"{where}[{i}]"
                for k in cond:
                    if k not in ("filter", "value"):
                        raise MergeConfigError(f"{at}: unknown key {k!r} (filter, value)")
                if "value" not in cond:
                    raise MergeConfigError(f"{at}: value is missing")
                flt = cond.get("filter")
                if flt is not None and not isinstance(flt, str):
                    raise MergeConfigError(f"{at}.filter: must be a string, not {flt!r}")
                inner = cond["value"]
                if isinstance(inner, list | dict) and not _is_number_list(inner):
                    raise MergeConfigError(f"{at}.value: must be a value or a list of numbers")
                conds.append(Conditional(flt, _plain(inner, cls, key, f"{at}.value", budget)))
            return tuple(conds)
        return _plain(value, cls, key, where, budget)
    if isinstance(value, dict):
        return _setting([value], cls, key, where, budget)
    return _plain(value, cls, key, where, budget)


def _is_number_list(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)


def _plain(value: object, cls: type[Strategy], key: str, where: str, budget: _Budget) -> Scalar | Gradient:
    """A scalar, or a gradient (a list of numbers), each checked against the parameter."""
    if isinstance(value, list):
        budget.spend(len(value))
        if not _is_number_list(value):
            raise MergeConfigError(f"{where}: a gradient is a list of numbers, not {value!r}")
        param = next(p for p in cls.params if p.name == key)
        if param.kind is not float:
            raise MergeConfigError(f"{where}: {key} is a {param.kind.__name__}; gradients are for numbers")
        if len(value) == 1:
            return float(parse_value(cls, key, value[0], where))
        return Gradient(tuple(float(parse_value(cls, key, v, where)) for v in value))
    if not isinstance(value, bool | int | float | str):
        raise MergeConfigError(f"{where}: {value!r} is not a parameter value")
    parse_value(cls, key, value, where)  # type and range
    return value


def _check_values(recipe: Recipe) -> None:
    """Checks across parameters (DELLA's density and epsilon, linear's weights, ...), at every
    gradient knot and for every condition, by making the strategy there."""
    settings = [*recipe.params.values(), *(s for m in recipe.models for s in m.params.values())]
    plain = [c.value for s in settings if isinstance(s, tuple) for c in s] + settings
    # every gradient knot: between knots all settings are linear, so are the checks
    ts = {0.0, 1.0} | {
        i / (len(g.values) - 1) for g in plain if isinstance(g, Gradient) for i in range(len(g.values))
    }
    names = {""} | {c.filter or "" for s in settings if isinstance(s, tuple) for c in s}
    for tensor, t in sorted((n, t) for n in names for t in ts):
        s = recipe.strategy(tensor, t)
        per = [{**{k: s[k] for k in s.per_model_params}, **vals} for vals in recipe.per_model(tensor, t)]
        for i, merged in enumerate(per):
            if recipe.method in ("della", "della-linear"):
                check_della(
                    float(merged["density"]), float(merged["epsilon"]), f"{recipe.where}: models[{i}]"
                )
        if recipe.method == "linear" and s["normalize"] and sum(float(v["weight"]) for v in per) == 0:
            raise MergeConfigError(f"{recipe.where}: linear weights sum to 0 and normalize is true")


# ------------------------------------------------------------------ rendering


def _render_setting(s: Setting) -> object:
    if isinstance(s, tuple):
        return [
            {**({"filter": c.filter} if c.filter is not None else {}), "value": _render_setting(c.value)}
            for c in s
        ]
    if isinstance(s, Gradient):
        return list(s.values)
    return s


def to_yaml(recipe: Recipe) -> str:
    """The recipe as a mergekit YAML config (load_recipe(to_yaml(r)) == r, where aside)."""
    import yaml

    doc: dict[str, object] = {"merge_method": recipe.mergekit_method}
    if recipe.base_model is not None:
        doc["base_model"] = recipe.base_model
    models: list[dict[str, Any]] = []
    for m in recipe.models:
        entry: dict[str, Any] = {"model": m.model}
        if m.params:
            entry["parameters"] = {k: _render_setting(v) for k, v in m.params.items()}
        models.append(entry)
    doc["models"] = models
    if recipe.params:
        doc["parameters"] = {k: _render_setting(v) for k, v in recipe.params.items()}
    if recipe.dtype is not None:
        doc["dtype"] = recipe.dtype
    if recipe.out_dtype is not None:
        doc["out_dtype"] = recipe.out_dtype
    text: str = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
    return text


# ------------------------------------------------------------------ from a recorded merge


@dataclass(frozen=True)
class MergedTensor:
    """What a merged tensor's manifest line records: its strategy (with the values it got) and,
    per model, the per-model values set for it (empty: none)."""

    name: str
    layer: int | None  # its layer index (None: outside the layer stack)
    strategy: Strategy
    per_model: tuple[Mapping[str, Value], ...] = ()


# mergekit's name for each of our strategies
MERGEKIT_NAMES = {spec.ours: name for name, spec in METHODS.items()}


def from_merged(
    merged: Sequence[MergedTensor],
    models: Sequence[str],
    base_model: str | None,
    n_layers: int,
    where: str,
) -> Recipe:
    """The recipe of a recorded merge, as a mergekit config would say it: one merge_method;
    each parameter a value where every tensor got the same, a gradient where the values follow
    the layers (the fewest knots that give every recorded value), else one `{filter, value}`
    condition per tensor (its full name; longer names first, so that a name containing another
    is decided by its own). `models` names the merge's models in the recorded order (ours first
    when HEAD was one), `base_model` the merge base. MergeConfigError where no mergekit config
    says what was done (several strategies, one without a mergekit counterpart, one of our own
    options such as `conventions = "paper"`). The caller checks the result against the record."""
    if not merged:
        raise MergeConfigError(f"{where}: no merged tensor records a recipe")
    counts: dict[str, int] = {}
    for m in merged:
        counts[m.strategy.name] = counts.get(m.strategy.name, 0) + 1
    if len(counts) > 1:
        used = ", ".join(f"{k} for {v} tensors" for k, v in sorted(counts.items()))
        raise MergeConfigError(
            f"{where}: the merge used several strategies ({used}); a mergekit config has one merge_method"
        )
    ours = merged[0].strategy.name
    if ours not in MERGEKIT_NAMES:
        raise MergeConfigError(
            f"{where}: the merge used {ours}, which has no mergekit counterpart "
            f"(mergekit methods here: {', '.join(sorted(MERGEKIT_NAMES))})"
        )
    method = MERGEKIT_NAMES[ours]
    spec = METHODS[method]
    cls = strategy_class(ours, where)
    n = {len(m.per_model) for m in merged if m.per_model}
    if n and n != {len(models)}:
        raise MergeConfigError(
            f"{where}: per-model values recorded for {sorted(n)} models, not {len(models)}"
        )
    implied: dict[str, Value] = dict(spec.implied)
    declared = {p.name: p for p in cls.params}
    if ours in BASE_OPTIONAL:
        use_base = {bool(m.strategy["use_base"]) for m in merged}
        if use_base == {False}:
            base_model = None
            implied["use_base"] = False
    if not cls.needs_base and ours != "slerp":
        base_model = None
    layers = {m.name: m.layer for m in merged}

    params: dict[str, Setting] = {}
    for p in cls.params:
        if p.name == "drop" and "density" in declared:
            continue  # DARE's drop: mergekit says density (1 - drop), which is recorded too
        values = {m.name: m.strategy[p.name] for m in merged}
        loaded = implied.get(p.name, p.default)
        if all(v == loaded for v in values.values()) and (p.option or p.name in OURS_ONLY):
            continue
        if p.name in OURS_ONLY:
            odd = sorted({format_value(v) for v in values.values() if v != loaded})
            raise MergeConfigError(
                f"{where}: the merge used {p.name}={'/'.join(odd)}, which a mergekit config cannot say "
                f"({OURS_ONLY[p.name]}; mergekit computes with {p.name}={format_value(loaded)})"
            )
        params[p.name] = _fit(values, layers, n_layers, p.kind is float, rounded=True)
    specs = []
    for i, name in enumerate(models if ours != "slerp" else models[1:]):
        own: dict[str, Setting] = {}
        for key in cls.per_model_params:
            vals = {m.name: m.per_model[i][key] for m in merged if m.per_model and key in m.per_model[i]}
            if vals:
                numeric = declared[key].kind is float
                own[key] = _fit(vals, layers, n_layers, numeric, some=len(vals) < len(merged))
        specs.append(ModelSpec(name, own))
    if ours == "slerp":
        base_model = models[0]
    return Recipe(
        method=ours,
        mergekit_method=method,
        models=tuple(specs),
        base_model=base_model,
        params=params,
        implied=implied,
        where=where,
    )


def _fit(
    values: Mapping[str, Value],
    layers: Mapping[str, int | None],
    n_layers: int,
    numeric: bool,
    some: bool = False,
    rounded: bool = False,
) -> Setting:
    """A setting that gives each named tensor its value (see from_merged). `some`: only some of
    the merged tensors have a value (the others must match no condition); `rounded`: the merge
    configuration rounds this gradient's values to 12 digits (a strategy's, not a model's)."""
    distinct = set(values.values())
    if len(distinct) == 1 and not some:
        return next(iter(values.values()))
    if numeric and not some and n_layers > 1:
        grad = _gradient(values, layers, n_layers, rounded)
        if grad is not None:
            return grad
    names = sorted(values, key=lambda k: (-len(k), k))
    return tuple(Conditional(k, values[k]) for k in names)


def _gradient(
    values: Mapping[str, Value], layers: Mapping[str, int | None], n: int, rounded: bool
) -> Gradient | None:
    """The gradient with the fewest knots (at layers) that gives every tensor its value, as the
    merge configuration evaluates gradients (at t = i / (n - 1), tensors outside the layer stack
    at t = 0); None when the values do not follow the layers."""
    at: dict[int, float] = {}
    for name, v in values.items():
        i = layers.get(name)
        i = 0 if i is None else i
        if not 0 <= i < n or at.setdefault(i, float(v)) != float(v):
            return None
    for k in range(2, n + 1):
        if (n - 1) % (k - 1):
            continue
        step = (n - 1) // (k - 1)
        if any(j * step not in at for j in range(k)):
            continue
        g = Gradient(tuple(at[j * step] for j in range(k)))
        got = {i: evaluate(g, "", i / (n - 1)) for i in at}
        if all(v is not None and (round(float(v), 12) if rounded else v) == at[i] for i, v in got.items()):
            return g
    return None
