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
        import os
        import threading

        from git_theta_like.filters.server import run

        rc = run()
        # Every answer is sent and every object written and renamed into place (the engine's
        # pools shut down inside run): skip the interpreter's teardown, which git waits for at
        # the end of each command (some 30 ms with numpy and the codecs loaded). Not while a
        # thread still works (a download git stopped waiting for): exiting joins it.
        main_thread = threading.main_thread()
        if all(t is main_thread or t.daemon for t in threading.enumerate()):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        sys.exit(rc)
    if len(sys.argv) == 3 and sys.argv[1] == "diff-textconv" and not sys.argv[2].startswith("-"):
        from git_theta_like.threads import single_threaded_blas

        single_threaded_blas()
        from git_theta_like.semdiff.textconv import serve_textconv

        sys.exit(serve_textconv(sys.argv[2]))
    from git_theta_like.cli import main as cli

    cli()


if __name__ == "__main__":
    main()
