"""`install`, `uninstall`, `track`, `untrack` and `add`: setting a repository up for checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from git_theta_like.cli.common import open_repo
from git_theta_like.errors import ThetaLikeError


@click.command()
@click.option("--global", "global_", is_flag=True, help="Configure for every repository of this user.")
@click.option("--no-hooks", is_flag=True, help="Only set the git config; leave .git/hooks alone.")
def install(global_: bool, no_hooks: bool) -> None:
    """Configure git's filter, diff and merge drivers (repository-local by default) and hooks."""
    from git_theta_like.gitio import install as inst

    if global_:
        inst.write_config(inst.global_config())
        click.echo("git-theta-like: configured globally (~/.gitconfig).")
        try:
            repo = open_repo()
        except ThetaLikeError:
            return
    else:
        repo = open_repo()
        inst.write_config(repo.git.config)
        click.echo(f"git-theta-like: configured {repo.common_dir}.")
    from git_theta_like.store import register_repo

    register_repo(repo)  # gc can then tell a store shared with other repositories (lfs.storage)
    if not no_hooks:
        for note in inst.install_hooks(repo):
            click.echo(f"git-theta-like: {note}")


@click.command()
@click.option("--global", "global_", is_flag=True, help="Remove the global configuration.")
def uninstall(global_: bool) -> None:
    """Remove the driver configuration and our hooks (chained hooks are put back)."""
    from git_theta_like.gitio import install as inst

    if global_:
        inst.remove_config(inst.global_config())
        return
    repo = open_repo()
    inst.remove_config(repo.git.config)
    inst.uninstall_hooks(repo)


def _attributes_path() -> Path:
    repo = open_repo()
    if repo.workdir is None:
        raise ThetaLikeError("track needs a repository with a work tree")
    return repo.workdir / ".gitattributes"


def _scoped(attributes_file: Path, patterns: tuple[str, ...]) -> list[str]:
    """The patterns as the root .gitattributes holds them: given in a subdirectory, a pattern is
    scoped to it, as git-lfs's `track` scopes it (see attributes.scope_pattern)."""
    from git_theta_like.gitio import attributes

    root = attributes_file.parent.resolve()
    try:
        prefix = Path.cwd().resolve().relative_to(root).as_posix()
    except ValueError:
        prefix = ""  # outside the work tree (in the git dir, say): patterns as given
    try:
        return [attributes.scope_pattern(p, prefix) for p in patterns]
    except ValueError as e:
        raise ThetaLikeError(str(e)) from None


@click.command()
@click.argument("patterns", nargs=-1)
def track(patterns: tuple[str, ...]) -> None:
    """Track files matching PATTERNS (gitattributes patterns, e.g. "*.safetensors").

    Patterns go into the root .gitattributes; run in a subdirectory, they are scoped to it (as
    git-lfs scopes them): "*.bin" in models/ tracks models/**/*.bin. With no pattern, list the
    tracked patterns.
    """
    from git_theta_like.gitio import attributes

    path = _attributes_path()
    if not patterns:
        for p in attributes.tracked_patterns(path):
            click.echo(p)
        return
    scoped = _scoped(path, patterns)
    changed = attributes.track(path, scoped)
    for p in scoped:
        click.echo(f'Tracking "{p}"' if p in changed else f'"{p}" already tracked')
    _install_if_missing()
    if changed:
        click.echo("Stage .gitattributes with the checkpoints: git add .gitattributes")


def _install_if_missing() -> None:
    """`track` before `install` would let `git add` store the raw file (the attributes name a
    filter git does not know): configure the drivers here as `install` does, and say so."""
    from git_theta_like.gitio import install as inst
    from git_theta_like.gitio.attributes import DRIVER

    repo = open_repo()
    if repo.config_get(f"filter.{DRIVER}.process"):
        return
    inst.write_config(repo.git.config)
    click.echo(
        f"git-theta-like: the {DRIVER} filter was not configured here: configured {repo.common_dir} "
        "(as git theta-like install does)"
    )
    for note in inst.install_hooks(repo):
        click.echo(f"git-theta-like: {note}")


@click.command()
@click.argument("patterns", nargs=-1, required=True)
def untrack(patterns: tuple[str, ...]) -> None:
    """Stop tracking files matching PATTERNS (files already committed stay as they are)."""
    from git_theta_like.gitio import attributes

    path = _attributes_path()
    scoped = _scoped(path, patterns)
    removed = attributes.untrack(path, scoped)
    for p in scoped:
        click.echo(f'Untracking "{p}"' if p in removed else f'"{p}" was not tracked')


@click.command()
@click.argument("paths", nargs=-1, required=True)
@click.option(
    "--lora",
    "adapter",
    type=click.Path(exists=True),
    help="A PEFT LoRA adapter (directory or adapter_model.safetensors) merged into these "
    "checkpoints: its exact factors are used to store the changed weights.",
)
def add(paths: tuple[str, ...], adapter: str | None) -> None:
    """`git add` PATHS, optionally telling the filter which LoRA adapter was merged."""
    import os
    import subprocess

    env = dict(os.environ)
    if adapter:
        from git_theta_like.filters.lora import load_adapter

        n = len(load_adapter(adapter))  # fail early, with a clear message, on a bad adapter
        env["GIT_THETA_LIKE_LORA"] = os.path.abspath(adapter)
        click.echo(f"git-theta-like: using {n} LoRA factor pairs from {adapter}", err=True)
    sys.exit(subprocess.call(["git", "add", "--", *paths], env=env))
