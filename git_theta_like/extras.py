"""Optional dependencies, by role. The core (filter, diff, log, fsck, push, fetch) needs only
numpy, zstandard, safetensors, pygit2 and click; the rest comes with an extra:

- `merge`: torch and PyYAML, for `git merge` / `git theta-like merge`, mergetool and the torch API;
- `plot`: matplotlib, for `git theta-like diff --plot`.

A feature imports its optional module through `require`, which names the extra to install when
the module is missing. Bottom layer: imports nothing of the package but errors.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from git_theta_like.errors import MissingExtraError

# extra -> the top-level modules it installs (pyproject.toml, [project.optional-dependencies])
EXTRAS: dict[str, tuple[str, ...]] = {"merge": ("torch", "yaml"), "plot": ("matplotlib",)}


def install_command(extra: str) -> str:
    """The command that installs an extra, as a user types it."""
    return f"pip install 'git-theta-like[{extra}]'"


def require(module: str, extra: str, feature: str) -> ModuleType:
    """`module`, imported; if it (or something it needs) cannot be imported, a MissingExtraError
    that says which feature needs it and which extra installs it."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name or module
        what = module if missing.partition(".")[0] == module.partition(".")[0] else f"{module} ({missing})"
        raise MissingExtraError(
            f"{feature} needs {what}, which is not installed: {install_command(extra)}",
            extra,
            module,
        ) from e
