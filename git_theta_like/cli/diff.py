"""`git theta-like diff` and `log`: semantic diffs of checkpoints (the work is in semdiff/)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from git_theta_like.cli.common import open_repo
from git_theta_like.errors import RevisionError

FORMATS = click.Choice(["text", "json", "markdown"])


class _RevsAndPaths(click.Command):
    """Keeps what follows `--` apart (click would drop the marker): those are paths."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            i = args.index("--")
            ctx.meta["gtl_paths"] = list(args[i + 1 :])
            args = args[:i]
        else:
            ctx.meta["gtl_paths"] = None
        return super().parse_args(ctx, args)


_DASHDASH_HINT = (
    "Use '--' to separate paths from revisions, like this:\n'git <command> [<revision>...] -- [<file>...]'"
)
_PATH_HINT = "Use 'git <command> -- <path>...' to specify paths that do not exist locally."


def _is_path(repo: Any, arg: str) -> bool:
    """git's test for an argument without `--`: a pathspec with wildcards or magic, or a path
    (relative to the current directory) that exists in the working tree or in the index."""
    if arg.startswith(":") or any(c in arg for c in "*?[\\"):
        return True
    full = Path.cwd() / arg
    if os.path.lexists(full):
        return True
    if repo.workdir is None:
        return False
    rel = os.path.relpath(os.path.abspath(full), repo.workdir).replace(os.sep, "/")
    if rel.startswith("../"):
        return False
    from git_theta_like.gitio.scan import index_files

    staged = index_files(repo)
    return rel in staged or any(p.startswith(rel.rstrip("/") + "/") for p in staged)


def _revs_and_paths(repo: Any, args: tuple[str, ...], max_revs: int) -> tuple[list[str], list[str]]:
    """git's rule: before `--`, arguments are revisions (anything else is a `bad revision`);
    without `--`, leading arguments that name revisions are revisions and the rest must be paths
    that exist (in the working tree or the index): a name that is neither is git's `ambiguous
    argument` error, exit status 128."""
    from git_theta_like.semdiff.sides import is_revision

    after = click.get_current_context().meta.get("gtl_paths")
    if after is not None:
        for a in args:
            if not is_revision(repo, a):
                raise RevisionError(f"bad revision '{a}'")
        return list(args), list(after)
    revs: list[str] = []
    paths: list[str] = []
    for a in args:
        if not paths and len(revs) < max_revs and is_revision(repo, a):
            revs.append(a)
        elif _is_path(repo, a):
            paths.append(a)
        elif not paths:
            raise RevisionError(
                f"ambiguous argument '{a}': unknown revision or path not in the working tree.",
                _DASHDASH_HINT,
            )
        else:
            raise RevisionError(f"{a}: no such path in the working tree.", _PATH_HINT)
    return revs, paths


