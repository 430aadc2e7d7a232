"""`git theta-like mergetool`: resolve checkpoint conflicts by hand, without a terminal.

`mergetool PATH` writes, next to PATH, the three versions as checkpoints (`model.BASE.safetensors`,
`model.OURS.safetensors`, `model.THEIRS.safetensors`) and `model.MERGED.safetensors`: the merge
of everything that could be merged, with ours for each conflicting tensor. Edit or combine
them with any tool, then `mergetool PATH --resolve FILE` stores FILE as the resolution
(`git add` semantics: clean, deltas against ours), or `--use ours|theirs|base|merged` takes one
of those directly. Either way the conflict is marked resolved and the helper files go.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pygit2

from git_theta_like.errors import ManifestError, MergeToolError
from git_theta_like.formats import ByteReader
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.merge import config
from git_theta_like.merge.execute import build_result, ensure_local, parents
from git_theta_like.merge.plan import FisherFiles, Plan, plan_merge
from git_theta_like.merge.state import cleanup, helper_path, state_file, workdir
from git_theta_like.store import store_of
from git_theta_like.store.atomic import AtomicFile


@dataclass
class Conflicted:
    path: str
    base: bytes | None
    ours: bytes | None
    theirs: bytes | None
    mode: int

    def manifest(self, which: str) -> Manifest | None:
        data = {"base": self.base, "ours": self.ours, "theirs": self.theirs}[which]
        if data is None or not is_manifest(data):
            return None
        try:
            return Manifest.from_bytes(data)
        except ManifestError as e:
            raise MergeToolError(f"{self.path}: the {which} version is not a valid manifest: {e}") from None


def conflicted(repo: Repo) -> dict[str, Conflicted]:
    """Paths with unmerged index entries, and their stage blobs."""
    index = repo.git.index
    index.read(False)
    out: dict[str, Conflicted] = {}
    if index.conflicts is None:
        return out
    for anc, ours, theirs in index.conflicts:
        entry = ours or theirs or anc
        assert entry is not None

        def blob(e: pygit2.IndexEntry | None) -> bytes | None:
            return repo.blob(e.id) if e is not None else None

        out[entry.path] = Conflicted(entry.path, blob(anc), blob(ours), blob(theirs), entry.mode)
    return out


def _get(repo: Repo, path: str) -> Conflicted:
    found = conflicted(repo)
    if path not in found:
        hint = f" (conflicted: {', '.join(sorted(found))})" if found else ""
        raise MergeToolError(f"{path} has no merge conflict{hint}")
    c = found[path]
    if c.manifest("ours") is None or c.manifest("theirs") is None:
        raise MergeToolError(f"{path} is not a tracked checkpoint on both sides; use `git mergetool {path}`")
    return c


def _config(repo: Repo, path: str) -> config.MergeConfig:
    """The merge configuration, with the overrides of the `git theta-like merge` that stopped."""
    env = dict(os.environ)
    state = state_file(repo, path)
    saved: dict[str, object] = {}
    if state.exists():
        with contextlib.suppress(ValueError, AttributeError):
            saved = json.loads(state.read_text())
            env.update(saved.get("overrides", {}))  # type: ignore[call-overload]
    cfg = config.load_lenient(repo, env=env)
    replay = saved["replay"] if "replay" in saved else config.replaying(repo, env)
    cfg.replay = replay if isinstance(replay, str) else None
    config.bind_stopped_merge(repo, cfg)
    return cfg


def _plan(repo: Repo, c: Conflicted) -> Plan:
    ours, theirs = c.manifest("ours"), c.manifest("theirs")
    assert ours is not None and theirs is not None
    fisher = FisherFiles(repo, c.path, c.theirs or b"", c.ours or b"")
    return plan_merge(
        c.path, c.manifest("base"), ours, theirs, _config(repo, c.path), fisher, fallback_ours=True
    )


def _smudge(repo: Repo, manifest: Manifest, dest: Path) -> None:
    from git_theta_like.filters.engine import Engine

    ensure_local(repo, [ref for _, ref in manifest.objects()])
    with Engine(store_of(repo)) as engine, AtomicFile(dest.parent, prefix=f".{dest.name}.gtl-") as f:
        engine.smudge(manifest, f.write)
        f.commit(dest)


def _octopus(repo: Repo, path: str) -> list[str] | None:
    """The conflicts an octopus merge (merge/octopus.py) saved for path, or None: its index
    holds three of the N versions, so no three-way MERGED can stand for the N-way merge."""
    state = state_file(repo, path)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        saved = json.loads(state.read_text())
        if saved.get("octopus"):
            return [str(line) for line in saved.get("conflicts", [])]
    return None


def prepare(repo: Repo, path: str) -> Iterator[str]:
    """Write the helper checkpoints for a conflicted path; yields lines to show."""
    c = _get(repo, path)
    root = workdir(repo)
    if (lines := _octopus(repo, path)) is not None:
        yield f"{path}: {len(lines)} conflict(s) in an octopus merge:"
        yield from (f"    {line}" for line in lines)
        written = []
        for label, which in (("BASE", "base"), ("OURS", "ours"), ("THEIRS", "theirs")):
            m = c.manifest(which)
            if m is not None:
                _smudge(repo, m, root / helper_path(path, label))
                written.append(helper_path(path, label))
        yield "wrote " + ", ".join(written) + " (THEIRS: one of the heads that changed it)"
        yield f"then: git theta-like mergetool {path} --resolve FILE   (or --use ours|theirs|base)"
        return
    plan = _plan(repo, c)
    problems = plan.fallbacks + plan.conflicts
    yield f"{path}: {len(problems)} conflict(s):"
    for p in problems:
        yield f"    {p.line()}"
    written = []
    for label, which in (("BASE", "base"), ("OURS", "ours"), ("THEIRS", "theirs")):
        m = c.manifest(which)
        if m is not None:
            dest = helper_path(path, label)
            _smudge(repo, m, root / dest)
            written.append(dest)
    if not plan.conflicts:
        merged, _ = build_result(plan, repo, _config(repo, path))
        dest = helper_path(path, "MERGED")
        _smudge(repo, merged, root / dest)
        written.append(dest)
        yield f"{dest}: everything merged that could be, ours for the tensors listed above"
    else:
        yield "no MERGED file: the conflicts above concern the file's structure, not single tensors"
    yield "wrote " + ", ".join(written)
    yield (
        f"then: git theta-like mergetool {path} --resolve FILE   "
        f"(or --use ours|theirs|base{'|merged' if not plan.conflicts else ''})"
    )


def resolve(repo: Repo, path: str, file: str | None = None, use: str | None = None) -> str:
    """Mark path resolved with FILE's content or one version; returns a line to show."""
    c = _get(repo, path)
    root = workdir(repo)
    ours, theirs, base = c.manifest("ours"), c.manifest("theirs"), c.manifest("base")
    assert ours is not None and theirs is not None
    if (file is None) == (use is None):
        raise MergeToolError("give either --resolve FILE or --use ours|theirs|base|merged")
    if use is not None:
        if use == "merged" and _octopus(repo, path) is not None:
            raise MergeToolError(
                f"{path}: an octopus merge has no three-way MERGED version; "
                "use --resolve FILE or --use ours|theirs|base"
            )
        if use == "merged":
            plan = _plan(repo, c)
            if plan.conflicts:
                raise MergeToolError(f"{path}: no automatic merge possible ({plan.conflicts[0].line()})")
            data = build_result(plan, repo, _config(repo, path))[0].to_bytes()
        else:
            blob = {"ours": c.ours, "theirs": c.theirs, "base": c.base}[use]
            if blob is None:
                raise MergeToolError(f"{path} has no {use} version (added or deleted there)")
            data = blob
        what = f"the {use} version"
    else:
        assert file is not None
        from git_theta_like.filters import engine_for

        with engine_for(repo) as engine, open(file, "rb") as f:
            data = engine.clean(ByteReader(f), previous=parents(ours, theirs, base), path=path)
        what = file
    oid = repo.git.create_blob(data)
    mode = f"{c.mode:o}"
    subprocess.run(["git", "update-index", "--cacheinfo", f"{mode},{oid},{path}"], cwd=root, check=True)
    if file is not None and Path(file).resolve() == (root / path).resolve():
        pass  # the work tree already holds it
    else:
        subprocess.run(["git", "checkout", "--", path], cwd=root, check=True, capture_output=True)
    cleanup(repo, path)
    return f"{path}: resolved with {what}; conclude the merge with `git commit`"
