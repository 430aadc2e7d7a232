"""Which git command started this process. Git smudges a blob before it hands it to a diff
command or a textconv (diff.c, prep_temp_blob): for a checkpoint that would mean rebuilding both
full versions for every `git diff`. So the filter passes manifests through, unsmudged, when the
nearest git process above it only shows diffs (`diff`, `log`, `show`, `whatchanged`); those
commands never write the working tree. GIT_THETA_LIKE_DIFF_SMUDGE=1 turns that off (for a
difftool that wants the real files)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

DIFF_COMMANDS = frozenset({"diff", "log", "show", "whatchanged"})


# git's own options that take a separate argument (`git -C dir diff`, `git -c k=v log`)
_GIT_OPTS_WITH_ARG = frozenset({"-c", "-C", "--git-dir", "--work-tree", "--namespace", "--config-env"})


def _process_argv(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    except OSError:
        pass
    try:
        p = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.decode("utf-8", "replace").split() or None


def _parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        p = subprocess.run(["ps", "-o", "ppid=", "-p", str(pid)], capture_output=True, timeout=5)
        return int(p.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


def git_subcommand(argv: list[str]) -> str | None:
    """`diff` for `git -c x=y diff HEAD`; None when argv is not a git command line."""
    if not argv or os.path.basename(argv[0]) not in ("git", "git.exe"):
        return None
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in _GIT_OPTS_WITH_ARG:
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            return a
    return None


@functools.cache
def smudge_is_for_diff() -> bool:
    """Whether the nearest git process above this one is a command that only shows diffs
    (then a smudge request is git preparing a temporary file for a diff command or textconv)."""
    if os.environ.get("GIT_THETA_LIKE_DIFF_SMUDGE", "") not in ("", "0", "false", "no"):
        return False
    pid: int | None = os.getppid()
    for _ in range(4):  # through a shell or a wrapper git runs the filter under
        if pid is None or pid <= 1:
            return False
        argv = _process_argv(pid)
        if argv and os.path.basename(argv[0]) in ("git", "git.exe"):
            return git_subcommand(argv) in DIFF_COMMANDS
        pid = _parent_pid(pid)
    return False
