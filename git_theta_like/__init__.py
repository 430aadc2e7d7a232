"""git-theta-like: version-control machine-learning checkpoints with plain Git.

Each tensor of a tracked checkpoint is stored once, as a content-addressed Git LFS object;
Git itself stores a small text manifest in place of the file. See docs/ for the user guide.
"""

__version__ = "0.1.0"

from typing import Any

from git_theta_like.errors import ThetaLikeError

_API = {
    "open": "git_theta_like.api",
    "load": "git_theta_like.api",
    "load_model": "git_theta_like.api",
    "load_numpy": "git_theta_like.api",
    "commit": "git_theta_like.api",
    "diff": "git_theta_like.api",
    "merge_tensors": "git_theta_like.api",
}

__all__ = ["ThetaLikeError", "__version__", *_API]


def __getattr__(name: str) -> Any:
    """The Python API, imported on first use (the CLI and the filters stay light)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'git_theta_like' has no attribute {name!r}")
