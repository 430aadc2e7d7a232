"""`git theta-like install`: the filter/diff/merge driver config and the git hooks.

Hooks are installed by chaining: an existing hook (the user's own, or git-lfs's) is kept, renamed
to `<hook>.theta-like-chained`, and our hook runs it first with the same arguments and input,
then does its own work. Installing twice changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import subprocess
from dataclasses import dataclass
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
    # octopus merges (`git merge A B C`): git runs no merge driver there; our strategy merges the
    # checkpoints N-way and every other path as git's octopus does, which is tried next if ours
    # cannot (docs/merging.md)
    "pull.octopus": "theta-like octopus",
}
SHARED_KEYS = {"pull.octopus"}  # keys that are not ours alone: a user may set them to something else
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
    """Our keys out of config: the driver keys, and pull.octopus where it is ours (a user's own
    octopus strategy stays)."""
    for key in CONFIG:
        if key in SHARED_KEYS and _get(config, key) != CONFIG[key]:
            continue
        with contextlib.suppress(KeyError):
            del config[key]


def _get(config: pygit2.Config, key: str) -> str | None:
    try:
        return str(config[key])
    except KeyError:
        return None


def ours(found: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Those of configured()'s entries that are git-theta-like's (pull.octopus only with our value)."""
    return {k: v for k, v in found.items() if k not in SHARED_KEYS or v[0] == CONFIG[k]}


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


def uninstall_hooks(repo: Repo) -> list[str]:
    """Remove our hooks, putting back the hooks they chained; a hook that is not ours stays.
    Returns what was done, one note per hook."""
    notes = []
    for h in hook_states(repo):
        if not h.ours:
            if h.present:
                notes.append(f"{h.name}: not installed by git-theta-like, left as it is")
            continue
        h.path.unlink()
        if h.chained is not None:
            os.replace(h.chained, h.path)
            notes.append(f"{h.name}: removed ours, put back the hook it ran first")
        else:
            notes.append(f"{h.name}: removed")
    return notes


@dataclass
class HookState:
    name: str
    path: Path
    present: bool  # a hook file is there (ours or another's)
    ours: bool  # it is ours
    chained: Path | None  # the hook ours runs first (kept by install), if any


def hook_states(repo: Repo) -> list[HookState]:
    """Each of our hooks in the repository's hooks dir: absent, ours (chaining another or not),
    or another tool's / the user's."""
    d = hooks_dir(repo)
    out = []
    for name in HOOKS:
        dest = d / name
        present = dest.is_file()
        ours = present and MARKER in dest.read_text(errors="replace")
        chained = d / (name + CHAINED_SUFFIX)
        out.append(HookState(name, dest, present, ours, chained if ours and chained.is_file() else None))
    return out


_CONFIG_KEYS = "^(" + "|".join(re.escape(k.lower()) for k in CONFIG) + ")$"  # every key of CONFIG


def configured(cwd: Path) -> dict[str, tuple[str, str]]:
    """Our driver keys as git reads them from cwd: key -> (value, scope: local, global, system,
    worktree or command), for the keys set in any config file."""
    p = subprocess.run(
        ["git", "config", "--show-scope", "-z", "--get-regexp", _CONFIG_KEYS],
        cwd=cwd,
        capture_output=True,
    )
    out: dict[str, tuple[str, str]] = {}
    # -z: scope NUL key LF value NUL, for each entry (the last one of a key wins, as for git)
    fields = p.stdout.decode("utf-8", "surrogateescape").split("\0")
    for scope, entry in zip(fields[0::2], fields[1::2], strict=False):
        key, _, value = entry.partition("\n")
        out[key] = (value, scope)
    return out
