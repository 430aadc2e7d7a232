"""Git's diff driver for tracked checkpoints (`diff=theta-like` in .gitattributes).

- `diff.theta-like.command = git-theta-like diff-driver`: git runs it, as it runs
  GIT_EXTERNAL_DIFF, once per changed file with `path old-file old-hex old-mode new-file new-hex
  new-mode` (two more arguments, new path and a message, for a rename). `git diff` uses it by
  default; `git log -p` and `git show` use it with `--ext-diff`. It prints the semantic summary.
- `diff.theta-like.textconv = git-theta-like diff-textconv`: what `git log -p`, `git show` and
  `git diff --stat` use without `--ext-diff`: one line per tensor (name, dtype, shape, content
  hash, no offsets), so a changed tensor is one changed line and an inserted tensor does not
  shift the others.

What git hands over is usually the cleaned content (a manifest), but it may be the working-tree
file itself (the checkpoint): then the blob named by its hex is read from the object database,
or, for the working tree's own version, the file is cleaned as `git add` would. Content that is
not a tracked checkpoint falls back to `git diff --no-index`.

The filter passes manifests through, unsmudged, to git commands that only show diffs
(gitio/process.py), so what git hands over here is normally the manifest itself.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from git_theta_like.display import printable
from git_theta_like.errors import ThetaLikeError
from git_theta_like.manifest import MAGIC, Manifest, is_manifest
from git_theta_like.semdiff.whole import tracked_by_filter, tracked_version
from git_theta_like.store import store_of

NULL = "/dev/null"
_HEX = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


class _Plain:
    """Content that is not a tracked checkpoint."""


PLAIN = _Plain()


def load_side(repo: Any, file: str, hexid: str, path: str) -> Manifest | _Plain | None:
    """The manifest one side of git's external-diff call stands for (None: no file)."""
    if file == NULL:
        return None
    with open(file, "rb") as f:
        head = f.read(len(MAGIC))
    if is_manifest(head):
        return Manifest.from_bytes(Path(file).read_bytes())
    if _HEX.match(hexid) and set(hexid) != {"0"}:
        data = repo.blob(hexid)
        if data is not None:
            if is_manifest(data):
                return Manifest.from_bytes(data)
            return tracked_version(repo, path, data) or PLAIN  # a git-lfs version: stored whole
    if tracked_by_filter(repo, path):
        from git_theta_like.semdiff.sides import clean_file

        return clean_file(repo, Path(file), path)
    return PLAIN


def _fallback(old_file: str, new_file: str, path: str, new_path: str) -> str:
    p = subprocess.run(
        ["git", "diff", "--no-index", "--no-ext-diff", "--no-textconv", "--", old_file, new_file],
        capture_output=True,
    )
    out = p.stdout.decode("utf-8", "replace")
    for name, label in ((old_file, f"a/{path}"), (new_file, f"b/{new_path}")):
        if name != NULL:
            out = out.replace(f"a/{name.lstrip('/')}", label).replace(f"b/{name.lstrip('/')}", label)
    return out


def driver_output(repo: Any, args: list[str]) -> str:
    """What `git-theta-like diff-driver` prints for git's 7 (or 9) arguments."""
    from git_theta_like.semdiff.compare import diff_file
    from git_theta_like.semdiff.render.text import render_file_text
    from git_theta_like.semdiff.sides import remote_fetcher

    if len(args) not in (7, 9):
        raise ThetaLikeError(
            f"diff-driver takes git's external-diff arguments (7 or 9), got {len(args)}: "
            "set diff.theta-like.command = git-theta-like diff-driver"
        )
    path, old_file, old_hex, _, new_file, new_hex, _ = args[:7]
    new_path = args[7] if len(args) == 9 else path
    old = load_side(repo, old_file, old_hex, path)
    new = load_side(repo, new_file, new_hex, new_path)
    if isinstance(old, _Plain) or isinstance(new, _Plain):
        return _fallback(old_file, new_file, path, new_path)
    threshold = None
    if value := repo.config_get("theta-like.diffThreshold"):
        try:
            threshold = float(value)
        except ValueError:
            raise ThetaLikeError(f"theta-like.diffThreshold: {value!r} is not a number") from None
    head = printable(f"diff --git a/{path} b/{new_path}") + "\n"
    try:
        fd = diff_file(store_of(repo), new_path, old, new, threshold=threshold, fetch=remote_fetcher(repo))
    except ThetaLikeError as e:  # objects unavailable: still say which tensors changed
        fd = diff_file(store_of(repo), new_path, old, new, stats=False)
        fd.note = f"statistics unavailable: {e}"
    return head + "\n".join(render_file_text(fd)) + "\n"
