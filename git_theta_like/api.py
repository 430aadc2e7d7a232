"""The Python API: read a revision's tensors without a checkout, commit a state dict from memory.

    import git_theta_like as gtl

    sd = gtl.load("model.safetensors", rev="HEAD~3", names="encoder.layer.0.*")
    gtl.commit(model.state_dict(), "model.safetensors", "step 1000")

Only the objects of the requested tensors are read (and fetched from the remote when missing).
torch is imported lazily: `load_numpy` and `diff` work without it.
"""

from __future__ import annotations

import fnmatch
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from git_theta_like import dtypes
from git_theta_like.errors import ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs import sync
from git_theta_like.manifest import Manifest, TensorEntry
from git_theta_like.store import store_of
from git_theta_like.store.atomic import write_atomic

if TYPE_CHECKING:
    import torch

Names = str | Iterable[str] | None

_NUMPY = {name: np.dtype(t) for name, t in dtypes.NUMPY_NAMES.items()}
_TORCH = {k: v for k, v in dtypes.TORCH_FLOAT_NAMES.items() if k not in _NUMPY}  # bf16, fp8


def _repo(repo: str | os.PathLike[str] | Repo) -> Repo:
    return repo if isinstance(repo, Repo) else Repo(repo)


def _rel(r: Repo, path: str | os.PathLike[str]) -> str:
    """A path relative to the repository root, as git names it."""
    p = Path(path)
    if p.is_absolute() and r.workdir is not None:
        p = p.resolve().relative_to(r.workdir.resolve())
    return p.as_posix()


def _manifest(r: Repo, path: str, rev: str | None) -> Manifest:
    from git_theta_like.gitio.scan import load_manifest

    return load_manifest(r, path, rev)


def _select(tensors: list[TensorEntry], names: Names) -> list[TensorEntry]:
    if names is None:
        return tensors
    if isinstance(names, str):
        return [t for t in tensors if fnmatch.fnmatchcase(t.name, names)]
    wanted = set(names)
    found = [t for t in tensors if t.name in wanted]
    missing = wanted - {t.name for t in found}
    if missing:
        raise ThetaLikeError(f"no tensor named {', '.join(sorted(missing)[:5])}")
    return found


def _entries(r: Repo, path: str, rev: str | None, names: Names) -> list[TensorEntry]:
    """The selected tensors of a checkpoint, or of all shards of a sharded model's index."""
    from git_theta_like.formats.sharded import is_index, read_index

    if is_index(path):
        blob = r.index_blob(path) if rev is None else r.rev_blob(rev, path)
        if blob is None:
            raise ThetaLikeError(f"{path} does not exist {'in the index' if rev is None else f'at {rev}'}")
        weight_map = read_index(blob, path)
        out = []
        for shard in sorted(set(weight_map.values())):
            out += _select(_manifest(r, shard, rev).tensors, None)
        if names is None:
            return out
        if isinstance(names, str):
            return [t for t in out if fnmatch.fnmatchcase(t.name, names)]
        return _select(out, names)
    return _select(_manifest(r, path, rev).tensors, names)


def _raw(r: Repo, entries: list[TensorEntry], remote: str | None) -> Iterable[tuple[TensorEntry, Any]]:
    objs = [o for t in entries for o in sync.needed(t.obj)]
    sync.ensure_local(r, objs, remote, what="load")
    for t in entries:
        yield t, store_of(r).read_raw(t.obj.oid, f"tensor {t.name!r}", t.obj.raw, 0, t.length)


def load_numpy(
    path: str | os.PathLike[str],
    rev: str | None = "HEAD",
    names: Names = None,
    repo: str | os.PathLike[str] | Repo = ".",
    remote: str | None = None,
) -> dict[str, np.ndarray]:
    """Tensors of a checkpoint at `rev` (None: the staged version) as numpy arrays.

    `names`: None for all, a glob (`"encoder.*"`) or a list of exact names. `path` may be a
    sharded model's index (`model.safetensors.index.json`). Types numpy lacks (bf16, fp8) come
    as float32 (exact); opaque regions (quantized GGUF blocks) as uint8 bytes.

    >>> w = load_numpy("model.safetensors", names=["classifier.weight"])["classifier.weight"]
    """
    r = _repo(repo)
    out: dict[str, np.ndarray] = {}
    for t, raw in _raw(r, _entries(r, _rel(r, path), rev, names), remote):
        out[t.name] = _to_numpy(raw, t.dtype, t.shape)
    return out


