"""`git theta-like checkout`: turn manifests left in the working tree into checkpoint files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from git_theta_like.errors import ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs import sync
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.store.atomic import AtomicFile


def materialize(repo: Repo, paths: list[str]) -> list[str]:
    """Smudge each staged manifest whose working-tree copy is a manifest; returns the paths done.

    With no paths, every tracked checkpoint in that state. Files are written to a temp file and
    renamed into place, so an interrupted checkout leaves the manifest, never half a file.
    """
    from git_theta_like.filters import engine_for
    from git_theta_like.gitio.scan import tracked_files

    if repo.workdir is None:
        raise ThetaLikeError("checkout needs a work tree")
    wanted = set(paths)
    done = []
    files = [f for f in tracked_files(repo) if not wanted or f.path in wanted]
    missing = wanted - {f.path for f in files}
    if missing:
        raise ThetaLikeError(f"not tracked checkpoints in the index: {', '.join(sorted(missing))}")
    with engine_for(repo) as engine:
        for f in files:
            target = repo.workdir / f.path
            if f.manifest is None:
                raise ThetaLikeError(f"{f.path}: {f.error}")
            if target.exists() and not _is_manifest_file(target):
                continue  # already a checkpoint (or modified by the user): leave it
            if target.exists() and target.read_bytes() != repo.index_blob(f.path):
                continue  # a manifest the user edited or staged differently: leave it
            m: Manifest = f.manifest
            sync.ensure_local(repo, sync.manifest_objects(m), what=f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with AtomicFile(target.parent, prefix=f".{target.name}.gtl-") as out:
                engine.smudge(m, out.write)
                out.commit(target)
            done.append(f.path)
    if done:
        # The index still records the manifest's size; git trusts a size mismatch as a change
        # without looking at content, so re-add: clean gives the same manifest (one hash pass
        # per tensor) and the index entry takes the checkpoint's stat data.
        subprocess.run(["git", "add", "--", *done], cwd=repo.workdir, capture_output=True, check=True)
    return done


def _is_manifest_file(p: Path) -> bool:
    with open(p, "rb") as f:
        return is_manifest(f.read(64))
