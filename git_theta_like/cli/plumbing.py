"""Commands git and its hooks run (filter process, one-shot clean/smudge, pre-push, diff and
merge drivers); hidden from `--help`, not for interactive use."""

from __future__ import annotations

import os
import sys

import click

from git_theta_like.cli.common import open_repo
from git_theta_like.store import store_of


@click.command("filter-process", hidden=True)
def filter_process() -> None:
    """Git's long-running filter (filter.theta-like.process); not for interactive use. (The
    executable serves it without click: see __main__.py; this is `python -m` and --help.)"""
    from git_theta_like.filters.server import run

    sys.exit(run())


@click.command(hidden=True)
@click.argument("path", required=False, default="")
def clean(path: str) -> None:
    """Clean one file: checkpoint on stdin, manifest on stdout."""
    from git_theta_like.filters import engine_for, staged_previous
    from git_theta_like.formats import ByteReader

    repo = open_repo()
    previous, pointer = staged_previous(repo, path) if path else (None, None)
    with engine_for(repo) as engine:
        out = engine.clean(ByteReader(sys.stdin.buffer), previous, path, lfs_pointer=pointer)
    sys.stdout.buffer.write(out)


@click.command(hidden=True)
@click.argument("path", required=False, default="")
def smudge(path: str) -> None:
    """Smudge one file: manifest on stdin, checkpoint on stdout."""
    from git_theta_like.filters.engine import Engine
    from git_theta_like.manifest import Manifest, is_manifest

    data = sys.stdin.buffer.read()
    if not is_manifest(data):
        sys.stdout.buffer.write(data)
        return
    repo = open_repo()
    with Engine(store_of(repo)) as engine:
        engine.smudge(Manifest.from_bytes(data), sys.stdout.buffer.write)


@click.command("pre-push", hidden=True)
@click.argument("remote")
@click.argument("url", required=False)
def pre_push(remote: str, url: str | None) -> None:
    """The pre-push hook: upload the objects the pushed commits' manifests need."""
    from git_theta_like.lfs import sync

    updates = [line for line in sys.stdin.read().splitlines() if line.strip()]
    r = sync.pre_push(open_repo(), remote, url, updates)
    if r.uploaded:
        click.echo(f"git-theta-like: uploaded {r.uploaded} object(s) to {remote}", err=True)
    if r.anchored:
        click.echo(f"git-theta-like: anchored {r.anchored} object(s) on {remote}", err=True)


@click.command("post-merge", hidden=True)
@click.argument("squash", required=False)
def post_merge(squash: str | None) -> None:
    """The post-merge hook: check out checkpoints a merge left as manifest text (octopus merges)."""
    from git_theta_like.filters.checkout import materialize
    from git_theta_like.lfs import sync

    repo = open_repo()
    if sync.skip_smudge(repo):
        return
    for path in materialize(repo, []):
        click.echo(f"git-theta-like: checked out {path}", err=True)


@click.command("merge-driver", hidden=True)
@click.argument("base")
@click.argument("ours")
@click.argument("theirs")
@click.argument("path")
def merge_driver_cmd(base: str, ours: str, theirs: str, path: str) -> None:
    """Git's merge driver (merge.theta-like.driver = git-theta-like merge-driver %O %A %B %P)."""
    from git_theta_like.merge.driver import main

    rc = main(base, ours, theirs, path)
    # Everything is written, synced and renamed into place; skip torch's interpreter teardown
    # (about half a second per merged file).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


@click.command("diff-driver", hidden=True)
@click.argument("args", nargs=-1)
def diff_driver_cmd(args: tuple[str, ...]) -> None:
    """git's diff driver (diff.theta-like.command): path old-file old-hex old-mode new-file
    new-hex new-mode."""
    from git_theta_like.semdiff.driver import driver_output

    sys.stdout.write(driver_output(open_repo(), list(args)))
    sys.stdout.flush()


@click.command("diff-textconv", hidden=True)
@click.argument("file")
def diff_textconv_cmd(file: str) -> None:
    """git's textconv (diff.theta-like.textconv): a checkpoint as one line per tensor."""
    from git_theta_like.semdiff.textconv import textconv_output

    sys.stdout.buffer.write(textconv_output(file))
    sys.stdout.flush()