def _to_numpy(raw: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype in _NUMPY:
        return np.frombuffer(raw, dtype=_NUMPY[dtype]).reshape(shape).copy()
    if dtype in _TORCH or dtype == "BF16":
        from git_theta_like.codecs.bits import elements, to_float64

        if dtype in ("BF16",):
            return to_float64(elements(raw, dtype), dtype).astype(np.float32).reshape(shape)
        import torch

        t = torch.frombuffer(bytearray(raw), dtype=getattr(torch, _TORCH[dtype]))
        return t.float().numpy().reshape(shape)
    return np.frombuffer(raw, dtype=np.uint8).copy()


def load(
    path: str | os.PathLike[str],
    rev: str | None = "HEAD",
    names: Names = None,
    device: str = "cpu",
    repo: str | os.PathLike[str] | Repo = ".",
    remote: str | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint at `rev` as torch tensors on `device`, read straight from the
    object store (the working tree is not touched). Exact dtypes, bf16 and fp8 included.

    >>> sd = load("model.safetensors", rev="v1.0", names="encoder.layer.*", device="cuda")
    """
    import torch

    r = _repo(repo)
    out: dict[str, torch.Tensor] = {}
    for t, raw in _raw(r, _entries(r, _rel(r, path), rev, names), remote):
        if t.dtype in _TORCH:
            td = getattr(torch, _TORCH[t.dtype])
        elif t.dtype in _NUMPY:
            td = torch.from_numpy(np.zeros(0, _NUMPY[t.dtype])).dtype
        else:
            td = torch.uint8
        buf = bytearray(raw)
        tensor = torch.frombuffer(buf, dtype=td) if buf else torch.empty(0, dtype=td)
        opaque = t.dtype not in _NUMPY and t.dtype not in _TORCH  # quantized blocks: bytes
        out[t.name] = (tensor if opaque else tensor.reshape(t.shape)).to(device)
    return out


def commit(
    state_dict: Mapping[str, Any],
    path: str | os.PathLike[str],
    message: str,
    repo: str | os.PathLike[str] | Repo = ".",
    format: str = "safetensors",
    metadata: dict[str, str] | None = None,
    update_worktree: bool = False,
) -> str:
    """Commit a state dict as the checkpoint at `path`, from memory; returns the commit id.

    The bytes are exactly what `safetensors.torch.save_file(state_dict, path, metadata)` (or
    `torch.save` for format="pytorch") would write, so the manifest is the one `git add` of that
    file gives. The checkpoint goes through the same clean as `git add` (deltas against the
    staged version), then the index entry and a commit on HEAD are written; the working tree is
    left alone unless `update_worktree` (then the file is written and its index stat refreshed).

    >>> commit(model.state_dict(), "model.safetensors", "step 1000")
    """
    import pygit2

    from git_theta_like.filters import engine_for, staged_manifest
    from git_theta_like.formats import ByteReader
    from git_theta_like.gitio.scan import IndexManifests

    r = _repo(repo)
    rel = _rel(r, path)
    if format == "safetensors":
        from safetensors.torch import save

        data = save({k: v.contiguous() for k, v in state_dict.items()}, metadata=metadata)
    elif format == "pytorch":
        import torch

        buf = io.BytesIO()
        torch.save(dict(state_dict), buf)
        data = buf.getvalue()
    else:
        raise ThetaLikeError(f"unknown format {format!r}: use 'safetensors' or 'pytorch'")
    g = r.git
    # the Engine holds the store's lock until the index names the new objects (a gc waits)
    with engine_for(r) as engine:
        previous = staged_manifest(r, rel)
        manifest = engine.clean(ByteReader(io.BytesIO(data)), previous, rel, IndexManifests(r).others(rel))
        blob_id = g.create_blob(manifest)
        index = g.index
        index.read(False)
        index.add(pygit2.IndexEntry(rel, blob_id, pygit2.enums.FileMode.BLOB))
        index.write()
    tree = index.write_tree()
    try:
        sig = g.default_signature
    except (KeyError, pygit2.GitError):
        raise ThetaLikeError("set user.name and user.email in git config to commit") from None
    parents = [] if g.head_is_unborn else [g.head.target]
    commit_id = g.create_commit("HEAD", sig, sig, message, tree, parents)
    if update_worktree and r.workdir is not None:
        target = r.workdir / rel
        write_atomic(target, data)
        import subprocess

        subprocess.run(["git", "add", "--", rel], cwd=r.workdir, check=True, capture_output=True)
    return str(commit_id)


def diff(
    rev_a: str,
    rev_b: str | None = None,
    path: str | os.PathLike[str] | None = None,
    repo: str | os.PathLike[str] | Repo = ".",
    threshold: float | None = None,
) -> Any:
    """The structured diff (git_theta_like.semdiff.model.DiffResult) of checkpoints between two
    revisions.

    `rev_b=None` compares with the working tree, like `git diff REV`. Only changed tensors'
    objects are read. Renderers (text, JSON, Markdown): git_theta_like.semdiff.render.

    >>> result = diff("HEAD~1", "HEAD", "model.safetensors")
    >>> [t.name for f in result.files for t in f.tensors]
    """
    from git_theta_like.semdiff.sides import diff_sides, remote_fetcher, resolve_sides

    r = _repo(repo)
    revs = [rev_a] if rev_b is None else [rev_a, rev_b]
    old, new = resolve_sides(r, revs)
    paths = [] if path is None else [_rel(r, path)]
    return diff_sides(r, old, new, paths, threshold=threshold, fetch=remote_fetcher(r), cwd=r.workdir)


def merge_tensors(base: Any, ours: Any, theirs: Any, /, strategy: str = "average", **params: Any) -> Any:
    """Merge one tensor in process with a `git merge` strategy (see docs/merging.md).

    >>> merged = merge_tensors(base_w, ours_w, theirs_w, "ties", density=0.2)
    """
    from git_theta_like.merge.compute import merge_tensors as _merge

    return _merge(base, ours, theirs, strategy, **params)
