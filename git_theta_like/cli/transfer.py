"""`fetch`, `push` and `checkout`: objects from and to the remote, checkpoints into the working
tree."""

from __future__ import annotations

import sys

import click

from git_theta_like.cli.common import error, note, open_repo


@click.command()
@click.argument("remote", required=False)
@click.argument("revs", nargs=-1)
@click.option(
    "--include", "-I", multiple=True, help="Only tensors whose name matches this glob (repeatable)."
)
@click.option(
    "--exclude", "-X", multiple=True, help="Skip tensors whose name matches this glob (repeatable)."
)
@click.option(
    "--path",
    "paths",
    multiple=True,
    help="Only checkpoint files these patterns select (gitignore rules, comma-separated, repeatable; "
    "default lfs.fetchinclude).",
)
@click.option(
    "--exclude-path",
    "exclude_paths",
    multiple=True,
    help="Skip checkpoint files these patterns select (default lfs.fetchexclude).",
)
@click.option(
    "--all", "every_ref", is_flag=True, help="Every version any ref reaches (before pushing to a new host)."
)
def fetch(
    remote: str | None,
    revs: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    paths: tuple[str, ...],
    exclude_paths: tuple[str, ...],
    every_ref: bool,
) -> None:
    """Download the objects that checking out REVS (default HEAD) needs, for offline work.

    REMOTE defaults to theta-like.remote, the branch's remote, or origin (objects it lacks are
    looked for on the other remotes). With --include / --exclude only some tensors are fetched
    (the rest can be fetched later); --path / --exclude-path select files, by default as
    git-lfs's lfs.fetchinclude / lfs.fetchexclude do (an empty pattern clears the setting);
    with --all, those of every commit any branch or tag reaches, as `git lfs fetch --all`
    (which ignores those two settings).
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
        list(paths) if paths else None,
        every_ref=every_ref,
        exclude_paths=list(exclude_paths) if exclude_paths else None,
    )
    click.echo(
        f"git-theta-like: {r.files} checkpoint(s), {r.objects} object(s) needed, {r.downloaded} downloaded"
    )


@click.command()
@click.argument("remote", required=False)
@click.option(
    "--include",
    "-I",
    multiple=True,
    help="Only checkpoint files these path patterns select (gitignore rules, comma-separated, "
    "repeatable; default lfs.fetchinclude).",
)
@click.option(
    "--exclude", "-X", multiple=True, help="Skip files these path patterns select (default lfs.fetchexclude)."
)
def pull(remote: str | None, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Download the objects of the checkpoints at HEAD and check out those left as manifests, as
    `git lfs pull` (fetch, then checkout).

    REMOTE defaults as for fetch. --include / --exclude select files by path, as git-lfs's do
    (not tensors, as fetch's do): by default lfs.fetchinclude / lfs.fetchexclude; an empty
    pattern clears the setting. The files left out stay as they are.
    """
    from git_theta_like.filters.checkout import pull as run_pull

    inc, exc = (list(include) if include else None), (list(exclude) if exclude else None)
    r, done = run_pull(open_repo(), remote, inc, exc, note)
    click.echo(
        f"git-theta-like: {r.files} checkpoint(s), {r.objects} object(s) needed, {r.downloaded} downloaded"
    )
    for path in done:
        click.echo(f"git-theta-like: checked out {path}")


@click.command()
@click.argument("remote")
@click.argument("refs", nargs=-1)
@click.option("--all", "every", is_flag=True, help="Every commit REFS reach (all branches and tags if none).")
@click.option("--object-id", "object_id", is_flag=True, help="The arguments after REMOTE are object ids.")
def push(remote: str, refs: tuple[str, ...], every: bool, object_id: bool) -> None:
    """Upload the objects REMOTE lacks, even when git says everything is up to date, and anchor
    them on its theta-like-objects branch (as `git lfs push`).

    Without --all: the objects of the commits REFS (default: the current branch) reach that
    REMOTE's remote-tracking refs do not. With --all: of every commit REFS reach, or every
    branch and tag when none is given (repairs a remote that lost objects). With --object-id:
    the objects named.
    """
    from git_theta_like.lfs import sync

    if object_id and (every or not refs):
        raise click.UsageError("--object-id needs object ids, and does not go with --all")
    r = sync.push(open_repo(), remote, list(refs), every=every, object_ids=list(refs) if object_id else None)
    for oid in r.sent:
        click.echo(f"uploaded {oid}")
    click.echo(
        f"git-theta-like: {r.objects} object(s) needed, {r.uploaded} uploaded to {remote}, "
        f"{r.anchored} newly anchored"
    )
    if r.lost:
        shown = ", ".join(r.lost[:10]) + (" ..." if len(r.lost) > 10 else "")
        error(
            f"{len(r.lost)} object(s) are neither in the local store nor on "
            f"{remote} (nor on the other remotes); they cannot be pushed from here: {shown}"
        )
        sys.exit(1)


@click.command()
@click.argument("paths", nargs=-1)
def checkout(paths: tuple[str, ...]) -> None:
    """Materialise checkpoints whose working-tree file is still a manifest (after a clone with
    GIT_THETA_LIKE_SKIP_SMUDGE=1 or without git-theta-like installed) or was left truncated (a
    checkout that ran out of disk space), downloading what is needed."""
    from git_theta_like.filters.checkout import materialize

    for path in materialize(open_repo(), list(paths), note):
        click.echo(f"git-theta-like: checked out {path}")
