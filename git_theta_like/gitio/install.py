"""`git theta-like install`: the filter/diff/merge driver config and the git hooks.

Hooks are installed by chaining: an existing hook (the user's own, or git-lfs's) is kept, renamed
to `<hook>.theta-like-chained`, and our hook runs it first with the same arguments and input,
then does its own work. Installing twice changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from git_theta_like.gitio.attributes import DRIVER
from git_theta_like.gitio.repo import Repo

if TYPE_CHECKING:
    import pygit2  # imported where config is written: the filter checks hooks without it

CONFIG = {
    f"filter.{DRIVER}.process": "git-theta-like filter-process",
    f"filter.{DRIVER}.clean": "git-theta-like clean -- %f",
    f"filter.{DRIVER}.smudge": "git-theta-like smudge -- %f",
    f"filter.{DRIVER}.required": "true",
    # semantic diffs (docs/diff.md): `git diff` runs the command; `git log -p` and `git show` use
    # the textconv (one line per tensor) unless given --ext-diff, then they run the command too
    f"diff.{DRIVER}.command": "git-theta-like diff-driver",
    f"diff.{DRIVER}.textconv": "git-theta-like diff-textconv",
    # a blob's listing never changes: git keeps it in refs/notes/textconv/theta-like
    f"diff.{DRIVER}.cachetextconv": "true",
    # merging (docs/merging.md): per tensor, three-way, model-merging strategies for both-sided changes
    f"merge.{DRIVER}.name": "git-theta-like: merge checkpoints per tensor (model-merging strategies)",
    f"merge.{DRIVER}.driver": "git-theta-like merge-driver %O %A %B %P",
}
HOOKS = ("pre-push", "post-merge")
MARKER = "# installed by git-theta-like"
CHAINED_SUFFIX = ".theta-like-chained"


def hooks_source() -> Path:
    """Where the hook scripts ship: inside the wheel, or hooks/ at the top of a source checkout."""
    packaged = Path(str(resources.files("git_theta_like"))) / "hooks"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "hooks"


def global_config() -> pygit2.Config:
    """The user's global git config, created (empty) if the user has none yet, as git does."""
    import pygit2

    try:
        return pygit2.Config.get_global_config()
    except (OSError, pygit2.GitError):
        path = Path(os.environ.get("HOME", str(Path.home()))) / ".gitconfig"
        path.touch()
        return pygit2.Config.get_global_config()


def write_config(config: pygit2.Config) -> None:
    for key, value in CONFIG.items():
        config[key] = value


def remove_config(config: pygit2.Config) -> None:
    for key in CONFIG:
        with contextlib.suppress(KeyError):
            del config[key]


def hooks_dir(repo: Repo) -> Path:
    d = Path(repo.config_get("core.hooksPath") or repo.common_dir / "hooks")
    if not d.is_absolute() and repo.workdir is not None:
        d = repo.workdir / d
    return d


def install_hooks(repo: Repo, quiet_if_present: bool = False) -> list[str]:
    """Install our hooks into the repository's hooks dir, chaining existing ones."""
    d = hooks_dir(repo)
    if quiet_if_present and all(
        (d / n).is_file() and MARKER in (d / n).read_text(errors="replace") for n in HOOKS
    ):
        return []
    d.mkdir(parents=True, exist_ok=True)
    notes = []
    for name in HOOKS:
        ours = (hooks_source() / name).read_text()
        dest = d / name
        if dest.exists():
            current = dest.read_text(errors="replace")
            if MARKER in current:
                if current != ours:
                    dest.write_text(ours)  # upgrade our own hook
                continue
            chained = d / (name + CHAINED_SUFFIX)
            if chained.exists():
                raise FileExistsError(f"both {dest} and {chained} exist; merge them by hand")
            os.replace(dest, chained)
            notes.append(f"{name}: kept the existing hook, now run first from {chained.name}")
        dest.write_text(ours)
        dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return notes


def uninstall_hooks(repo: Repo) -> None:
    d = hooks_dir(repo)
    for name in HOOKS:
        dest = d / name
        if dest.exists() and MARKER in dest.read_text(errors="replace"):
            dest.unlink()
            chained = d / (name + CHAINED_SUFFIX)
            if chained.exists():
                os.replace(chained, dest)