@click.command("diff", cls=_RevsAndPaths)
@click.argument("args", nargs=-1)
@click.option(
    "--cached", "--staged", "cached", is_flag=True, help="Compare REV_A (default HEAD) with the index."
)
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
@click.option("--stat", is_flag=True, help="One line per checkpoint; reads no object unless --threshold.")
@click.option("--exit-code", is_flag=True, help="Exit 1 when the checkpoints differ, 0 when they do not.")
@click.option("-q", "--quiet", is_flag=True, help="No output; implies --exit-code.")
@click.option(
    "--threshold",
    type=click.FloatRange(min=0.0),
    help="Ignore tensors whose relative change ||new-old||/||old|| is below this value "
    "(they are counted as such, and do not make --exit-code fail).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write a per-layer heat map of relative change to this PNG file "
    "(needs matplotlib: pip install 'git-theta-like[plot]').",
)
@click.option(
    "--merge-preview",
    is_flag=True,
    help="With A...B: what merging B into A would do per tensor (one side, both, conflict; the "
    "strategy chosen) and how the task vectors of tensors both sides changed interfere "
    "(sign disagreement, cosine). --exit-code: exit 1 when the merge would conflict.",
)
def diff_cmd(
    args: tuple[str, ...],
    cached: bool,
    fmt: str,
    stat: bool,
    exit_code: bool,
    quiet: bool,
    threshold: float | None,
    plot: str | None,
    merge_preview: bool,
) -> None:
    """Which tensors of the tracked checkpoints changed, and how.

    \b
    git theta-like diff [--cached] [REV_A [REV_B]] [-- PATH...]
      no revision      index vs working tree (--cached: HEAD vs index)
      REV_A            REV_A vs working tree (--cached: REV_A vs index)
      REV_A REV_B      two commits (also REV_A..REV_B; REV_A...REV_B from their merge base)

    For each changed tensor: fraction of entries changed, ||delta||, relative change
    ||delta||/||old||, max |delta|, cosine similarity and the kind of update (sparse k%, rank r,
    dense); tensors added, removed, renamed, reshaped. Unchanged tensors cost nothing.

    \b
    git theta-like diff A...B --merge-preview [-- PATH...]
      what `git merge B` on A would do, before merging (docs/diff.md, "Merge preview")
    """
    if merge_preview:
        _merge_preview(args, fmt, stat, exit_code or quiet, quiet, cached, threshold, plot)
        return
    from git_theta_like.semdiff.render import RENDERERS
    from git_theta_like.semdiff.sides import diff_sides, remote_fetcher, resolve_sides

    if plot:  # a missing `plot` extra is said before any work
        from git_theta_like.semdiff.render.plot import check_available

        check_available()
    repo = open_repo()
    revs, paths = _revs_and_paths(repo, args, 2)
    old, new = resolve_sides(repo, revs, cached)
    need_stats = not (stat or quiet) or threshold is not None or plot is not None
    result = diff_sides(
        repo,
        old,
        new,
        paths,
        stats=need_stats,
        threshold=threshold,
        fetch=remote_fetcher(repo),
        cwd=Path.cwd(),
    )
    if plot:
        from git_theta_like.semdiff.render.plot import render_plot

        render_plot(result, plot)
    if not quiet:
        click.echo(RENDERERS[fmt](result, stat), nl=False)
    if (exit_code or quiet) and result.differs:
        sys.exit(1)


def _merge_preview(
    args: tuple[str, ...],
    fmt: str,
    stat: bool,
    exit_code: bool,
    quiet: bool,
    cached: bool,
    threshold: float | None,
    plot: str | None,
) -> None:
    from git_theta_like.merge.preview import preview_merge, split_range
    from git_theta_like.merge.preview_render import RENDERERS
    from git_theta_like.semdiff.model import PathFilter
    from git_theta_like.semdiff.sides import remote_fetcher

    for given, flag in ((cached, "--cached"), (threshold is not None, "--threshold"), (plot, "--plot")):
        if given:
            raise click.UsageError(f"--merge-preview does not take {flag}")
    repo = open_repo()
    revs, paths = _revs_and_paths(repo, args, 2)
    if len(revs) != 1 or "..." not in revs[0]:
        raise click.UsageError("--merge-preview needs one range A...B (what merging B into A would do)")
    ours, theirs = split_range(revs[0])
    result = preview_merge(
        repo,
        ours,
        theirs,
        PathFilter(paths, repo.workdir, Path.cwd()),
        stats=not (stat or quiet),
        fetch=remote_fetcher(repo),
    )
    if not quiet:
        click.echo(RENDERERS[fmt](result, stat), nl=False)
    if exit_code and result.conflicts:
        sys.exit(1)


@click.command("log", cls=_RevsAndPaths)
@click.argument("args", nargs=-1)
@click.option("-n", "--max-count", type=click.IntRange(min=1), help="Show at most this many commits.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Output format.")
@click.option(
    "--fast",
    is_flag=True,
    help="Read no object: count changed tensors and show how they were stored instead of the update kinds.",
)
def log_cmd(args: tuple[str, ...], max_count: int | None, fmt: str, fast: bool) -> None:
    """Commits that changed tracked checkpoints: tensors changed, bytes stored, update kinds.

    \b
    git theta-like log [REV | A..B] [-- PATH...]
    Each commit is compared with its first parent.
    """
    from git_theta_like.semdiff.log import iter_log
    from git_theta_like.semdiff.render import LOG_RENDERERS
    from git_theta_like.semdiff.sides import remote_fetcher

    repo = open_repo()
    revs, paths = _revs_and_paths(repo, args, 1)
    entries = list(
        iter_log(
            repo,
            revs[0] if revs else "HEAD",
            paths,
            max_count=max_count,
            stats=not fast,
            fetch=remote_fetcher(repo),
            cwd=Path.cwd(),
        )
    )
    click.echo(LOG_RENDERERS[fmt](entries), nl=False)
