"""Click commands of the merge feature: `merge-driver` (hidden), `merge`, `mergetool`.

Registered at the end of cli.py. Thin: each calls into driver.py, config.py or tool.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import click

from git_theta_like.gitio.repo import Repo
from git_theta_like.merge import config
from git_theta_like.merge.strategies import catalogue
from git_theta_like.merge.strategies.base import PRECISIONS


def _strategies_help() -> str:
    lines = ["\b", "Strategies (for tensors changed on both sides; default average; docs/merging.md):"]
    for s in catalogue():
        lines.append(f"  {s.name:<16} {s.summary}")
        for p in s.params:
            lines.append(f"  {'':<19}{p}")
    return "\n".join(lines)


@click.command(
    "merge",
    context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
    epilog=_strategies_help(),
)
@click.argument("branch", required=False)
@click.option(
    "--strategy", "strategy", metavar="NAME", help="Strategy for every tensor changed on both sides."
)
@click.option(
    "--recipe",
    "recipe_file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="A mergekit YAML config: its models (branches, revisions) merged as it says.",
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy parameter, e.g. density=0.2 (repeatable).",
)
@click.option("--device", metavar="DEVICE", help="auto (default: CUDA when present), cpu, cuda, cuda:N.")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    help="Compute precision (default float32; bfloat16, float16: each step rounded, as mergekit's dtype).",
)
@click.option("-m", "--message", help="The merge commit message.")
@click.option("--edit/--no-edit", default=False, help="Open an editor for the message (default: no).")
@click.argument("git_args", nargs=-1, type=click.UNPROCESSED)
def merge_cmd(
    branch: str | None,
    strategy: str | None,
    recipe_file: str | None,
    sets: tuple[str, ...],
    device: str | None,
    precision: str | None,
    message: str | None,
    edit: bool,
    git_args: tuple[str, ...],
) -> None:
    """`git merge BRANCH...`, merging checkpoints with the given strategy and parameters.

    They override `.theta-like.toml` and git config for this merge. With several branches, an
    N-way (octopus) merge with the strategy git-merge-theta-like (`git merge -s theta-like`).
    With --recipe FILE (a mergekit config), the branches are its models other than HEAD (HEAD:
    one of them, or its base_model); BRANCH..., when given, must be those.
    Extra arguments go to git merge (e.g. --no-ff, --no-commit). Never prompts unless --edit.
    """
    from git_theta_like.merge.compute import check_device_spec

    rest = list(git_args)
    if branch is not None and branch.startswith("-"):
        rest.insert(0, branch)  # an option for git merge, not a branch
        branch = None
    params = config.parse_set(sets, "--set")
    cfg = config.MergeConfig(cli_strategy=strategy, cli_params=params)
    cfg.validate()  # a bad strategy or parameter fails here, before git merge starts
    env = dict(os.environ)
    for key in (
        config.ENV_STRATEGY,
        config.ENV_SET,
        config.ENV_DEVICE,
        config.ENV_PRECISION,
        config.ENV_RECIPE,
    ):
        env.pop(key, None)
    if strategy:
        env[config.ENV_STRATEGY] = strategy
    if params:
        env[config.ENV_SET] = config.encode_set(params)
    if device:
        env[config.ENV_DEVICE] = check_device_spec(device, "--device")
    if precision:
        env[config.ENV_PRECISION] = precision
    # the branches: BRANCH and the arguments after it up to the first option
    branches = [branch] if branch is not None else []
    while branches and rest and not rest[0].startswith("-"):
        branches.append(rest.pop(0))
    if recipe_file is not None:
        if strategy or params:
            raise click.UsageError("--recipe says the strategy and its parameters: no --strategy or --set")
        recipe = config.read_recipe(Repo("."), os.path.abspath(recipe_file))
        if precision and recipe.dtype and precision != recipe.dtype:
            raise click.UsageError(f"--precision {precision} and the recipe's dtype {recipe.dtype} disagree")
        branches = config.recipe_heads(Repo("."), recipe, branches)
        env[config.ENV_RECIPE] = os.path.abspath(recipe_file)
    elif not branches:
        raise click.UsageError("Missing argument 'BRANCH'.")
    cmd = ["git", "merge", "--edit" if edit else "--no-edit"]
    if message:
        cmd += ["-m", message]
    octopus = len(branches) > 1
    if octopus and not any(a in ("-s", "--strategy") or a.startswith(("-s", "--strategy=")) for a in rest):
        from git_theta_like.merge.octopus import STRATEGY

        cmd += ["-s", STRATEGY]
    cmd += [*rest, *branches]
    rc = subprocess.call(cmd, env=env)
    if rc and not octopus:
        rc = _merge_sharded_models(env, commit="--no-commit" not in git_args, edit=edit)
    if rc:
        click.echo(
            "git-theta-like: the merge stopped; for checkpoint conflicts run "
            "`git theta-like mergetool PATH` (see `git status`)",
            err=True,
        )
    sys.exit(rc)


def _merge_sharded_models(env: dict[str, str], commit: bool, edit: bool) -> int:
    """After `git merge` stopped: merge the conflicted sharded models as whole models
    (merge/sharded.py); commit when that leaves no conflict. Returns the exit status."""
    from git_theta_like.errors import ThetaLikeError
    from git_theta_like.merge import sharded

    repo = Repo(".")
    if not (repo.git_dir / "MERGE_HEAD").is_file():
        return 1  # git merge failed before merging anything
    try:
        lines, failed = sharded.resolve_models(repo, env=env)
    except ThetaLikeError as e:
        click.echo(f"git-theta-like: {e}", err=True)
        return 1
    for line in lines:
        click.echo(f"git-theta-like: {line}", err=True)
    if not lines or failed or sharded.unmerged_paths(repo):
        return 1
    if not commit:
        click.echo("git-theta-like: merged; conclude with `git commit` (--no-commit)", err=True)
        return 0
    return subprocess.call(["git", "commit", "--edit" if edit else "--no-edit"])


@click.command("mergetool")
@click.argument("paths", nargs=-1)
@click.option(
    "--resolve",
    "resolve_file",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="Store FILE as the resolution of PATH and mark it resolved.",
)
@click.option(
    "--use",
    type=click.Choice(["ours", "theirs", "base", "merged"]),
    help="Resolve PATH with one version (merged: the automatic merge, ours where it conflicted).",
)
def mergetool_cmd(paths: tuple[str, ...], resolve_file: str | None, use: str | None) -> None:
    """Resolve conflicted checkpoints: write BASE/OURS/THEIRS/MERGED next to each, or resolve.

    Without PATH, every conflicted tracked checkpoint.
    """
    from git_theta_like.merge import sharded, tool

    repo = Repo(".")
    targets = list(paths)
    prefix = _prefix(repo)
    targets = [_repo_path(prefix, p) for p in targets]
    if resolve_file or use:
        if len(targets) != 1:
            raise click.UsageError("--resolve and --use take exactly one PATH")
        if resolve_file:
            resolve_file = os.path.abspath(resolve_file)
        click.echo(tool.resolve(repo, targets[0], resolve_file, use))
        return
    if sharded.in_merge(repo):
        lines, _ = sharded.resolve_models(repo, only=targets or None)
        for line in lines:
            click.echo(line)
        left = sharded.unmerged_paths(repo)
        if lines and not left:
            click.echo("no conflicts left; conclude the merge with `git commit`")
            return
        if lines and targets:
            targets = [t for t in targets if t in left]
            if not targets:
                return
    if not targets:
        found = tool.conflicted(repo)
        targets = sorted(p for p, c in found.items() if c.manifest("ours") is not None)
        if not targets:
            click.echo("no conflicted checkpoints", err=True)
            return
    for t in targets:
        for line in tool.prepare(repo, t):
            click.echo(line)


def _prefix(repo: Repo) -> str:
    """The current directory relative to the work tree (paths on the command line are)."""
    if repo.workdir is None:
        return ""
    rel = os.path.relpath(os.getcwd(), repo.workdir)
    return "" if rel == "." else rel.replace(os.sep, "/") + "/"


def _repo_path(prefix: str, p: str) -> str:
    return os.path.normpath(prefix + p).replace(os.sep, "/")
