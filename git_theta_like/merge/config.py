"""Which strategy merges a tensor changed on both sides: rules, git config, command line.

Precedence, highest first (docs/merging.md):

1. the command line: `git theta-like merge BRANCH --strategy S --set k=v`, which runs
   `git merge` with `GIT_THETA_LIKE_MERGE_STRATEGY` / `GIT_THETA_LIKE_MERGE_SET` set;
2. git config: `theta-like.merge.strategy`, `theta-like.merge.<param>`;
3. the first matching rule of the committed `.theta-like.toml` (`[[merge.rules]]`);
4. `[merge] strategy` of `.theta-like.toml`;
5. `average`.

A strategy given by 1 or 2 replaces the rules for every tensor; parameters given by 1 or 2
alone tune whatever strategy the rules choose, where that strategy has the parameter.

In `.theta-like.toml` a parameter may also be a *gradient*, a list of numbers interpolated
linearly over the tensor's layer index (mergekit's rule: layer i of n takes t = i / (n - 1);
tensors without a layer index take the first value), and a strategy's per-model parameters are
tables keyed by the merged models as named on the command line (`weights = {ours = 0.7,
"feature/x" = 0.3}`, `ours` = HEAD), bound to the merge's models by `MergeConfig.bind_models`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.mergekit import MergedTensor, Recipe, from_merged, load_recipe
from git_theta_like.merge.strategies import (
    DEFAULT_STRATEGY,
    applicable,
    check_overrides,
    make_strategy,
    strategy_class,
)
from git_theta_like.merge.strategies.base import PRECISIONS, Param, Strategy, Value

TOML_NAME = ".theta-like.toml"
ENV_STRATEGY = "GIT_THETA_LIKE_MERGE_STRATEGY"
ENV_SET = "GIT_THETA_LIKE_MERGE_SET"
ENV_DEVICE = "GIT_THETA_LIKE_MERGE_DEVICE"
ENV_PRECISION = "GIT_THETA_LIKE_MERGE_PRECISION"
ENV_RECIPE = "GIT_THETA_LIKE_MERGE_RECIPE"  # a mergekit YAML config's path (merge --recipe)
CONFIG_PREFIX = "theta-like.merge."
CONFIG_DEVICE = "theta-like.device"
CONFIG_PRECISION = "theta-like.merge.precision"
CONFIG_PICK = "theta-like.pickStrategy"  # patch (default) or conflict, for history replays
PICK_STRATEGIES = ("patch", "conflict")
_RESERVED = {"strategy", "precision"}  # theta-like.merge.* keys that are not parameters
_RULE_KEYS = {"path", "tensor", "strategy"}


@dataclass(frozen=True)
class Rule:
    """One `[[merge.rules]]` entry: globs on the file path and the tensor name, and a recipe."""

    paths: tuple[str, ...]
    tensors: tuple[str, ...]
    strategy: str
    params: dict[str, object]
    where: str

    def matches(self, path: str, tensor: str) -> bool:
        return (not self.paths or any(_path_match(p, path) for p in self.paths)) and (
            not self.tensors or any(fnmatch.fnmatchcase(tensor, t) for t in self.tensors)
        )


def _path_match(pattern: str, path: str) -> bool:
    """gitattributes-like: a pattern without `/` matches the base name, else the whole path."""
    if "/" not in pattern.rstrip("/"):
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.lstrip("/"))


@dataclass(frozen=True)
class Choice:
    strategy: Strategy
    source: str  # where the choice came from, for messages
    # per model (in the order of MergeConfig.models), the values of the strategy's per-model
    # parameters that the configuration sets for it; empty: none set
    per_model: tuple[dict[str, Value], ...] = ()
    # the parameters as configured (gradients and per-model tables included): [merge]'s default
    params: Mapping[str, object] | None = None


# ------------------------------------------------------------------ layers and gradients

_LAYER_RE = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def layer_index(tensor: str) -> int | None:
    """The layer index of a tensor name: its first all-digit dotted component
    (`model.layers.7.mlp.up_proj.weight` -> 7, `encoder.layer.0.attention...` -> 0); None for
    tensors outside the layer stack (embeddings, final norm, head)."""
    m = _LAYER_RE.search(tensor)
    return int(m.group(1)) if m else None


def layer_count(names: Sequence[str] | set[str]) -> int:
    """The number of layers of a model whose tensors have these names (largest index + 1)."""
    return max((i + 1 for n in names if (i := layer_index(n)) is not None), default=0)


def layer_t(tensor: str, n_layers: int) -> float:
    """Where a tensor sits in the layer stack, in [0, 1], as mergekit computes it: layer i of n
    is i / (n - 1) (1 for a one-layer model); a tensor without a layer index is at 0."""
    i = layer_index(tensor)
    if i is None:
        return 0.0
    return i / (n_layers - 1) if n_layers > 1 else 1.0


def interpolate(values: Sequence[float], t: float) -> float:
    """mergekit's gradient: the list spread evenly over [0, 1], linear between neighbours."""
    scaled = t * (len(values) - 1)
    i0 = min(int(math.floor(scaled)), len(values) - 1)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return float((1 - frac) * values[i0] + frac * values[i1])


