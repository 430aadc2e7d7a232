"""`show` and `ls-files`: what is tracked and how it is stored."""

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
    """List tracked checkpoints (staged, or at REV): tensors, logical size and stored size."""
    from git_theta_like.display import human_size
    from git_theta_like.gitio.scan import tracked_files
    from git_theta_like.semdiff.listing import describe

    files = tracked_files(open_repo(), rev)
    if not files:
        click.echo("no tracked checkpoints", err=True)
        return
    if verbose:
        for f in files:
            click.echo(describe(f.manifest, f.path) if f.manifest else f"{f.path}: {f.error}")
        return
    click.echo(f"{'tensors':>8} {'size':>11} {'stored':>11}  {'format':<12} path")
    for f in files:
        m = f.manifest
        if m is None:
            click.echo(f"{'?':>8} {'?':>11} {'?':>11}  {'invalid':<12} {f.path}  ({f.error})")
            continue
        click.echo(
            f"{len(m.tensors):>8} {human_size(m.size):>11} {human_size(m.stored_size):>11}  "
            f"{m.format:<12} {f.path}"
        )
    from git_theta_like.formats.sharded import sharded_models

    for model in sharded_models(open_repo(), {f.path: f.manifest for f in files}, rev):
        present = [m for m in model.shards.values() if m is not None]
        size = sum(m.size for m in present)
        stored = sum(m.stored_size for m in present)
        click.echo(
            f"{model.index_path}: one model in {len(model.shards)} shards, {model.tensor_count} tensors, "
            f"{human_size(size)}, stored {human_size(stored)}"
            + (
                ""
                if len(present) == len(model.shards)
                else f" ({len(model.shards) - len(present)} shard(s) untracked)"
            )
        )
