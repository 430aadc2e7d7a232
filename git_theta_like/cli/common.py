"""What every command family shares: opening the repository, thread settings for the filters."""

from __future__ import annotations

import os

from git_theta_like.gitio.repo import Repo


def single_threaded_blas() -> None:
    """We spread work over cores ourselves; BLAS threads on top of ours only contend.
    Must run before numpy is imported (cli/__init__.py does it for SINGLE_THREADED_BLAS)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def open_repo() -> Repo:
    """The repository of the current directory."""
    return Repo(".")
