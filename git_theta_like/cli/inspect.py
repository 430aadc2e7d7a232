"""`show`, `ls-files` and `status`: what is tracked, how it is stored and what changed."""

from __future__ import annotations

import click

from git_theta_like.cli.common import open_repo


@click.command()
@click.argument("rev_or_path")
@click.argument("path", required=False)
def show(rev_or_path: str, path: str | None) -> None:
    """Per-tensor storage of a checkpoint: codec, stored bytes, delta chain depth.

    `show PATH` reads the staged version, `show REV PATH` the version at REV.
    """
    from git_theta_like.gitio.scan import load_manifest
    from git_theta_like.semdiff.listing import describe

    rev, p = (None, rev_or_path) if path is None else (rev_or_path, path)
    click.echo(describe(load_manifest(open_repo(), p, rev), p))


@click.command("ls-files")
@click.argument("rev", required=False)
@click.option("-v", "--verbose", is_flag=True, help="Also list every tensor: codec, stored bytes, depth.")
def ls_files(rev: str | None, verbose: bool) -> None:
    """List tracked checkpoints (staged, or at REV): tensors, logical size and stored size.

    A tracked path whose blob is not a manifest (added without the filter) is listed as
    "not converted".
    """
    from git_theta_like.display import human_size, printable
    from git_theta_like.gitio.scan import tracked_files, unconverted_files
    from git_theta_like.semdiff.listing import describe

    files = tracked_files(open_repo(), rev)
    raw = unconverted_files(open_repo(), rev)
    if not files and not raw:
        click.echo("no tracked checkpoints", err=True)
        return
    lines: list[tuple[str, str]] = []
    for u in raw:
        note = f"not converted: {u.what} is in Git; fix: {u.fix}"
        lines.append(
            (
                u.path,
                printable(
                    f"{u.path}: {note}"
                    if verbose
                    else f"{'?':>8} {human_size(u.size):>11} {'-':>11}  {'-':<12} {u.path}  ({note})"
                ),
            )
        )
    for f in files:
        m = f.manifest
        if verbose:
            lines.append((f.path, describe(m, f.path) if m else printable(f"{f.path}: {f.error}")))
        elif m is None:
            row = f"{'?':>8} {'?':>11} {'?':>11}  {'invalid':<12} {f.path}  ({f.error})"
            lines.append((f.path, printable(row)))
        else:
            lines.append(
                (
                    f.path,
                    printable(
                        f"{len(m.tensors):>8} {human_size(m.size):>11} {human_size(m.stored_size):>11}  "
                        f"{m.format:<12} {f.path}"
                    ),
                )
            )
    if not verbose:
        click.echo(f"{'tensors':>8} {'size':>11} {'stored':>11}  {'format':<12} path")
    for _, line in sorted(lines):
        click.echo(line)
    if verbose:
        return
    from git_theta_like.formats.sharded import sharded_models

    for model in sharded_models(open_repo(), {f.path: f.manifest for f in files}, rev):
        present = [m for m in model.shards.values() if m is not None]
        size = sum(m.size for m in present)
        stored = sum(m.stored_size for m in present)
        click.echo(
            printable(
                f"{model.index_path}: one model in {len(model.shards)} shards, {model.tensor_count} tensors, "
                f"{human_size(size)}, stored {human_size(stored)}"
                + (
                    ""
                    if len(present) == len(model.shards)
                    else f" ({len(model.shards) - len(present)} shard(s) untracked)"
                )
            )
        )


@click.command("status")
def status() -> None:
    """Tracked checkpoints staged, modified in the working tree, or not converted (as `git lfs
    status` lists LFS files): with their sizes and where each version is (Theta: a manifest,
    Git: a blob that is not one, File: the working tree)."""
    from git_theta_like.gitio.status import Change, Version, checkpoint_status

    st = checkpoint_status(open_repo())

    from git_theta_like.display import printable

    def side(v: Version) -> str:
        from git_theta_like.display import human_size

        what = f"{v.tensors} tensors, " if v.tensors is not None else ""
        return f"{v.where}: {v.oid[:7] + ', ' if v.oid else ''}{what}{human_size(v.size)}"

    def line(c: Change) -> str:
        sides = " -> ".join(side(v) for v in (c.old, c.new) if v is not None)
        return "\t" + printable(f"{c.path} ({c.status}; {sides})")

    click.echo(st.branch)
    if st.clean:
        click.echo("\nno changes to tracked checkpoints")
        return
    if st.staged:
        click.echo("\nCheckpoints to be committed:\n")
        for c in st.staged:
            click.echo(line(c))
    if st.unstaged:
        click.echo("\nCheckpoints not staged for commit:\n")
        for c in st.unstaged:
            click.echo(line(c))
    if st.unconverted:
        from git_theta_like.display import human_size

        click.echo("\nCheckpoints not converted (their blob in Git is not a manifest):\n")
        for u in st.unconverted:
            click.echo(
                "\t"
                + printable(f"{u.path} (Git: {u.blob[:7]}, {u.what}, {human_size(u.size)}; fix: {u.fix})")
            )
