"""`git theta-like migrate`: convert git-lfs-tracked checkpoints in history (see migrate.py)."""

from __future__ import annotations

import sys

import click

from git_theta_like.gitio.repo import Repo
from git_theta_like.migrate import migrate, summary


@click.command("migrate")
@click.argument("refs", nargs=-1)
@click.option(
    "--include",
    "-I",
    multiple=True,
    help="Migrate LFS files matching this gitattributes pattern (repeatable). Default: the "
    "filter=lfs patterns of .gitattributes for *.safetensors, *.bin, *.pt, *.pth, *.ckpt, *.gguf.",
)
@click.option("--everything", is_flag=True, help="Rewrite all local branches and tags.")
@click.option("--remote", help="Where missing LFS objects are downloaded from (default: as fetch).")
@click.option(
    "--fixup",
    is_flag=True,
    help="Convert files committed without the filter at paths .gitattributes already gives "
    "filter=theta-like (raw checkpoints, git-lfs pointers), like git lfs migrate import --fixup.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def migrate_cmd(
    refs: tuple[str, ...],
    include: tuple[str, ...],
    everything: bool,
    remote: str | None,
    fixup: bool,
    yes: bool,
) -> None:
    """Convert git-lfs-tracked checkpoints in history to git-theta-like (rewrites history).

    With --fixup, convert instead what was committed without the filter at paths already
    tracked by git-theta-like.

    REFS are branches or tags (default: the current branch). Originals are kept under
    refs/theta-like-migrate/original/.
    """

    if not yes and not sys.stdin.isatty():
        raise click.UsageError("migrate rewrites history: pass --yes to confirm")

    def confirm(question: str) -> bool:
        return click.confirm(question, default=False, err=True)

    repo = Repo(".")
    result = migrate(
        repo, list(include), list(refs), everything, remote, None if yes else confirm, fixup=fixup
    )
    for line in summary(result):
        click.echo(f"git-theta-like: {line}")
