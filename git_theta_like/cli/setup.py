"""`install`, `uninstall`, `track`, `untrack` and `add`: setting a repository up for checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from git_theta_like.cli.common import note, open_repo
from git_theta_like.errors import ThetaLikeError, WorkTreeRequiredError


def _scope(local: bool, global_: bool) -> bool:
    """Whether --global was chosen (--local, the default, and --global exclude each other)."""
    if local and global_:
        raise click.UsageError("--local and --global exclude each other")
    return global_


@click.command()
@click.option("--local", is_flag=True, help="Configure this repository only (the default).")
@click.option("--global", "global_", is_flag=True, help="Configure for every repository of this user.")
@click.option("--no-hooks", is_flag=True, help="Only set the git config; leave .git/hooks alone.")
def install(local: bool, global_: bool, no_hooks: bool) -> None:
    """Configure git's filter, diff and merge drivers (repository-local by default) and hooks."""
    from git_theta_like.cli.manpage import install_pages
    from git_theta_like.gitio import install as inst

    install_pages()  # `git help theta-like` (man) finds them next to this environment's bin

    if _scope(local, global_):
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
        for n in inst.install_hooks(repo):
            click.echo(f"git-theta-like: {n}")


@click.command()
@click.option("--local", is_flag=True, help="Remove this repository's configuration and hooks (default).")
@click.option("--global", "global_", is_flag=True, help="Remove the global configuration (~/.gitconfig).")
def uninstall(local: bool, global_: bool) -> None:
    """Remove the driver configuration and the hooks install put in (the hooks they chained are
    put back; other hooks stay)."""
    from pathlib import Path

    from git_theta_like.gitio import install as inst

    if _scope(local, global_):
        inst.remove_config(inst.global_config())
        click.echo("git-theta-like: removed the global configuration (~/.gitconfig).")
        left = inst.ours(inst.configured(Path.cwd()))
    else:
        repo = open_repo()
        inst.remove_config(repo.git.config)
        click.echo(f"git-theta-like: removed the configuration of {repo.common_dir}.")
        for n in inst.uninstall_hooks(repo):
            click.echo(f"git-theta-like: {n}")
        left = inst.ours(inst.configured(repo.workdir or repo.git_dir))
    scopes = sorted({scope for _, scope in left.values()})
    if scopes:
        where = " and ".join(scopes)
        hint = "git theta-like uninstall --global" if "global" in scopes else "git config --unset"
        note(f"the drivers are still configured in the {where} config ({hint} removes them)")


def _attributes_path() -> Path:
    repo = open_repo()
    if repo.workdir is None:
        raise WorkTreeRequiredError("this operation must be run in a work tree (track)")
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
@click.option("--dry-run", "-d", is_flag=True, help="Say what would be done (as --verbose); change nothing.")
@click.option("--verbose", "-v", is_flag=True, help="List the staged files each new pattern selects.")
def track(patterns: tuple[str, ...], dry_run: bool, verbose: bool) -> None:
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
    changed = attributes.track(path, scoped, dry_run=dry_run)
    for p in scoped:
        click.echo(f'Tracking "{p}"' if p in changed else f'"{p}" already tracked')
        if p in changed and (verbose or dry_run):
            _list_matches(p)
    _install_if_missing(dry_run)
    if changed and not dry_run:
        click.echo("Stage .gitattributes with the checkpoints: git add .gitattributes")


def _list_matches(pattern: str) -> None:
    """The files of the index a new pattern selects (git-lfs's `track --verbose` lines): git
    stores them as checkpoints from their next `git add --renormalize`."""
    from git_theta_like.display import printable
    from git_theta_like.gitio.attributes import pattern_matches
    from git_theta_like.gitio.scan import index_files

    found = [p for p in sorted(index_files(open_repo())) if pattern_matches(pattern, p)]
    click.echo(f"Found {len(found)} files previously added to Git matching pattern: {printable(pattern)}")
    for p in found:
        click.echo(f'  "{printable(p)}"')
    if found:
        click.echo("  (those added without the filter are converted by git add --renormalize -- PATH)")


def _install_if_missing(dry_run: bool = False) -> None:
    """`track` before `install` would let `git add` store the raw file (the attributes name a
    filter git does not know): configure the drivers here as `install` does, and say so."""
    from git_theta_like.gitio import install as inst
    from git_theta_like.gitio.attributes import DRIVER

    repo = open_repo()
    if repo.config_get(f"filter.{DRIVER}.process"):
        return
    if dry_run:
        click.echo(f"git-theta-like: would configure the {DRIVER} drivers and hooks of {repo.common_dir}")
        return
    inst.write_config(repo.git.config)
    click.echo(
        f"git-theta-like: the {DRIVER} filter was not configured here: configured {repo.common_dir} "
        "(as git theta-like install does)"
    )
    for n in inst.install_hooks(repo):
        click.echo(f"git-theta-like: {n}")


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
