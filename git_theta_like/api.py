"""The Python API: read a revision's tensors without a checkout, lazily (`open`, like
`safetensors.safe_open`) or all at once (`load`, `load_numpy`, `load_model` for transformers),
from a local repository or a remote's URL; commit a state dict from memory.

```python
import git_theta_like as gtl

with gtl.open("model.safetensors", rev="HEAD~3") as f:
    w = f.get_tensor("encoder.layer.0.attention.self.query.weight")
sd = gtl.load("model.safetensors", rev="HEAD~3", names="encoder.layer.0.*")
gtl.commit(model.state_dict(), "model.safetensors", "step 1000")
```

Only the objects of the requested tensors are read (and fetched from the remote when missing).
torch is imported lazily: `open`, `load_numpy` and `diff` work without it.
"""

from __future__ import annotations

import fnmatch
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from git_theta_like import dtypes
from git_theta_like.errors import FormatError, ManifestError, RemoteError, ThetaLikeError
from git_theta_like.extras import require
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs import sync
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry
from git_theta_like.store import store_of

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


@dataclass
class _Model:
    """One model at a revision, from its manifests only: a checkpoint file, or the shards of a
    sharded checkpoint's index. Nothing of its objects has been read."""

    path: str  # what was asked for, relative to the repository root
    files: list[tuple[str, Manifest]]  # (checkpoint path, manifest), shards in sorted order
    tensors: dict[str, tuple[str, TensorEntry]]  # name -> (checkpoint path, entry), file order


# what a directory holds, in the order looked for (the names Hugging Face's save_pretrained writes)
_MODEL_FILES = (
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "model.safetensors",
    "pytorch_model.bin",
)


_CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


def _where(rev: str | None) -> str:
    return "in the index" if rev is None else f"at {rev}"


def _blob(r: Repo, path: str, rev: str | None) -> bytes | None:
    return r.index_blob(path) if rev is None else r.rev_blob(rev, path)


def _dir_entries(r: Repo, path: str, rev: str | None) -> list[str] | None:
    """The files directly in directory `path` ("" the root), staged or at rev; None when it is no
    directory there."""
    import pygit2

    from git_theta_like.gitio.scan import index_files, resolve_commit

    prefix = f"{path}/" if path else ""
    if rev is None:
        inside = sorted(p for p in index_files(r) if p.startswith(prefix) and "/" not in p[len(prefix) :])
        return inside or None
    tree = resolve_commit(r, rev).tree
    if path:
        try:
            entry = tree[path]
        except KeyError:
            return None
        if not isinstance(entry, pygit2.Tree):
            return None
        tree = entry
    return sorted(f"{prefix}{e.name}" for e in tree if e.type_str == "blob")


def _model_path(r: Repo, path: str, rev: str | None) -> str:
    """The checkpoint (or index) a path names: itself, or for a directory the model it holds."""
    if path not in ("", ".") and _blob(r, path, rev) is not None:
        return path
    folder = "" if path in ("", ".") else path.rstrip("/")
    inside = _dir_entries(r, folder, rev)
    if inside is None:
        raise ThetaLikeError(f"{path} does not exist {_where(rev)}")
    for name in _MODEL_FILES:
        candidate = f"{folder}/{name}" if folder else name
        if candidate in inside:
            return candidate
    from git_theta_like.manifest import is_manifest

    # only files named like checkpoints are read (in a blobless clone, each read is a download)
    tracked = [p for p in inside if p.endswith(_CHECKPOINT_SUFFIXES) and is_manifest(_blob(r, p, rev) or b"")]
    if len(tracked) == 1:
        return tracked[0]
    what = f"{len(tracked)} tracked checkpoints ({', '.join(tracked[:5])})" if tracked else "no checkpoint"
    raise ThetaLikeError(
        f"directory {folder or '.'} {_where(rev)} holds {what}: name the file or the sharded model's index"
    )


