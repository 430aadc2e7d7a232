"""The `git theta-like` command line, one module per command family.

Thin: each command parses its arguments, calls one function of a lower room and turns errors
into git-style messages and exit codes. Every family module is imported only when one of its
commands runs, so `git theta-like` starts fast and the filter process sets its thread options
before numpy is imported. May import every other room; nothing imports `cli`.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from git_theta_like import __version__
from git_theta_like.cli.common import VERSION_LINE, error_line
from git_theta_like.errors import ThetaLikeError
from git_theta_like.threads import single_threaded_blas, single_threaded_numpy_blas

# command name -> module:attribute (families: setup, inspect, transfer, diff, merge, migrate,
# publish, maintenance, plumbing)
COMMANDS = {
    "version": "inspect:version",
    "env": "inspect:env",
    "install": "setup:install",
    "uninstall": "setup:uninstall",
    "track": "setup:track",
    "untrack": "setup:untrack",
    "add": "setup:add",
    "show": "inspect:show",
    "ls-files": "inspect:ls_files",
    "status": "inspect:status",
    "fetch": "transfer:fetch",
    "pull": "transfer:pull",
    "push": "transfer:push",
    "checkout": "transfer:checkout",
    "diff": "diff:diff_cmd",
    "log": "diff:log_cmd",
    "merge": "merge:merge_cmd",
    "mergetool": "merge:mergetool_cmd",
    "migrate": "migrate:migrate_cmd",
    "publish": "publish:publish_cmd",
    "export": "publish:export_cmd",
    "fsck": "maintenance:fsck_cmd",
    "gc": "maintenance:gc_cmd",
    "filter-process": "plumbing:filter_process",
    "clean": "plumbing:clean",
    "smudge": "plumbing:smudge",
    "pre-push": "plumbing:pre_push",
    "post-merge": "plumbing:post_merge",
    "diff-driver": "plumbing:diff_driver_cmd",
    "diff-textconv": "plumbing:diff_textconv_cmd",
    "merge-driver": "plumbing:merge_driver_cmd",
}

# Commands that spread tensor work over the cores themselves: BLAS threads on top of theirs only
# contend (and OpenBLAS's idle threads cost CPU at start-up). Set before their module, and so
# numpy, is imported. The merge commands keep torch's threads.
SINGLE_THREADED_BLAS = {"filter-process", "clean", "smudge", "diff", "log", "diff-driver", "diff-textconv"}
SINGLE_THREADED_NUMPY_BLAS = {"merge-driver", "merge", "mergetool"}


class _Group(click.Group):
    """Loads commands lazily. Every error that ends a command is printed here, as git prints
    them (common.error_line): `error: ...` and exit status 1, or `fatal: ...` and 128 where git
    itself dies (not a repository, no work tree, a bad revision); usage errors are click's (2)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        if cmd_name in SINGLE_THREADED_BLAS:
            single_threaded_blas()
        elif cmd_name in SINGLE_THREADED_NUMPY_BLAS:
            single_threaded_numpy_blas()
        cmd = getattr(importlib.import_module(f"git_theta_like.cli.{module}"), attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def invoke(self, ctx: click.Context):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # `git theta-like ls-files | head`: the reader is gone; say nothing, as git does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)
        except KeyboardInterrupt:
            sys.exit(130)
        except (ThetaLikeError, OSError) as e:
            text, status = error_line(e)
            click.echo(text, err=True)
            sys.exit(status)
        except Exception as e:  # pygit2.GitError (pygit2 is imported only by what needs it)
            pygit2 = sys.modules.get("pygit2")
            if pygit2 is None or not isinstance(e, pygit2.GitError):
                raise
            text, status = error_line(e)
            click.echo(text, err=True)
            sys.exit(status)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="git-theta-like", message=VERSION_LINE)
def main() -> None:
    """Version-control ML checkpoints with Git: per-tensor, lossless, deduplicated.

    Run as `git theta-like COMMAND`. Start with `git theta-like install`, then
    `git theta-like track "*.safetensors"`.
    """
