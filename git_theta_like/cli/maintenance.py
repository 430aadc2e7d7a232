"""`fsck` and `gc`: integrity checks and garbage collection of the local store."""

from __future__ import annotations

import sys

import click

from git_theta_like.cli.common import open_repo


@click.command("fsck")
@click.option("--remote", "check_remote", is_flag=True, help="Also check that the remote has every object.")
@click.option("--remote-name", default=None, help="Which remote (default: the branch's remote, or origin).")
def fsck_cmd(check_remote: bool, remote_name: str | None) -> None:
    """Check that every object every reachable manifest needs exists and is intact.

    Exit status 1 on any problem, with the commits, files and tensors it affects.
    """
    from git_theta_like.maintenance.fsck import format_report
    from git_theta_like.maintenance.fsck import fsck as run_fsck

    report = run_fsck(open_repo(), remote_name, check_remote)
    click.echo(format_report(report))
    if not report.ok:
        sys.exit(1)


@click.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be deleted.")
@click.option(
    "--prune",
    "grace",
    default="1h",
    show_default=True,
    help="Keep objects younger than this (e.g. 30m, 2h, now).",
)
@click.option(
    "--wait",
    default="30s",
    show_default=True,
    help="How long to wait for git commands that are writing objects (e.g. 10s, 5m, now).",
)
@click.option(
    "--shared-storage",
    is_flag=True,
    help="The store (lfs.storage) is shared with other repositories: keep what each needs.",
)
def gc_cmd(dry_run: bool, grace: str, wait: str, shared_storage: bool) -> None:
    """Delete local objects that no reachable manifest needs.

    Roots: every ref of every namespace (branches, tags, remotes, notes, stash, replace,
    refs/original), every reflog, and each worktree's HEAD, index and reflog. gc waits for git
    commands that are writing objects (a `git add` in flight), then stops with an error.
    """
    from git_theta_like.display import human_size, printable
    from git_theta_like.maintenance.gc import gc as run_gc

    repo = open_repo()
    grace_s, wait_s = _duration(grace), _duration(wait)
    report = run_gc(repo, dry_run=dry_run, grace=grace_s, wait=wait_s, shared_storage=shared_storage)
    for message in report.invalid:
        click.echo(f"warning: {printable(message)}", err=True)
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"git-theta-like gc: kept {report.kept} object(s), {verb} {report.deleted} "
        f"({human_size(report.freed)}), {report.tmp_removed} stale temp file(s); "
        f"{report.skipped_foreign} git-lfs object(s) left to git lfs prune"
    )


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text == "now":
        return 0.0
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{text!r} is not a duration like 30m, 2h, 7d or now") from None