def _resolve(r: Repo, path: str, rev: str | None) -> _Model:
    """The model `path` names at rev (None: staged): a checkpoint, a sharded checkpoint's index,
    or a directory holding one (see _MODEL_FILES). Reads manifests (and the index), no object."""
    from git_theta_like.formats.sharded import is_index, read_index

    if rev is not None:
        from git_theta_like.gitio.scan import resolve_commit

        resolve_commit(r, rev)  # RevisionError for a bad revision, before any path is looked at
    target = _model_path(r, path, rev)
    if not is_index(target):
        m = _manifest(r, target, rev)
        return _Model(target, [(target, m)], {t.name: (target, t) for t in m.tensors})
    blob = _blob(r, target, rev)
    assert blob is not None  # _model_path found it
    try:
        weight_map = read_index(blob, target)
    except (ValueError, TypeError, AttributeError) as e:
        raise ThetaLikeError(f"{target} {_where(rev)} is not a sharded checkpoint's index: {e}") from None
    files = [(shard, _manifest(r, shard, rev)) for shard in sorted(set(weight_map.values()))]
    tensors: dict[str, tuple[str, TensorEntry]] = {}
    for shard, m in files:
        for t in m.tensors:
            if t.name in tensors:
                raise ThetaLikeError(
                    f"{target} {_where(rev)}: tensor {t.name!r} is in two shards "
                    f"({tensors[t.name][0]} and {shard})"
                )
            tensors[t.name] = (shard, t)
    for name, shard in weight_map.items():
        if tensors.get(name, ("",))[0] != shard:
            raise ThetaLikeError(
                f"{target} {_where(rev)} says tensor {name!r} is in {shard}, which does not hold it"
            )
    return _Model(target, files, tensors)


def _entries(r: Repo, path: str, rev: str | None, names: Names) -> list[TensorEntry]:
    """The selected tensors of a checkpoint, or of all shards of a sharded model's index."""
    return _select([t for _, t in _resolve(r, path, rev).tensors.values()], names)


def _check_shape(t: TensorEntry) -> None:
    """ManifestError unless a tensor's line is self-consistent: its bytes are what its dtype and
    shape need (a manifest may lie; numpy and torch would fail on it without naming the tensor)."""
    if t.dtype in dtypes.ITEMSIZE and dtypes.numel(t.shape) * dtypes.ITEMSIZE[t.dtype] != t.length:
        raise ManifestError(
            f"tensor {t.name!r} is {t.dtype}{list(t.shape)} in its manifest line, which needs "
            f"{dtypes.numel(t.shape) * dtypes.ITEMSIZE[t.dtype]} bytes, not the {t.length} it gives"
        )


def _raw(r: Repo, entries: list[TensorEntry], remote: str | None) -> Iterable[tuple[TensorEntry, Any]]:
    for t in entries:
        _check_shape(t)
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
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, np.ndarray]:
    """Tensors of a checkpoint at `rev` (None: the staged version) as numpy arrays.

    `names`: None for all, a glob (`"encoder.*"`) or a list of exact names. `path` may be a
    sharded model's index (`model.safetensors.index.json`) or a directory holding a model. Types
    numpy lacks (bf16, fp8) come as float32 (exact); opaque regions (quantized GGUF blocks) as
    uint8 bytes. `repo` may be a remote's URL, as for `open`.

    ```python
    arrays = load_numpy("model.safetensors", names=["classifier.weight"])
    w = arrays["classifier.weight"]
    ```
    """
    r = _reader_repo(repo, rev, cache_dir)
    out: dict[str, np.ndarray] = {}
    for t, raw in _raw(r, _entries(r, _rel(r, path), rev, names), remote):
        out[t.name] = _to_numpy(raw, t.dtype, t.shape)
    return out


def _writable(raw: Any) -> bytearray:
    """The decoded bytes as a buffer of our own (the store's bytearray as it is, no copy)."""
    return raw if isinstance(raw, bytearray) else bytearray(raw)


