"""The `git theta-like` command line. Thin: each command calls one function elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import pygit2

from git_theta_like import __version__
from git_theta_like.errors import ThetaLikeError

# Commands whose modules are imported only when used: `git theta-like` starts fast and the
# filter process sets its thread options before numpy is imported.
LAZY_COMMANDS = {
    "diff": "git_theta_like.diff_commands:diff_cmd",
    "log": "git_theta_like.diff_commands:log_cmd",
    "diff-driver": "git_theta_like.diff_commands:diff_driver_cmd",
    "diff-textconv": "git_theta_like.diff_commands:diff_textconv_cmd",
    "merge": "git_theta_like.merge.commands:merge_cmd",
    "merge-driver": "git_theta_like.merge.commands:merge_driver_cmd",
    "mergetool": "git_theta_like.merge.commands:mergetool_cmd",
    "migrate": "git_theta_like.migrate:migrate_cmd",
}


class _Group(click.Group):
    """Turns our errors into one clear line and exit status 1 (2 for usage errors)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            import importlib

            module, _, attr = LAZY_COMMANDS[cmd_name].partition(":")
            return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]
        return super().get_command(ctx, cmd_name)

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except (ThetaLikeError, pygit2.GitError, OSError) as e:
            click.echo(f"git-theta-like: error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="git-theta-like")
def main() -> None:
    """Version-control ML checkpoints with Git: per-tensor, lossless, deduplicated.

    Run as `git theta-like COMMAND`. Start with `git theta-like install`, then
    `git theta-like track "*.safetensors"`.
    """


def _single_threaded_blas() -> None:
    """We spread work over cores ourselves; BLAS threads on top of ours only contend.
    Must run before numpy is imported."""
    import os

    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def _repo():  # type: ignore[no-untyped-def]
    from git_theta_like.gitio.repo import Repo

    return Repo(".")


@main.command()
@click.option("--global", "global_", is_flag=True, help="Configure for every repository of this user.")
@click.option("--no-hooks", is_flag=True, help="Only set the git config; leave .git/hooks alone.")
def install(global_: bool, no_hooks: bool) -> None:
    """Configure git's filter, diff and merge drivers (repository-local by default) and hooks."""
    from git_theta_like.gitio import install as inst

    if global_:
        inst.write_config(inst.global_config())
        click.echo("git-theta-like: configured globally (~/.gitconfig).")
        try:
            repo = _repo()
        except ThetaLikeError:
            return
    else:
        repo = _repo()
        inst.write_config(repo.git.config)
        click.echo(f"git-theta-like: configured {repo.common_dir}.")
    if not no_hooks:
        for note in inst.install_hooks(repo):
            click.echo(f"git-theta-like: {note}")


@main.command()
@click.option("--global", "global_", is_flag=True, help="Remove the global configuration.")
def uninstall(global_: bool) -> None:
    """Remove the driver configuration and our hooks (chained hooks are put back)."""
    from git_theta_like.gitio import install as inst

    if global_:
        inst.remove_config(inst.global_config())
        return
    repo = _repo()
    inst.remove_config(repo.git.config)
    inst.uninstall_hooks(repo)


def _attributes_path() -> Path:
    repo = _repo()
    if repo.workdir is None:
        raise ThetaLikeError("track needs a repository with a work tree")
    return repo.workdir / ".gitattributes"


@main.command()
@click.argument("patterns", nargs=-1)
def track(patterns: tuple[str, ...]) -> None:
    """Track files matching PATTERNS (gitattributes patterns, e.g. "*.safetensors").

    With no pattern, list the tracked patterns.
    """
    from git_theta_like.gitio import attributes

    path = _attributes_path()
    if not patterns:
        for p in attributes.tracked_patterns(path):
            click.echo(p)
        return
    changed = attributes.track(path, list(patterns))
    for p in patterns:
        click.echo(f'Tracking "{p}"' if p in changed else f'"{p}" already tracked')
    if changed:
        click.echo("Stage .gitattributes with the checkpoints: git add .gitattributes")


@main.command()
@click.argument("patterns", nargs=-1, required=True)
def untrack(patterns: tuple[str, ...]) -> None:
    """Stop tracking files matching PATTERNS (files already committed stay as they are)."""
    from git_theta_like.gitio import attributes

    removed = attributes.untrack(_attributes_path(), list(patterns))
    for p in patterns:
        click.echo(f'Untracking "{p}"' if p in removed else f'"{p}" was not tracked')


@main.command()
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
        from git_theta_like.lora import load_adapter

        n = len(load_adapter(adapter))  # fail early, with a clear message, on a bad adapter
        env["GIT_THETA_LIKE_LORA"] = os.path.abspath(adapter)
        click.echo(f"git-theta-like: using {n} LoRA factor pairs from {adapter}", err=True)
    sys.exit(subprocess.call(["git", "add", "--", *paths], env=env))


@main.command()
@click.argument("rev_or_path")
@click.argument("path", required=False)
def show(rev_or_path: str, path: str | None) -> None:
    """Per-tensor storage of a checkpoint: codec, stored bytes, delta chain depth.

    `show PATH` reads the staged version, `show REV PATH` the version at REV.
    """
    from git_theta_like.tracked import describe, load_manifest

    rev, p = (None, rev_or_path) if path is None else (rev_or_path, path)
    click.echo(describe(load_manifest(_repo(), p, rev), p))


@main.command("ls-files")
@click.argument("rev", required=False)
@click.option("-v", "--verbose", is_flag=True, help="Also list every tensor: codec, stored bytes, depth.")
def ls_files(rev: str | None, verbose: bool) -> None:
    """List tracked checkpoints (staged, or at REV): tensors, logical size and stored size."""
    from git_theta_like.tracked import describe, human_size, tracked_files

    files = tracked_files(_repo(), rev)
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
    from git_theta_like.sharded import sharded_models

    for model in sharded_models(_repo(), {f.path: f.manifest for f in files}, rev):
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


@main.command("filter-process", hidden=True)
def filter_process() -> None:
    """Git's long-running filter (filter.theta-like.process); not for interactive use."""
    _single_threaded_blas()
    from git_theta_like.gitio.filter_process import serve

    sys.exit(serve())


@main.command(hidden=True)
@click.argument("path", required=False, default="")
def clean(path: str) -> None:
    """Clean one file: checkpoint on stdin, manifest on stdout."""
    _single_threaded_blas()
    from git_theta_like.formats import ByteReader
    from git_theta_like.gitio.filter_process import _previous_manifest, make_engine

    repo = _repo()
    with make_engine(repo) as engine:
        out = engine.clean(ByteReader(sys.stdin.buffer), _previous_manifest(repo, path), path)
    sys.stdout.buffer.write(out)


@main.command(hidden=True)
@click.argument("path", required=False, default="")
def smudge(path: str) -> None:
    """Smudge one file: manifest on stdin, checkpoint on stdout."""
    from git_theta_like.filters import Engine
    from git_theta_like.manifest import Manifest, is_manifest

    data = sys.stdin.buffer.read()
    if not is_manifest(data):
        sys.stdout.buffer.write(data)
        return
    repo = _repo()
    with Engine(repo.store) as engine:
        engine.smudge(Manifest.from_bytes(data), sys.stdout.buffer.write)


@main.command("pre-push", hidden=True)
@click.argument("remote")
@click.argument("url", required=False)
def pre_push(remote: str, url: str | None) -> None:
    """The pre-push hook: upload the objects the pushed commits' manifests need."""
    from git_theta_like.store import sync

    updates = [line for line in sys.stdin.read().splitlines() if line.strip()]
    n = sync.pre_push(_repo(), remote, url, updates)
    if n:
        click.echo(f"git-theta-like: uploaded {n} object(s) to {remote}", err=True)


@main.command()
@click.argument("remote", required=False)
@click.argument("revs", nargs=-1)
@click.option(
    "--include", "-I", multiple=True, help="Only tensors whose name matches this glob (repeatable)."
)
@click.option(
    "--exclude", "-X", multiple=True, help="Skip tensors whose name matches this glob (repeatable)."
)
@click.option("--path", "paths", multiple=True, help="Only these checkpoint files (globs, repeatable).")
def fetch(
    remote: str | None,
    revs: tuple[str, ...],
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    paths: tuple[str, ...],
) -> None:
    """Download the objects that checking out REVS (default HEAD) needs, for offline work.

    REMOTE defaults to theta-like.remote, the branch's remote, or origin. With --include /
    --exclude only some tensors are fetched (the rest can be fetched later).
    """
    from git_theta_like.store import sync

    repo = _repo()
    if remote is not None and repo.config_get(f"remote.{remote}.url") is None:
        # `fetch HEAD~1` without a remote: the first argument is a revision
        revs, remote = (remote, *revs), None
    r = sync.fetch(
        repo, remote, list(revs), list(include) or None, list(exclude) or None, list(paths) or None
    )
    click.echo(
        f"git-theta-like: {r.files} checkpoint(s), {r.objects} object(s) needed, {r.downloaded} downloaded"
    )


@main.command()
@click.argument("paths", nargs=-1)
def checkout(paths: tuple[str, ...]) -> None:
    """Materialise checkpoints whose working-tree file is still a manifest (after a clone with
    GIT_THETA_LIKE_SKIP_SMUDGE=1 or without git-theta-like installed), downloading what is needed."""
    from git_theta_like.materialize import materialize

    for path in materialize(_repo(), list(paths)):
        click.echo(f"git-theta-like: checked out {path}")


@main.command("fsck")
@click.option("--remote", "check_remote", is_flag=True, help="Also check that the remote has every object.")
@click.option("--remote-name", default=None, help="Which remote (default: the branch's remote, or origin).")
def fsck_cmd(check_remote: bool, remote_name: str | None) -> None:
    """Check that every object every reachable manifest needs exists and is intact.

    Exit status 1 on any problem, with the commits, files and tensors it affects.
    """
    from git_theta_like.fsck import format_report
    from git_theta_like.fsck import fsck as run_fsck

    report = run_fsck(_repo(), remote_name, check_remote)
    click.echo(format_report(report))
    if not report.ok:
        sys.exit(1)


@main.command("gc")
@click.option("--dry-run", "-n", is_flag=True, help="Only report what would be deleted.")
@click.option(
    "--prune",
    "grace",
    default="1h",
    show_default=True,
    help="Keep objects younger than this (e.g. 30m, 2h, now).",
)
def gc_cmd(dry_run: bool, grace: str) -> None:
    """Delete local objects that no reachable manifest (refs, reflogs, stash, index) needs."""
    from git_theta_like.gc import gc as run_gc
    from git_theta_like.tracked import human_size

    report = run_gc(_repo(), dry_run=dry_run, grace=_duration(grace))
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
