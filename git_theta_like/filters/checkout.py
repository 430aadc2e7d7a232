"""`git theta-like checkout`: turn manifests left in the working tree, and checkpoints a full disk
left truncated, into checkpoint files."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from git_theta_like import display
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import ThetaLikeError, WorkTreeRequiredError
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs import sync
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.store.atomic import AtomicFile

if TYPE_CHECKING:
    from git_theta_like.filters.engine import Engine


def materialize(
    repo: Repo,
    paths: list[str],
    warn: Callable[[str], None] | None = None,
    only: Callable[[str], bool] | None = None,
) -> list[str]:
    """Write the checkpoint of each staged manifest whose working-tree file is a manifest (a
    skip-smudge checkout) or a truncated copy of that checkpoint (a checkout interrupted by a
    full disk: shorter than the manifest's size and equal to the start of its checkpoint);
    returns the paths written.

    With no paths, every tracked checkpoint in one of those states (those `only` accepts, when
    given). A file of another size that
    is not such a prefix is the user's change: it is left alone, and named through warn with the
    commands that resolve it (an error when the path was asked for by name). Files are written
    to a temp file and renamed into place, so an interrupted checkout leaves the file as it was;
    a write that fails (no space left) raises.
    """
    from git_theta_like.filters import engine_for
    from git_theta_like.gitio.scan import tracked_files

    if repo.workdir is None:
        raise WorkTreeRequiredError("this operation must be run in a work tree (checkout)")
    say = warn or (lambda msg: None)
    wanted = set(paths)
    done = []
    files = [f for f in tracked_files(repo) if (f.path in wanted if wanted else only is None or only(f.path))]
    missing = wanted - {f.path for f in files}
    if missing:
        raise ThetaLikeError(f"not tracked checkpoints in the index: {', '.join(sorted(missing))}")
    with contextlib.ExitStack() as stack:
        engines: list[Engine] = []

        def engine() -> Engine:
            # made for the first file to write: a hook that finds none loads no codecs
            if not engines:
                engines.append(stack.enter_context(engine_for(repo)))
            return engines[0]

        for f in files:
            target = repo.workdir / f.path
            if f.manifest is None:
                raise ThetaLikeError(f"{f.path}: {f.error}")
            m: Manifest = f.manifest
            size = target.stat().st_size if target.exists() else None
            if size is not None and not _is_manifest_file(target):
                if size == m.size:
                    continue  # already the checkpoint (or a same-size edit: git status tells)
                if size < m.size and _repair(repo, engine(), m, f.path, target, size):
                    done.append(f.path)
                    continue
                msg = (
                    f"{display.printable(f.path)} is {size} bytes but its staged version is {m.size}: "
                    "a change of yours, left as it is (`git add` stages it, "
                    f"`git checkout -- {display.printable(f.path)}` discards it)"
                )
                if f.path in wanted:
                    raise ThetaLikeError(msg)
                say(msg)
                continue
            if target.exists() and target.read_bytes() != repo.index_blob(f.path):
                continue  # a manifest the user edited or staged differently: leave it
            sync.ensure_local(repo, sync.manifest_objects(m), what=f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with AtomicFile(target.parent, prefix=f".{target.name}.gtl-") as out:
                engine().smudge(m, out.write, f.path)
                out.commit(target)
            done.append(f.path)
    if done:
        # The index still records the manifest's size; git trusts a size mismatch as a change
        # without looking at content, so re-add: clean gives the same manifest (one hash pass
        # per tensor) and the index entry takes the checkpoint's stat data.
        subprocess.run(["git", "add", "--", *done], cwd=repo.workdir, capture_output=True, check=True)
    return done


def pull(
    repo: Repo,
    remote: str | None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[sync.FetchResult, list[str]]:
    """`git theta-like pull`, as `git lfs pull`: fetch from remote what the checkpoints at HEAD
    need, then check out those the working tree holds as manifests (or truncated). The files are
    those the include / exclude path patterns select, by default `lfs.fetchinclude` /
    `lfs.fetchexclude` (sync.fetch_paths); the others are left as they are. Returns the fetch's
    result and the paths checked out."""
    if repo.workdir is None:
        raise WorkTreeRequiredError("this operation must be run in a work tree (pull)")
    inc, exc = sync.fetch_paths(repo, include, exclude)
    fetched = sync.fetch(repo, remote, ["HEAD"], paths=inc, exclude_paths=exc)
    done = materialize(repo, [], warn, only=lambda p: sync.path_selected(p, inc, exc))
    return fetched, done


def _repair(repo: Repo, engine: Engine, m: Manifest, path: str, target: Path, size: int) -> bool:
    """Rewrite target (size bytes, fewer than the manifest's) with its checkpoint when target is
    the checkpoint's first size bytes (what a full disk leaves); False, writing nothing, when not."""
    sync.ensure_local(repo, sync.manifest_objects(m), what=path)
    with open(target, "rb") as have, AtomicFile(target.parent, prefix=f".{target.name}.gtl-") as out:
        same = True
        left = size

        def write(chunk: Buffer) -> None:
            nonlocal same, left
            view = memoryview(chunk)
            if same and left:
                n = min(left, len(view))
                same = have.read(n) == view[:n]
                left -= n
            if same:
                out.write(view)

        engine.smudge(m, write)
        if not same:
            out.discard()
            return False
        out.commit(target)
    return True


def _is_manifest_file(p: Path) -> bool:
    with open(p, "rb") as f:
        return is_manifest(f.read(64))