def _to_numpy(raw: Any, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype in _NUMPY:
        return np.frombuffer(_writable(raw), dtype=_NUMPY[dtype]).reshape(shape)
    if dtype in _TORCH or dtype == "BF16":
        from git_theta_like.codecs.bits import elements, to_float64

        if dtype in ("BF16",):
            return to_float64(elements(raw, dtype), dtype).astype(np.float32).reshape(shape)
        import torch

        t = torch.frombuffer(_writable(raw), dtype=getattr(torch, _TORCH[dtype]))
        return t.float().numpy().reshape(shape)
    return np.frombuffer(_writable(raw), dtype=np.uint8)


def _to_torch(raw: Any, dtype: str, shape: tuple[int, ...], device: str) -> torch.Tensor:
    """Exact dtypes (bf16 and fp8 included); opaque regions (quantized blocks) as uint8 bytes."""
    require("torch", "merge", "torch tensors (framework='pt', load, load_model)")
    import torch

    if dtype in _TORCH:
        td = getattr(torch, _TORCH[dtype])
    elif dtype in _NUMPY:
        td = torch.from_numpy(np.zeros(0, _NUMPY[dtype])).dtype
    else:
        td = torch.uint8
    buf = _writable(raw)
    tensor = torch.frombuffer(buf, dtype=td) if buf else torch.empty(0, dtype=td)
    opaque = dtype not in _NUMPY and dtype not in _TORCH
    return (tensor if opaque else tensor.reshape(shape)).to(device)


def load(
    path: str | os.PathLike[str],
    rev: str | None = "HEAD",
    names: Names = None,
    device: str = "cpu",
    repo: str | os.PathLike[str] | Repo = ".",
    remote: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint at `rev` as torch tensors on `device`, read straight from the
    object store (the working tree is not touched). Exact dtypes, bf16 and fp8 included.

    ```python
    layers = "encoder.layer.*"
    sd = load("model.safetensors", rev="v1.0", names=layers, device="cuda")
    ```
    """
    r = _reader_repo(repo, rev, cache_dir)
    out: dict[str, torch.Tensor] = {}
    for t, raw in _raw(r, _entries(r, _rel(r, path), rev, names), remote):
        out[t.name] = _to_torch(raw, t.dtype, t.shape, device)
    return out


# ------------------------------------------------------------------ open: a lazy handle

_FRAMEWORKS = {"np": "np", "numpy": "np", "pt": "pt", "torch": "pt"}


class Checkpoint:
    """A lazy, read-only view of a checkpoint (or of a sharded model) at one revision, as
    `safetensors.safe_open` gives of a file: made by `open`. Only manifests have been read;
    each `get_tensor` (or slice) reads that tensor's object, and its delta chain, alone."""

    def __init__(
        self, repo: Repo, model: _Model, rev: str | None, framework: str, device: str, remote: str | None
    ):
        self.repo = repo
        self.path = model.path  # the checkpoint or index opened, relative to the repository root
        self.rev = rev
        self.framework = framework
        self.device = device
        self._model: _Model | None = model
        self._remote = remote

    def _open(self) -> _Model:
        if self._model is None:
            raise ThetaLikeError(f"{self.path}: this checkpoint handle is closed")
        return self._model

    def _entry(self, name: str) -> TensorEntry:
        found = self._open().tensors.get(name)
        if found is None:
            raise ThetaLikeError(f"no tensor named {name!r} in {self.path} {_where(self.rev)}")
        return found[1]

    def _read(self, ref: ObjectRef, what: str, length: int) -> Any:
        """The verified raw content of an object (downloaded first, with its chain, if missing)."""
        self._open()
        sync.ensure_local(self.repo, sync.needed(ref), self._remote, what=what)
        return store_of(self.repo).read_raw(ref.oid, what, ref.raw, 0, length)

    def _decode(self, name: str) -> Any:
        t = self._entry(name)
        _check_shape(t)
        raw = self._read(t.obj, f"tensor {name!r}", t.length)
        if self.framework == "pt":
            return _to_torch(raw, t.dtype, t.shape, self.device)
        return _to_numpy(raw, t.dtype, t.shape)

    def keys(self) -> list[str]:
        """The tensors' names, sorted (as `safe_open` lists them)."""
        return sorted(self._open().tensors)

    def metadata(self) -> dict[str, str] | None:
        """The safetensors `__metadata__` (of the first shard for a sharded model), None when
        there is none or the checkpoint is no safetensors file. Reads the skeleton's object."""
        from git_theta_like.formats.safetensors import read_metadata

        path, m = self._open().files[0]
        if m.format != "safetensors":
            return None
        skeleton = self._read(m.skeleton, f"skeleton of {path}", m.skeleton_length)
        try:
            return read_metadata(skeleton)
        except (struct.error, ValueError, AttributeError) as e:  # UnicodeDecodeError is a ValueError
            raise FormatError(
                f"{path} {_where(self.rev)}: the safetensors header is unreadable ({e})"
            ) from None

    def get_tensor(self, name: str) -> Any:
        """The tensor `name`: a numpy array, or with framework="pt" a torch tensor on the device."""
        return self._decode(name)

    def get_slice(self, name: str) -> TensorSlice:
        """A lazy view of tensor `name`: its shape and dtype from the manifest, its data read (that
        tensor's object only) when indexed, `handle.get_slice("w")[:, :8]`."""
        return TensorSlice(self, name, self._entry(name))

    def close(self) -> None:
        self._model = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Checkpoint {self.path} {_where(self.rev)}>"


class TensorSlice:
    """One tensor of a `Checkpoint`, read when indexed (like safetensors' `get_slice`). Every read
    is verified against the hash of the whole tensor, so an index decodes that tensor's object
    (and its delta chain), never another, and returns a copy of the selected part only."""

    def __init__(self, handle: Checkpoint, name: str, entry: TensorEntry) -> None:
        self._handle = handle
        self.name = name
        self._entry = entry

    def get_shape(self) -> list[int]:
        return list(self._entry.shape)

    def get_dtype(self) -> str:
        """The element type as safetensors names it (`F32`, `BF16`, ...)."""
        return self._entry.dtype

    def __getitem__(self, key: Any) -> Any:
        full = self._handle._decode(self.name)
        part = full[key]
        if self._handle.framework == "pt":
            return part.clone() if part.numel() < full.numel() else part
        return np.array(part, copy=True) if part.size < full.size else part

    def __repr__(self) -> str:
        return f"<TensorSlice {self.name} {self._entry.dtype}{list(self._entry.shape)}>"


def open(
    path: str | os.PathLike[str],
    rev: str | None = "HEAD",
    repo: str | os.PathLike[str] | Repo = ".",
    *,
    framework: str = "np",
    device: str = "cpu",
    remote: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Checkpoint:
    """A lazy handle on the checkpoint at `path` in revision `rev` (None: the staged version),
    used like `safetensors.safe_open`, also as a context manager.

    `path` is a checkpoint file, a sharded model's index (`model.safetensors.index.json`: its
    shards are one model) or a directory holding a model (an index, else `model.safetensors` or
    `pytorch_model.bin`, else its one tracked checkpoint). Opening reads manifests only; each
    tensor's object is read (and downloaded, if missing) when the tensor is asked for.

    `repo` is a local repository (the working tree is not touched) or a remote's URL: then only
    the commits and trees are cloned (`git clone --bare --filter=blob:none`, into `cache_dir`,
    default `~/.cache/git-theta-like/repos`, refreshed by a fetch on each open unless `rev` is a
    commit id already there), git fetches the manifests read, and the LFS batch API the objects
    of the tensors asked for, no other. `framework="pt"` gives torch tensors on `device`.

    ```python
    import git_theta_like as gtl

    with gtl.open("model.safetensors", rev="v1.0") as f:
        names = f.keys()
        # one object read
        w = f.get_tensor("encoder.layer.0.attention.self.query.weight")
        rows = f.get_slice("embeddings.word_embeddings.weight")[:10]
    ```
    """
    kind = _FRAMEWORKS.get(framework)
    if kind is None:
        raise ThetaLikeError(f"unknown framework {framework!r}: use 'np' (numpy) or 'pt' (torch)")
    r = _reader_repo(repo, rev, cache_dir)
    return Checkpoint(r, _resolve(r, _rel(r, path), rev), rev, kind, device, remote)


# ------------------------------------------------------------------ a remote repository, cached

_SCP_URL = re.compile(r"^[A-Za-z0-9._~-]+@[A-Za-z0-9.-]+:")  # git@host:owner/repo.git
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _is_url(repo: object) -> bool:
    return isinstance(repo, str) and ("://" in repo or _SCP_URL.match(repo) is not None)


def _reader_repo(
    repo: str | os.PathLike[str] | Repo, rev: str | None, cache_dir: str | os.PathLike[str] | None
) -> Repo:
    """The repository to read from: a local one, or the cached blobless clone of a URL."""
    if not _is_url(repo):
        return _repo(repo)
    assert isinstance(repo, str)
    if rev is None:
        raise ThetaLikeError(f"{repo} is a remote: it has no index; name a revision")
    return _cached_clone(repo, rev, cache_dir)


def _cache_root(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "git-theta-like" / "repos"


def _cached_clone(url: str, rev: str, cache_dir: str | os.PathLike[str] | None) -> Repo:
    """A bare clone of url without blobs (commits and trees only), in the cache: made on first use
    (in a temporary directory, renamed into place whole), fetched again on each later use unless
    rev is a commit id it has. Blobs (manifests) come on demand through git's promisor remote;
    LFS objects through lfs.sync from the remote `origin` it records."""
    import hashlib
    import shutil
    import subprocess
    import tempfile

    root = _cache_root(cache_dir)
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1])[:40].strip("-.") or "repo"
    dest = root / f"{label}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    if (dest / "HEAD").is_file():
        r = Repo(dest)
        if not (_COMMIT_ID.fullmatch(rev) and r.git.get(rev) is not None):
            import fcntl

            # one fetch at a time (data-loader workers opening the same URL): git would refuse
            # the second one's ref updates
            fd = os.open(dest / "theta-like-fetch.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                r.run_git(
                    "fetch", "--quiet", "--prune", "--filter=blob:none", "origin",
                    "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
                    error=RemoteError,
                )  # fmt: skip
            finally:
                os.close(fd)
        return r
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=root))
    try:
        p = subprocess.run(
            ["git", "clone", "--quiet", "--bare", "--filter=blob:none", "--", url, str(tmp)],
            capture_output=True,
            text=True,
        )
        if p.returncode != 0:
            raise RemoteError(f"git clone {url} failed: {p.stderr.strip() or p.stdout.strip()}")
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "HEAD").is_file():  # not another process's clone, made meanwhile
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Repo(dest)