def _plural(param: str) -> str:
    return param[:-1] + "ies" if param.endswith("y") else param + "s"


def _is_gradient(value: object) -> bool:
    return isinstance(value, list)


def _check_number(value: object, p: Param | None, name: str, where: str) -> None:
    if p is not None:
        if p.kind is bool:
            raise MergeConfigError(f"{where}: parameter {name} is true or false, it cannot vary per layer")
        p.parse(value, where)
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MergeConfigError(f"{where}: parameter {name} must be a finite number, not {value!r}")


def _check_gradient(value: object, p: Param | None, name: str, where: str) -> None:
    if isinstance(value, list):
        if len(value) < 2:
            raise MergeConfigError(
                f"{where}: parameter {name} = {value!r}: a gradient needs at least two values "
                "(first layer, ..., last layer); give a single number for a constant"
            )
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise MergeConfigError(f"{where}: parameter {name}: {v!r} in a gradient is not a number")
            _check_number(v, p, name, where)
    else:
        _check_number(value, p, name, where)


def split_params(
    cls: type[Strategy], params: Mapping[str, object], where: str
) -> tuple[dict[str, object], dict[str, list[float]], dict[str, dict[str, object]]]:
    """A rule's parameters as (plain values, gradients: lists over the layers, per-model tables:
    per-model parameter -> {model name: value or gradient}), each checked against cls."""
    declared = {p.name: p for p in cls.params}
    plain: dict[str, object] = {}
    grads: dict[str, list[float]] = {}
    tables: dict[str, dict[str, object]] = {}
    per_model = {_plural(p): p for p in cls.per_model_params}
    for key, value in params.items():
        if isinstance(value, dict):
            if key not in per_model:
                if cls.per_model_params:
                    hint = f"its per-model parameters: {', '.join(sorted(per_model))}"
                else:
                    hint = "it takes no per-model parameters"
                raise MergeConfigError(f"{where}: {cls.name} has no per-model parameter {key!r} ({hint})")
            if not value:
                raise MergeConfigError(f"{where}: {key} is empty: name the models, e.g. {{ours = 0.5}}")
            name = per_model[key]
            for model, v in value.items():
                _check_gradient(v, declared.get(name), name, f"{where} {key}.{model}")
            tables[name] = dict(value)
        elif _is_gradient(value):
            target = key
            if key in cls.aliases:
                raise MergeConfigError(
                    f"{where}: {key} cannot be a gradient; give {cls.aliases[key][0]} as one instead"
                )
            if key not in declared:
                make_strategy(cls.name, {key: 0}, where)  # the unknown-parameter error
            _check_gradient(value, declared[target], key, where)
            assert isinstance(value, list)
            grads[key] = [float(v) for v in value]
        else:
            plain[key] = value
    if grads:  # cross-parameter checks at both ends of the layer stack
        for end in (0, -1):
            make_strategy(cls.name, {**plain, **{k: g[end] for k, g in grads.items()}}, where)
    else:
        make_strategy(cls.name, plain, where)
    return plain, grads, tables


def parse_set(items: list[str] | tuple[str, ...], where: str) -> dict[str, str]:
    """`key=value` items (from --set, or the comma-separated environment variable)."""
    out: dict[str, str] = {}
    for item in items:
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not key or not value.strip():
            raise MergeConfigError(f"{where}: {item!r} is not key=value (e.g. density=0.2)")
        out[key] = value.strip()
    return out


