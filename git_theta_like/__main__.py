"""The `git-theta-like` executable. git starts the filter process for every command that touches
a checkpoint, so that one is served without loading the command line (click, the command table):
about 70 ms less per start; likewise the textconv, which `git log -p` runs once per blob and side.
Everything else goes to `cli`."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["filter-process"]:
        from git_theta_like.threads import reuse_freed_memory, single_threaded_blas

        single_threaded_blas()
        reuse_freed_memory()
        from git_theta_like.filters.server import run

        sys.exit(run())
    if len(sys.argv) == 3 and sys.argv[1] == "diff-textconv" and not sys.argv[2].startswith("-"):
        from git_theta_like.threads import single_threaded_blas

        single_threaded_blas()
        from git_theta_like.semdiff.textconv import serve_textconv

        sys.exit(serve_textconv(sys.argv[2]))
    from git_theta_like.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