# ------------------------------------------------------------------ load_model


def load_model(
    model_or_cls: Any,
    path: str | os.PathLike[str] = ".",
    rev: str | None = "HEAD",
    repo: str | os.PathLike[str] | Repo = ".",
    *,
    remote: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **from_pretrained: Any,
) -> Any:
    """A transformers model holding the weights of the checkpoint at `path` in revision `rev`
    (a file, a sharded model's index, or a directory; `repo` local or a URL, as for `open`).

    Given a model class (`BertModel`, `AutoModelForSequenceClassification`, ...), the model is
    built from the `config.json` next to the checkpoint *in the same revision*, by transformers'
    own `from_pretrained(None, config=..., state_dict=...)` (tied weights, dtype; other keyword
    arguments go to it). Given a model instance, its weights are replaced in place (its config is
    kept; a tied weight the checkpoint stores once is filled from the tensor it is tied to).
    Either way the load is strict: a missing, unexpected or mismatched tensor is an error that
    names it, never a silently random-initialised weight.

    ```python
    from transformers import AutoModel
    import git_theta_like as gtl

    model = gtl.load_model(AutoModel, ".", rev="v1.0")  # config and weights of v1.0
    gtl.load_model(model, "model.safetensors", rev="HEAD~1")  # in place
    ```
    """
    r = _reader_repo(repo, rev, cache_dir)
    model = _resolve(r, _rel(r, path), rev)
    where = f"{model.path} {_where(rev)}"
    # a class: its config first (no object is read for a model that cannot be built)
    config = _config(r, model.path, rev, model_or_cls) if isinstance(model_or_cls, type) else None
    state = {
        t.name: _to_torch(raw, t.dtype, t.shape, "cpu")
        for t, raw in _raw(r, [t for _, t in model.tensors.values()], remote)
    }
    if config is None:
        return _load_in_place(model_or_cls, state, where)
    cls = _model_class(model_or_cls, config)
    loaded, info = cls.from_pretrained(
        None, config=config, state_dict=state, output_loading_info=True, **from_pretrained
    )
    problems = [
        f"{what.replace('_', ' ')}: {', '.join(sorted(str(k) for k in info.get(what) or ())[:8])}"
        for what in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
        if info.get(what)
    ]
    if problems:
        raise ThetaLikeError(f"{where} does not fit {cls.__name__} ({'; '.join(problems)})")
    return loaded