def encode_set(params: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _globs(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise MergeConfigError(f"{where}: expected a glob or a list of globs, not {value!r}")


def parse_toml(text: str, where: str = TOML_NAME) -> tuple[list[Rule], Choice | None]:
    """The rules and the default of a `.theta-like.toml` (other sections are ignored)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MergeConfigError(f"{where} is not valid TOML: {e}") from None
    merge = doc.get("merge", {})
    if not isinstance(merge, dict):
        raise MergeConfigError(f"{where}: [merge] must be a table")
    default = None
    top = {k: v for k, v in merge.items() if k != "rules"}
    if top:
        name = top.pop("strategy", DEFAULT_STRATEGY)
        if not isinstance(name, str):
            raise MergeConfigError(f"{where}: [merge] strategy must be a string")
        cls = strategy_class(name, f"{where} [merge]")
        plain, grads, _ = split_params(cls, top, f"{where} [merge]")
        first = {**plain, **{k: g[0] for k, g in grads.items()}}
        default = Choice(make_strategy(name, first, f"{where} [merge]"), f"{where} [merge]", params=top)
    rules = []
    raw_rules = merge.get("rules", [])
    if not isinstance(raw_rules, list):
        raise MergeConfigError(f"{where}: merge.rules must be an array of tables ([[merge.rules]])")
    for i, entry in enumerate(raw_rules, start=1):
        rw = f"{where} rule {i}"
        if not isinstance(entry, dict):
            raise MergeConfigError(f"{rw}: must be a table")
        if "strategy" not in entry or not isinstance(entry["strategy"], str):
            raise MergeConfigError(f'{rw}: needs strategy = "<name>"')
        if "path" not in entry and "tensor" not in entry:
            raise MergeConfigError(
                f"{rw}: needs path and/or tensor (globs); use [merge] strategy for a default"
            )
        params = {k: v for k, v in entry.items() if k not in _RULE_KEYS}
        split_params(strategy_class(entry["strategy"], rw), params, rw)  # validate now, even unused
        rules.append(
            Rule(
                _globs(entry["path"], f"{rw} path") if "path" in entry else (),
                _globs(entry["tensor"], f"{rw} tensor") if "tensor" in entry else (),
                entry["strategy"],
                params,
                rw,
            )
        )
    return rules, default


@dataclass
class MergeConfig:
    rules: list[Rule] = field(default_factory=list)
    default: Choice | None = None
    config_strategy: str | None = None
    config_params: dict[str, str] = field(default_factory=dict)
    cli_strategy: str | None = None
    cli_params: dict[str, str] = field(default_factory=dict)
    device: str = "auto"
    precision: str = "float32"
    # set when git is replaying history (cherry-pick, rebase, revert, am, stash): what it is doing
    replay: str | None = None
    pick_strategy: str = "patch"
    # the models of the merge, as named on the command line ("ours" first), once bound
    models: list[str] = field(default_factory=list)
    _model_of: dict[str, int] = field(default_factory=dict)  # a table's key -> index in models
    bind_error: MergeConfigError | None = None  # bind_models failed: raised where tables are used
    # a mergekit config (merge --recipe): the whole configuration of this merge, for every tensor
    recipe: Recipe | None = None
    _cache: dict[tuple[str, tuple[tuple[str, object], ...], str], Strategy] = field(default_factory=dict)

    def validate(self) -> None:
        """Fail early (before any tensor) on a bad override."""
        for strat, params, where in (
            (self.config_strategy, self.config_params, "git config theta-like.merge"),
            (self.cli_strategy, self.cli_params, "command line"),
        ):
            if strat is not None:
                cls = strategy_class(strat, where)
                # on the command line, --set must fit --strategy; git config may hold
                # parameters for other strategies
                make_strategy(strat, params if where == "command line" else applicable(cls, params), where)
            check_overrides(params, where)

    def tables(self) -> list[tuple[str, dict[str, object]]]:
        """Every per-model table of the rules and the default, with where it is written."""
        out = []
        entries: list[tuple[str, str, Mapping[str, object]]] = [
            (r.strategy, r.where, r.params) for r in self.rules
        ]
        if self.default is not None and self.default.params is not None:
            entries.append((self.default.strategy.name, self.default.source, self.default.params))
        for name, where, params in entries:
            _, _, tabs = split_params(strategy_class(name, where), params, where)
            out += [(f"{where} {_plural(p)}", t) for p, t in tabs.items()]
        if self.recipe is not None:  # every model the recipe names must be one of the merge's
            out.append((f"{self.recipe.where}: models", {m: None for m in recipe_models(self.recipe)}))
        return out

    def bind_models(
        self,
        labels: Sequence[str],
        resolve: Callable[[str], str | None] | None = None,
        commits: Sequence[str] = (),
    ) -> None:
        """Name the merge's models (labels[0] is ours, the others as written on the command line)
        and check that every key of every per-model table names one of them: a label, `ours`,
        or (with resolve, a rev-parse) a revision of one of the models' commits."""
        self.models = list(labels)
        self._model_of = {label: i for i, label in enumerate(labels)}
        for where, table in self.tables():
            for key in table:
                if key in self._model_of:
                    continue
                oid = resolve(key) if resolve is not None else None
                if oid is not None and oid in commits:
                    self._model_of[key] = list(commits).index(oid)
                    continue
                raise MergeConfigError(
                    f"{where}: {key!r} is not one of the merged models ({', '.join(self.models)}; "
                    "ours is HEAD, the others as named on the command line)"
                )
        if self.recipe is not None:  # and every model of the merge is one of the recipe's
            named = {self._model_of[m] for m in recipe_models(self.recipe)}
            missing = [label for i, label in enumerate(self.models) if i not in named]
            if missing:
                raise MergeConfigError(
                    f"{self.recipe.where}: the merge's model(s) {', '.join(missing)} are not among the "
                    f"recipe's models ({', '.join(recipe_models(self.recipe))}; ours is HEAD)"
                )

    def _per_model(
        self, tables: dict[str, dict[str, object]], t: float, source: str
    ) -> tuple[dict[str, Value], ...]:
        if not tables:
            return ()
        if self.bind_error is not None:
            raise self.bind_error
        if not self.models:
            raise MergeConfigError(
                f"{source}: per-model parameters ({', '.join(_plural(p) for p in tables)}) need the "
                "names of the merged models, which this merge does not know"
            )
        out: list[dict[str, Value]] = [{} for _ in self.models]
        for param, table in tables.items():
            for key, v in table.items():
                i = self._model_of.get(key)
                if i is None:
                    raise MergeConfigError(
                        f"{source}: {key!r} is not one of the merged models ({', '.join(self.models)})"
                    )
                value = interpolate(v, t) if isinstance(v, list) else v
                out[i][param] = value  # type: ignore[assignment]
        return tuple(out)

    def choose(self, path: str, tensor: str, t: float = 0.0) -> Choice:
        """The strategy for a tensor changed on both sides; t is the tensor's place in the layer
        stack (layer_t), where gradients are evaluated."""
        base_params: Mapping[str, object]
        if self.replay is not None:
            # a replay applies a patch: the rules for merging two lines of work do not apply
            key: tuple[str, tuple[tuple[str, str], ...], str] = ("patch", (), "replay")
            if key not in self._cache:
                self._cache[key] = make_strategy("patch", {}, CONFIG_PICK)
            return Choice(self._cache[key], f"{self.replay}: patch semantics ({CONFIG_PICK})")
        over_allowed = True
        if self.recipe is not None:
            # the recipe is the whole configuration: no rule, git config or --set applies
            name, source, over_allowed = self.recipe.method, self.recipe.where, False
            plain, per = self.recipe.resolved(tensor)
            base_params = dict(plain)
            for spec, vals in zip(self.recipe.models, per, strict=True):
                for k, v in vals.items():
                    table = base_params.setdefault(_plural(k), {})
                    assert isinstance(table, dict)
                    table[spec.model] = v
        elif self.cli_strategy:
            name, base_params, source = self.cli_strategy, {}, "command line (--strategy)"
        elif self.config_strategy:
            name, base_params, source = self.config_strategy, {}, "git config theta-like.merge.strategy"
        else:
            rule = next((r for r in self.rules if r.matches(path, tensor)), None)
            if rule is not None:
                name, base_params, source = rule.strategy, rule.params, rule.where
            elif self.default is not None:
                d = self.default.strategy
                name, base_params, source = d.name, d.values, self.default.source
                if self.default.params is not None:
                    base_params = self.default.params
            else:
                name, base_params, source = DEFAULT_STRATEGY, {}, "default"
        cls = strategy_class(name, source)
        params = dict(base_params)
        over = (
            {**applicable(cls, self.config_params), **applicable(cls, self.cli_params)}
            if over_allowed
            else {}
        )
        params.update(over)
        if over:
            source += " + overrides"
        tables: dict[str, dict[str, object]] = {}
        if any(isinstance(v, list | dict) for v in params.values()):
            plain, grads, tables = split_params(cls, params, source)
            params = {**plain, **{k: round(interpolate(g, t), 12) for k, g in grads.items()}}
        key = (cls.name, tuple(sorted((k, str(v)) for k, v in params.items())), source)
        if key not in self._cache:
            self._cache[key] = make_strategy(cls.name, params, source)
        return Choice(self._cache[key], source, self._per_model(tables, t, source))


@dataclass
class FailedConfig(MergeConfig):
    """A configuration that could not be read: fine for merges that need no strategy (one-sided
    changes), the error for those that do."""

    error: MergeConfigError | None = None

    def choose(self, path: str, tensor: str, t: float = 0.0) -> Choice:
        assert self.error is not None
        raise self.error


def load_lenient(repo: Any, env: Mapping[str, str] | None = None) -> MergeConfig:
    try:
        return load(repo, env)
    except MergeConfigError as e:
        return FailedConfig(error=e)


def load(repo: Any, env: Mapping[str, str] | None = None, toml_text: str | None = None) -> MergeConfig:
    """The merge configuration of a repository (`repo`: gitio.repo.Repo) and the environment.

    `.theta-like.toml` is read from the work tree, else from HEAD.
    """
    env = os.environ if env is None else env
    if toml_text is None:
        toml_text = read_toml(repo)
    rules, default = parse_toml(toml_text) if toml_text is not None else ([], None)
    cfg = MergeConfig(rules=rules, default=default)
    cfg.config_strategy = repo.config_get(CONFIG_PREFIX + "strategy")
    for key, value in _config_section(repo).items():
        if key not in _RESERVED:
            cfg.config_params[key] = value
    cfg.cli_strategy = env.get(ENV_STRATEGY) or None
    cfg.cli_params = parse_set(env.get(ENV_SET, "").split(","), ENV_SET)
    if env.get(ENV_RECIPE):
        if cfg.cli_strategy or cfg.cli_params:
            raise MergeConfigError(
                f"{ENV_RECIPE} (a recipe) and {ENV_STRATEGY} / {ENV_SET} exclude each other"
            )
        cfg.recipe = read_recipe(repo, env[ENV_RECIPE])
    cfg.device = env.get(ENV_DEVICE) or repo.config_get(CONFIG_DEVICE) or "auto"
    recipe_dtype = cfg.recipe.dtype if cfg.recipe is not None else None
    cfg.precision = (
        env.get(ENV_PRECISION) or recipe_dtype or repo.config_get(CONFIG_PRECISION) or "float32"
    ).lower()
    if cfg.precision not in PRECISIONS:
        raise MergeConfigError(
            f"theta-like.merge.precision must be one of {', '.join(PRECISIONS)}, not {cfg.precision!r}"
        )
    cfg.pick_strategy = (repo.config_get(CONFIG_PICK) or "patch").strip().lower()
    if cfg.pick_strategy not in PICK_STRATEGIES:
        raise MergeConfigError(f"{CONFIG_PICK} must be patch or conflict, not {cfg.pick_strategy!r}")
    cfg.validate()
    return cfg


def bind(repo: Any, cfg: MergeConfig, labels: Sequence[str], commits: Sequence[str]) -> None:
    """cfg.bind_models for a repository (`repo`: gitio.repo.Repo): table keys that are not a
    model's label are resolved as revisions and matched against the models' commits."""
    from git_theta_like.errors import RevisionError
    from git_theta_like.gitio.scan import resolve_commit

    def resolve(rev: str) -> str | None:
        try:
            return str(resolve_commit(repo, rev).id)
        except RevisionError:
            return None

    cfg.bind_models(labels, resolve, commits)


def bind_stopped_merge(repo: Any, cfg: MergeConfig) -> None:
    """bind for a `git merge` of one branch that stopped (mergetool, sharded models): ours and
    MERGE_HEAD's commit, which table keys name by any revision of it. Errors are kept for where
    a strategy needs the tables (bind_error)."""
    head = repo.git_dir / "MERGE_HEAD"
    if isinstance(cfg, FailedConfig) or cfg.replay is not None or not head.is_file():
        return
    heads = head.read_text().split()
    if len(heads) != 1 or repo.git.head_is_unborn:
        return
    try:
        bind(repo, cfg, ["ours", heads[0][:12]], [str(repo.git.head.target), heads[0]])
    except MergeConfigError as e:
        cfg.bind_error = e


def replaying(repo: Any, env: Mapping[str, str]) -> str | None:
    """What git is replaying when it calls the merge driver (or when mergetool runs on what it
    left) for a cherry-pick, rebase, revert, `am -3` or stash rather than for a `git merge`; None
    for a merge. Only meaningful inside git's merge machinery: the driver and mergetool ask.

    `git merge` (and `git pull`) names each head it merges in a GITHEAD_<oid> variable; the
    sequencer (cherry-pick, revert, rebase) and `am` do not, and leave their state in the git dir.
    """
    if any(k.startswith("GITHEAD_") for k in env):
        return None
    git_dir = repo.git_dir
    if (git_dir / "rebase-merge").is_dir():
        return "rebase"
    if (git_dir / "rebase-apply").is_dir():
        return "am" if (git_dir / "rebase-apply" / "applying").exists() else "rebase"
    if (git_dir / "CHERRY_PICK_HEAD").is_file():
        return "cherry-pick"
    if (git_dir / "REVERT_HEAD").is_file():
        return "revert"
    if (git_dir / "MERGE_HEAD").is_file():
        return None  # mergetool after a `git merge` stopped
    return "cherry-pick, revert or stash"


def _config_section(repo: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in repo.git.config:
        name = entry.name.lower()
        if name.startswith(CONFIG_PREFIX) and name.count(".") == 2:
            out[name[len(CONFIG_PREFIX) :]] = str(entry.value)
    return out


def read_toml(repo: Any) -> str | None:
    if repo.workdir is not None:
        p = repo.workdir / TOML_NAME
        if p.is_file():
            return str(p.read_text(encoding="utf-8"))
    blob = repo.rev_blob("HEAD", TOML_NAME)
    return blob.decode("utf-8", errors="replace") if blob is not None else None


# ------------------------------------------------------------------ mergekit recipes


def recipe_models(recipe: Recipe) -> list[str]:
    """The models a recipe merges, in the order of the merge (slerp's base_model is ours, its
    t = 0 end, and the other model theirs)."""
    names = [m.model for m in recipe.models]
    if recipe.method == "slerp" and recipe.base_model is not None:
        return [recipe.base_model, *names]
    return names


def read_recipe(repo: Any, path: str) -> Recipe:
    """The mergekit config at path (relative: to the top of the work tree), parsed."""
    from pathlib import Path

    from git_theta_like.merge.mergekit import MAX_TEXT

    p = Path(path)
    if not p.is_absolute() and repo.workdir is not None:
        p = repo.workdir / p
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_TEXT + 1)
    except OSError as e:
        raise MergeConfigError(f"{path}: cannot read the recipe ({e.strerror or e})") from None
    return load_recipe(data, path)


def recipe_heads(repo: Any, recipe: Recipe, given: Sequence[str] = ()) -> list[str]:
    """The revisions `git merge` merges into HEAD for a recipe (`merge --recipe`), as the recipe
    names them: its models other than HEAD, which must be one of them or the merge base (the
    recipe's base_model). base_model must be the models' merge base, the θ₀ every task vector is
    taken from (git merges against nothing else); `given` (BRANCH... on the command line), when
    not empty, must name the same models. Raises MergeConfigError (nothing started)."""
    from git_theta_like.errors import RevisionError
    from git_theta_like.gitio.scan import resolve_commit

    where = recipe.where
    if recipe.out_dtype is not None and recipe.out_dtype != (recipe.dtype or "float32"):
        raise MergeConfigError(
            f"{where}: out_dtype {recipe.out_dtype}: a merge keeps each tensor's dtype (and the file's "
            "layout), its values computed in dtype; remove out_dtype"
        )

    def commit(rev: str, what: str) -> str:
        try:
            return str(resolve_commit(repo, rev).id)
        except RevisionError:
            raise MergeConfigError(
                f"{where}: {what} {rev!r} is not a branch or revision of this repository "
                "(here a model is a branch, tag or commit holding the checkpoint)"
            ) from None

    if repo.git.head_is_unborn:
        raise MergeConfigError(f"{where}: HEAD has no commit yet: check out the base model or a model first")
    head = str(repo.git.head.target)
    names = recipe_models(recipe)
    commits = [commit(n, "model") for n in names]
    for i, c in enumerate(commits):
        if c in commits[:i]:
            raise MergeConfigError(
                f"{where}: models {names[commits.index(c)]!r} and {names[i]!r} are one commit"
            )
    base = commit(recipe.base_model, "base_model") if recipe.base_model is not None else None
    if base is not None and recipe.method != "slerp":
        oids = [pygit2_oid(c) for c in commits]  # HEAD: the base or a model
        mb = repo.git.merge_base_octopus(oids) if len(oids) > 1 else oids[0]
        if mb is None or str(mb) != base:
            found = (
                f"their merge base is {str(mb)[:12]}" if mb is not None else "they have no common ancestor"
            )
            raise MergeConfigError(
                f"{where}: base_model {recipe.base_model!r} ({base[:12]}) is not the merge base of the "
                f"models: {found}; task vectors are taken from the merge base, so base_model must name it"
            )
    if recipe.method == "slerp" and head != commits[0]:
        raise MergeConfigError(
            f"{where}: slerp's base_model ({names[0]}) is ours, the t = 0 end: check it out first"
        )
    if head in commits:
        heads = [n for n, c in zip(names, commits, strict=True) if c != head]
    elif base is not None and head == base and recipe.method != "slerp":
        heads = list(names)
    else:
        raise MergeConfigError(
            f"{where}: HEAD is neither one of the recipe's models ({', '.join(names)})"
            + (f" nor its base_model ({recipe.base_model})" if recipe.method != "slerp" and base else "")
            + ": check out the one the merge commit goes on first"
        )
    if not heads:
        raise MergeConfigError(f"{where}: HEAD is the only model: nothing to merge")
    if given:
        want = {c for n, c in zip(names, commits, strict=True) if n in heads}
        got = [commit(g, "branch") for g in given]
        if set(got) != want or len(got) != len(want):
            raise MergeConfigError(
                f"{where}: the branches given ({', '.join(given)}) are not the recipe's models to merge "
                f"into HEAD ({', '.join(heads)})"
            )
    return heads


def pygit2_oid(hexsha: str) -> Any:
    import pygit2

    return pygit2.Oid(hex=hexsha)


def parse_recorded(t: Any, where: str) -> tuple[Strategy, int, tuple[dict[str, Value], ...], str] | None:
    """A manifest tensor line's recorded recipe (`merge=`, `merge-params=`, `merge-models=`,
    `merge-per-model=`, `merge-precision=`), checked as any configuration is (a manifest may lie):
    the strategy with its values, the number of models, the per-model values and the compute
    precision; None: the line records none."""
    fields = dict(t.obj.extra)
    name = fields.get("merge")
    if name is None:
        return None
    at = f"{where}: {t.name}"
    params: dict[str, object] = {}
    for item in filter(None, fields.get("merge-params", "").split(",")):
        k, sep, v = item.partition(":")
        if not sep:
            raise MergeConfigError(f"{at}: merge-params {item!r} is not key:value")
        params[k] = v
    strategy = make_strategy(name, params, f"{at} (recorded)")
    text = fields.get("merge-models", "2")
    if not text.isdigit() or not 2 <= int(text) <= 1024:
        raise MergeConfigError(f"{at}: merge-models={text!r} is not a number of models")
    n = int(text)
    per: list[dict[str, Value]] = [{} for _ in range(n)] if "merge-per-model" in fields else []
    declared = {p.name: p for p in strategy.params}
    for item in filter(None, fields.get("merge-per-model", "").split(",")):
        k, sep, v = item.partition(":")
        vals = v.split("/")
        if not sep or k not in strategy.per_model_params or len(vals) != n:
            raise MergeConfigError(
                f"{at}: merge-per-model {item!r} is not {n} values of a per-model parameter"
            )
        for i, x in enumerate(vals):
            if x != "-":
                per[i][k] = declared[k].parse(x, f"{at} (recorded, model {i + 1})")
    precision = fields.get("merge-precision", "float32")
    if precision not in PRECISIONS:
        raise MergeConfigError(f"{at}: merge-precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    return strategy, n, tuple(per), precision


def recorded_recipe(repo: Any, rev: str, path: str | None = None) -> Recipe:
    """The recipe a merge commit records in its checkpoints' manifests (path: one checkpoint,
    else all of them together), as a mergekit config would say it (mergekit.from_merged), with
    the models named by revisions of the merge commit's parents: a branch or tag the commit's
    message names when it still points there, else the commit id. Checked: the recipe, merged
    again, chooses for every merged tensor exactly what the record says (else MergeConfigError)."""
    import re

    from git_theta_like.errors import RevisionError
    from git_theta_like.gitio.scan import resolve_commit, tracked_files

    commit = resolve_commit(repo, rev)
    where = f"{rev}:{path}" if path else rev
    parents = [str(p) for p in commit.parent_ids]
    if len(parents) < 2:
        raise MergeConfigError(f"{rev} is not a merge commit: it records no merge recipe")
    files = [f for f in tracked_files(repo, str(commit.id)) if path is None or f.path == path]
    if path is not None and not files:
        raise MergeConfigError(f"{path} is not a tracked checkpoint at {rev}")
    merged: list[tuple[str, MergedTensor, int]] = []
    precisions: set[str] = set()
    names: set[str] = set()
    seen: dict[str, tuple[Strategy, tuple[dict[str, Value], ...]]] = {}
    for f in files:
        if f.manifest is None:
            raise MergeConfigError(f"{rev}:{f.path}: {f.error}")
        names |= {t.name for t in f.manifest.tensors}
        for t in f.manifest.tensors:
            got = parse_recorded(t, f"{rev}:{f.path}")
            if got is None:
                continue
            strategy, n, per, precision = got
            precisions.add(precision)
            if seen.setdefault(t.name, (strategy, per)) != (strategy, per):
                raise MergeConfigError(
                    f"{rev}: tensor {t.name} was merged differently in two files: give the PATH of one"
                )
            merged.append((f.path, MergedTensor(t.name, layer_index(t.name), strategy, per), n))
    if not merged:
        raise MergeConfigError(
            f"{where} records no merged tensor (every tensor was taken from one side or unchanged): "
            "no recipe to show"
        )
    counts = {n for _, _, n in merged}
    if len(counts) != 1:
        raise MergeConfigError(f"{where}: tensors record merges of {sorted(counts)} models")
    n = counts.pop()
    if n == len(parents):
        models, base = parents, None  # ours (the first parent) was a model
    elif n == len(parents) - 1:
        models, base = parents[1:], parents[0]  # HEAD was the merge base
    else:
        raise MergeConfigError(
            f"{where}: the tensors record merges of {n} models, the commit has {len(parents)} parents"
        )
    if base is None:
        oids = [pygit2_oid(p) for p in parents]
        mb = repo.git.merge_base_octopus(oids)
        base = str(mb) if mb is not None else None
    labels: dict[str, str] = {}
    for quoted in re.findall(r"'([^'\n]+)'", commit.message.split("\n", 1)[0]):
        try:
            oid = str(resolve_commit(repo, quoted).id)
        except RevisionError:
            continue
        labels.setdefault(oid, quoted)
    model_names = [labels.get(m, m) for m in models]
    recipe = from_merged(
        [m for _, m, _ in merged],
        model_names,
        labels.get(base, base) if base else None,
        layer_count(names),
        where,
    )
    if len(precisions) > 1:
        raise MergeConfigError(f"{where}: tensors were computed in {', '.join(sorted(precisions))}")
    if (precision := precisions.pop()) != "float32":
        recipe = dataclasses.replace(recipe, dtype=precision)
    # the check: the recipe, as a merge configuration, gives every merged tensor its record
    cfg = MergeConfig(recipe=recipe)
    cfg.bind_models(recipe_models(recipe))
    for file_path, m, _ in merged:
        choice = cfg.choose(file_path, m.name, layer_t(m.name, layer_count(names)))
        per = tuple(dict(d) for d in choice.per_model) if any(choice.per_model) else ()
        if choice.strategy != m.strategy or per != tuple(dict(d) for d in m.per_model):
            raise MergeConfigError(
                f"{where}: no mergekit config gives exactly this merge (tensor {m.name}: recorded "
                f"{m.strategy.describe()}, the config would give {choice.strategy.describe()})"
            )
    return recipe
