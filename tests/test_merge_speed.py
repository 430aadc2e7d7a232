"""Process settings of the merge commands (issue #17, speed): numpy's OpenBLAS runs single-threaded
(the clean a merge drives runs the chooser's small SVDs on its own threads), torch keeps its
threads, and a user's own setting is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys
import click
from git_theta_like.cli import main
main.get_command(click.Context(main), sys.argv[1])
print(os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS"))
"""


def _probe(command: str, **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    e.update(env)
    r = subprocess.run([sys.executable, "-c", PROBE, command], env=e, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("command", ["merge-driver", "merge", "mergetool"])
def test_merge_commands_run_numpy_blas_single_threaded(command: str) -> None:
    # OpenBLAS single-threaded, OpenMP (torch's threads) left alone
    assert _probe(command) == "1 None"


def test_a_users_blas_setting_is_kept() -> None:
    assert _probe("merge-driver", OPENBLAS_NUM_THREADS="3") == "3 None"


def test_other_commands_are_not_touched() -> None:
    assert _probe("version") == "None None"