def _config(r: Repo, checkpoint: str, rev: str | None, cls: type) -> Any:
    """The transformers config in the config.json next to checkpoint, at rev (None: staged)."""
    import json
    import posixpath

    path = posixpath.join(posixpath.dirname(checkpoint), "config.json")
    blob = _blob(r, path, rev)
    if blob is None:
        raise ThetaLikeError(
            f"{path} does not exist {_where(rev)}: pass a model instance to load the weights into"
        )
    try:
        doc = json.loads(blob)
    except ValueError as e:
        raise ThetaLikeError(f"{path} {_where(rev)} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ThetaLikeError(f"{path} {_where(rev)} is not a JSON object")
    config_class = getattr(cls, "config_class", None)
    if config_class is None:  # an Auto class: the config's model_type says which
        from transformers import CONFIG_MAPPING

        try:
            config_class = CONFIG_MAPPING[str(doc.get("model_type"))]
        except KeyError:
            raise ThetaLikeError(
                f"{path} {_where(rev)}: transformers knows no model_type {doc.get('model_type')!r}"
            ) from None
    return config_class.from_dict(doc)


def _model_class(cls: type, config: Any) -> Any:
    """The concrete model class: cls itself, or the one an Auto class maps the config to."""
    mapping = getattr(cls, "_model_mapping", None)
    if mapping is None:
        return cls
    try:
        found = mapping[type(config)]
    except KeyError:
        raise ThetaLikeError(f"{cls.__name__} has no model for {type(config).__name__}") from None
    if isinstance(found, list | tuple):  # several classes for one config: the one it names
        named = [c for c in found if c.__name__ in (getattr(config, "architectures", None) or ())]
        found = (named or list(found))[0]
    return found


def _load_in_place(model: Any, state: dict[str, torch.Tensor], where: str) -> Any:
    """Copy the state into model's own parameters and buffers, strictly: every tensor of the
    model's state dict (a tied one from the tensor it is tied to), no other, each of its shape."""
    own = model.state_dict()
    # a non-persistent buffer is the model's own (computed, never loaded): older checkpoints
    # store some (BERT's embeddings.position_ids); transformers leaves them alone too
    for name, _ in model.named_buffers():
        if name not in own:
            state.pop(name, None)
    tied = getattr(model, "all_tied_weights_keys", None) or {}
    for key in own.keys() - state.keys():
        source = tied.get(key) if isinstance(tied, dict) else None
        if source in state:
            state[key] = state[source]
    problems = [
        f"{what}: {', '.join(sorted(keys)[:8])}{' ...' if len(keys) > 8 else ''}"
        for what, keys in (
            ("missing", own.keys() - state.keys()),
            ("unexpected", state.keys() - own.keys()),
            ("of another shape", {k for k in own.keys() & state.keys() if own[k].shape != state[k].shape}),
        )
        if keys
    ]
    if problems:
        raise ThetaLikeError(f"{where} does not fit {type(model).__name__} ({'; '.join(problems)})")
    model.load_state_dict(state, strict=True)
    return model


# ------------------------------------------------------------------ commit


def commit(
    state_dict: Mapping[str, Any],
    path: str | os.PathLike[str],
    message: str,
    repo: str | os.PathLike[str] | Repo = ".",
    format: str = "safetensors",
    metadata: dict[str, str] | None = None,
) -> str:
    """Commit a state dict as the checkpoint at `path`; returns the commit id.

    What a user would type, from memory: the file is written into the working tree (exactly what
    `safetensors.torch.save_file(state_dict, path, metadata)`, or `torch.save` for
    format="pytorch", writes; atomically, through a temporary file), then `git add PATH` (the
    clean filter stores the changed tensors as deltas against the staged version) and
    `git commit -m MESSAGE` run, hooks included (pre-commit, commit-msg, post-commit). Whatever
    else is staged is committed with it. Afterwards the working tree, the index and HEAD agree
    (`git status` is clean for the file). A refusing hook, or nothing to commit, is an error with
    git's message; the file then stays written and staged.

    ```python
    gtl.commit(model.state_dict(), "model.safetensors", f"step {step}")
    ```
    """
    from git_theta_like.store.atomic import AtomicFile

    r = _repo(repo)
    if r.workdir is None:
        raise ThetaLikeError(f"{r.git_dir} is a bare repository: commit needs a working tree")
    if format not in ("safetensors", "pytorch"):
        raise ThetaLikeError(f"unknown format {format!r}: use 'safetensors' or 'pytorch'")
    rel = _rel(r, path)
    target = r.workdir / rel
    require("torch", "merge", "commit of a torch state dict")
    with AtomicFile(target.parent, prefix=f".{target.name}.gtl-") as f:
        f.close()  # written by name below
        if format == "safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state_dict.items()}, f.name, metadata=metadata)
        else:
            import torch

            torch.save(dict(state_dict), f.name)
        f.commit(target)
    r.run_git("add", "--", rel)
    r.run_git("commit", "--quiet", "-m", message)
    return r.run_git("rev-parse", "HEAD").strip()


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

    ```python
    result = diff("HEAD~1", "HEAD", "model.safetensors")
    tensors = [t for f in result.files for t in f.tensors]
    changed = [t.name for t in tensors if t.status != "unchanged"]
    ```
    """
    from git_theta_like.semdiff.sides import diff_sides, remote_fetcher, resolve_sides

    r = _repo(repo)
    revs = [rev_a] if rev_b is None else [rev_a, rev_b]
    old, new = resolve_sides(r, revs)
    paths = [] if path is None else [_rel(r, path)]
    return diff_sides(r, old, new, paths, threshold=threshold, fetch=remote_fetcher(r), cwd=r.workdir)


def merge_tensors(base: Any, ours: Any, theirs: Any, /, strategy: str = "average", **params: Any) -> Any:
    """Merge one tensor in process with a `git merge` strategy (see docs/merging.md).

    ```python
    merged = merge_tensors(base_w, ours_w, theirs_w, "ties", density=0.2)
    ```
    """
    from git_theta_like.merge.compute import merge_tensors as _merge

    return _merge(base, ours, theirs, strategy, **params)
