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
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from git_theta_like.errors import MergeConfigError
from git_theta_like.merge.strategies import (
    DEFAULT_STRATEGY,
    applicable,
    check_overrides,
    make_strategy,
    strategy_class,
)
from git_theta_like.merge.strategies.base import Strategy

TOML_NAME = ".theta-like.toml"
ENV_STRATEGY = "GIT_THETA_LIKE_MERGE_STRATEGY"
ENV_SET = "GIT_THETA_LIKE_MERGE_SET"
ENV_DEVICE = "GIT_THETA_LIKE_MERGE_DEVICE"
ENV_PRECISION = "GIT_THETA_LIKE_MERGE_PRECISION"
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
        default = Choice(make_strategy(name, top, f"{where} [merge]"), f"{where} [merge]")
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
        make_strategy(entry["strategy"], params, rw)  # validate now, even if no tensor matches
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

    def choose(self, path: str, tensor: str) -> Choice:
        """The strategy for a tensor changed on both sides."""
        base_params: Mapping[str, object]
        if self.replay is not None:
            # a replay applies a patch: the rules for merging two lines of work do not apply
            key: tuple[str, tuple[tuple[str, str], ...], str] = ("patch", (), "replay")
            if key not in self._cache:
                self._cache[key] = make_strategy("patch", {}, CONFIG_PICK)
            return Choice(self._cache[key], f"{self.replay}: patch semantics ({CONFIG_PICK})")
        if self.cli_strategy:
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
            else:
                name, base_params, source = DEFAULT_STRATEGY, {}, "default"
        cls = strategy_class(name, source)
        params = dict(base_params)
        over = {**applicable(cls, self.config_params), **applicable(cls, self.cli_params)}
        params.update(over)
        if over:
            source += " + overrides"
        key = (cls.name, tuple(sorted((k, str(v)) for k, v in params.items())), source)
        if key not in self._cache:
            self._cache[key] = make_strategy(cls.name, params, source)
        return Choice(self._cache[key], source)


@dataclass
class FailedConfig(MergeConfig):
    """A configuration that could not be read: fine for merges that need no strategy (one-sided
    changes), the error for those that do."""

    error: MergeConfigError | None = None

    def choose(self, path: str, tensor: str) -> Choice:
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
    cfg.device = env.get(ENV_DEVICE) or repo.config_get(CONFIG_DEVICE) or "auto"
    cfg.precision = (env.get(ENV_PRECISION) or repo.config_get(CONFIG_PRECISION) or "float32").lower()
    if cfg.precision not in ("float32", "float64"):
        raise MergeConfigError(
            f"theta-like.merge.precision must be float32 or float64, not {cfg.precision!r}"
        )
    cfg.pick_strategy = (repo.config_get(CONFIG_PICK) or "patch").strip().lower()
    if cfg.pick_strategy not in PICK_STRATEGIES:
        raise MergeConfigError(f"{CONFIG_PICK} must be patch or conflict, not {cfg.pick_strategy!r}")
    cfg.validate()
    return cfg


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
