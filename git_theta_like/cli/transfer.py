"""`fetch` and `checkout`: objects from the remote, checkpoints into the working tree."""

from __future__ import annotations

import click

from git_theta_like.cli.common import open_repo


@click.command()
@click.argument("remote", required=False)
@click.argument("revs", nargs=-1)
@click.option(
    "--include", "-I", multiple=True, help="Only tensors whose name matches this glob (repeatable)."
)
@click.option(
    "--exclude", "-X", multiple=True, help="Skip tensors whose name matches this glob (repeatable)."
)
@click.option("--path", "paths", multiple=True, help="Only these checkpoint files (globs, repeatable).")
@click.option(
    "--all", "every_ref", is_flag=True, help="Every version any ref reaches (before pushing to a new host)."
)
def fetch(
    remote: str | None,
    revs: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    paths: tuple[str, ...],
    every_ref: bool,
) -> None:
    """Download the objects that checking out REVS (default HEAD) needs, for offline work.

    REMOTE defaults to theta-like.remote, the branch's remote, or origin (objects it lacks are
    looked for on the other remotes). With --include / --exclude only some tensors are fetched
    (the rest can be fetched later); with --all, those of every commit any branch or tag
    reaches, as `git lfs fetch --all`.
    """
    from git_theta_like.lfs import sync

    repo = open_repo()
    if remote is not None and repo.config_get(f"remote.{remote}.url") is None:
        # `fetch HEAD~1` without a remote: the first argument is a revision
        revs, remote = (remote, *revs), None
    r = sync.fetch(
        repo,
        remote,
        list(revs),
        list(include) or None,
        list(exclude) or None,
        list(paths) or None,
        every_ref=every_ref,
    )
    click.echo(
        f"git-theta-like: {r.files} checkpoint(s), {r.objects} object(s) needed, {r.downloaded} downloaded"
    )


@click.command()
@click.argument("paths", nargs=-1)
def checkout(paths: tuple[str, ...]) -> None:
    """Materialise checkpoints whose working-tree file is still a manifest (after a clone with
    GIT_THETA_LIKE_SKIP_SMUDGE=1 or without git-theta-like installed) or was left truncated (a
    checkout that ran out of disk space), downloading what is needed."""
    from git_theta_like.filters.checkout import materialize

    def warn(msg: str) -> None:
        click.echo(f"git-theta-like: {msg}", err=True)

    for path in materialize(open_repo(), list(paths), warn):
        click.echo(f"git-theta-like: checked out {path}")
