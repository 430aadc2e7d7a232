"""What every command family shares: opening the repository."""

from __future__ import annotations

from git_theta_like.gitio.repo import Repo


def open_repo() -> Repo:
    """The repository of the current directory."""
    return Repo(".")
