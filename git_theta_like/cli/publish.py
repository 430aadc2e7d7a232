"""`publish` and `export`: a model for people without git-theta-like (see publish.py)."""

from __future__ import annotations

from pathlib import Path

import click

from git_theta_like.cli.common import open_repo


@click.command("publish")
@click.argument("rev", default="HEAD")
@click.option(
    "--remote", "-r", help="Where to push (default: theta-like.remote, the branch's remote, or origin)."
)
@click.option("--branch", "-b", default="published", show_default=True, help="The branch to write.")
@click.option("--no-push", is_flag=True, help="Only write the local branch; upload and push nothing.")
def publish_cmd(rev: str, remote: str | None, branch: str, no_push: bool) -> None:
    """Publish REV (default HEAD) for people without git-theta-like.

    Writes a commit on BRANCH whose tree is REV's with every tracked checkpoint as a standard
    git-lfs file (one whole-file LFS object) and .gitattributes saying filter=lfs; its parent is
    the branch's previous tip. Uploads the whole files to the remote's LFS server and pushes
    BRANCH. Then `git clone -b BRANCH`, from_pretrained(..., revision=BRANCH) or hf_hub_download
    get the checkpoints themselves.
    """
    from git_theta_like.publish import publish, summary

    result = publish(open_repo(), rev, branch, remote, push=not no_push)
    for line in summary(result):
        click.echo(f"git-theta-like: {line}")


@click.command("export")
@click.argument("rev")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
def export_cmd(rev: str, directory: Path) -> None:
    """Write REV's files into DIR (new or empty), checkpoints byte-identical.

    git-lfs files are materialised when their objects are local or on the remote (else left as
    pointers, with a warning); executable bits and symbolic links are kept.
    """
    from git_theta_like.publish import export, export_summary

    for line in export_summary(export(open_repo(), rev, directory)):
        click.echo(f"git-theta-like: {line}")
