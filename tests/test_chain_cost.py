"""Cost-bounded delta chains: a checkout of any revision needs at most the file's bytes (what
git-lfs downloads for it), while small fine-tunes still get deltas; `chain_bytes` in delta
headers is exact, and a lying one costs compression, never correctness."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import git
from fixtures import safetensors_bytes, small_model
from lfs_server import giftless_available
from test_remotes import Remote, clone, commit, global_install, make_origin  # noqa: F401

from git_theta_like import codecs
from git_theta_like.codecs.container import CHAIN_BYTES, split_object
from git_theta_like.manifest import Manifest, ObjectRef
from git_theta_like.store import LocalStore

NAME = "model.safetensors"


def store(repo: Path) -> LocalStore:
    return LocalStore(repo / ".git" / "lfs")


def manifest(repo: Path, rev: str) -> Manifest:
    return Manifest.from_text(git(repo, "show", f"{rev}:{NAME}").stdout)


def walked(repo: Path, oids: list[str]) -> int:
    """Stored bytes of the objects and their delta chains, walked through the headers, each
    object once (independent of the code under test)."""
    s = store(repo)
    sizes: dict[str, int] = {}
    for first in oids:
        oid: str | None = first
        while oid is not None and oid not in sizes:
            sizes[oid] = s.path(oid).stat().st_size
            oid = s.read_header(oid).base
    return sum(sizes.values())


def checkout_bytes(repo: Path, m: Manifest) -> int:
    """What a checkout of m needs: every object it names and their delta chains."""
    return walked(repo, [ref.oid for _, ref in m.objects()])


def model(seed: int = 0) -> dict[str, np.ndarray]:
    return {k: np.frombuffer(d, np.float32).copy() for k, (_, _, d) in small_model(seed, scale=2).items()}


def as_file(sd: dict[str, np.ndarray]) -> bytes:
    return safetensors_bytes({k: ("F32", a.shape, a.tobytes()) for k, a in sd.items()})


def full_finetune(sd: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Every element of every tensor changed a little (a full fine-tune)."""
    return {k: (a * (1 + rng.standard_normal(a.size) * 1e-3)).astype(np.float32) for k, a in sd.items()}


def sparse_finetune(sd: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A few elements of every tensor changed."""
    out = {}
    for k, a in sd.items():
        b = a.copy()
        b[rng.choice(b.size, max(1, b.size // 2000), replace=False)] += np.float32(0.01)
        out[k] = b
    return out


def check_chain_bytes(repo: Path, m: Manifest) -> int:
    """Every delta's `chain_bytes` is the stored bytes of it and its chain; returns the deltas."""
    s = store(repo)
    deltas = 0
    for _, ref in m.objects():
        header = s.read_header(ref.oid)
        if header.base:
            deltas += 1
            assert header.params[CHAIN_BYTES] == walked(repo, [ref.oid])
    return deltas


def commit_history(repo: Path, step: Any, rng: np.random.Generator, versions: int) -> list[bytes]:
    """model() committed as v0, then `versions` commits, each step(previous, rng); the files."""
    sd = model()
    files = [as_file(sd)]
    commit(repo, files[0], "v0")
    for i in range(1, versions + 1):
        files.append(as_file(sd := step(sd, rng)))
        (repo / NAME).write_bytes(files[-1])
        git(repo, "commit", "-qam", f"v{i}")
    return files


def test_full_finetunes_never_cost_a_checkout_more_than_the_file(repo: Path) -> None:
    rng = np.random.default_rng(1)
    files = commit_history(repo, full_finetune, rng, 4)
    for i, data in enumerate(files):
        rev = f"HEAD~{len(files) - 1 - i}"
        m = manifest(repo, rev)
        assert checkout_bytes(repo, m) <= len(data), (rev, checkout_bytes(repo, m), len(data))
        check_chain_bytes(repo, m)
    git(repo, "checkout", "HEAD~2", "--", NAME)
    assert (repo / NAME).read_bytes() == files[2]


def test_small_finetunes_still_get_deltas_within_the_bound(repo: Path) -> None:
    rng = np.random.default_rng(2)
    files = commit_history(repo, sparse_finetune, rng, 10)
    first = checkout_bytes(repo, manifest(repo, f"HEAD~{len(files) - 1}"))
    deltas = 0
    for i, data in enumerate(files):
        m = manifest(repo, f"HEAD~{len(files) - 1 - i}")
        assert checkout_bytes(repo, m) <= len(data)
        deltas += check_chain_bytes(repo, m)
    assert deltas >= 30  # the large tensors of most versions are deltas
    history = sum(p.stat().st_size for p in (repo / ".git" / "lfs" / "objects").rglob("*") if p.is_file())
    assert history < 2.5 * first  # 10 edits cost far less than 10 more keyframes would
    git(repo, "checkout", "HEAD~4", "--", NAME)
    assert (repo / NAME).read_bytes() == files[-5]


def test_a_higher_max_chain_ratio_keeps_dense_deltas(repo: Path) -> None:
    git(repo, "config", "theta-like.maxChainRatio", "3")
    rng = np.random.default_rng(3)
    sd = model()
    commit(repo, as_file(sd), "v0")
    data = as_file(full_finetune(sd, rng))
    commit(repo, data, "v1")
    m = manifest(repo, "HEAD")
    big = [t for t in m.tensors if t.length >= 32768]
    assert big and all(t.obj.codec in ("sub", "xor") for t in big)
    assert len(data) < checkout_bytes(repo, m) <= 3 * len(data)
    (repo / NAME).unlink()
    git(repo, "checkout", "--", NAME)
    assert (repo / NAME).read_bytes() == data


# ------------------------------------------------------------------ chain_bytes in the store


def _tensor(seed: int, n: int = 8192) -> bytes:
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32).tobytes()


def _edit(raw: bytes, k: int) -> bytes:
    a = np.frombuffer(raw, np.float32).copy()
    a[k * 7 : k * 7 + 5] += np.float32(0.5)
    return a.tobytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_store_chain_bytes_from_the_param_or_by_walking(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "lfs")
    k_raw = _tensor(0)
    k_oid, k_size = s.write_encoded(codecs.encode(k_raw, "F32", (2048,), _sha(k_raw)))
    assert s.chain_bytes(k_oid) == k_size
    # a delta as objects written before `chain_bytes` existed: no param, found by walking
    d_raw = _edit(k_raw, 1)
    old = codecs.encode_delta(d_raw, k_raw, "F32", (2048,), _sha(d_raw), k_oid, 1)
    assert old.header.base == k_oid and CHAIN_BYTES not in old.header.params
    d_oid, d_size = s.write_encoded(old)
    assert s.chain_bytes(d_oid) == k_size + d_size
    # with the param: read from the header, and exact
    e_raw = _edit(d_raw, 2)
    new = codecs.encode_delta(e_raw, d_raw, "F32", (2048,), _sha(e_raw), d_oid, 2)
    new = new.with_chain_bytes(k_size + d_size)
    e_oid, e_size = s.write_encoded(new)
    assert new.header.params[CHAIN_BYTES] == k_size + d_size + e_size == s.chain_bytes(e_oid)
    assert s.chain_bytes(e_oid, limit=1) is not None  # the param: no walk needed
    assert s.chain_bytes(d_oid, limit=0) is None  # a walk longer than allowed
    # implausible params (below the object's own size, negative) are ignored: walked instead
    for lie in (0, -5, 1):
        params = {**new.header.params, CHAIN_BYTES: lie}
        liar = codecs.Encoded(dataclasses.replace(new.header, params=params), new.parts)
        oid, size = s.write_encoded(liar)
        assert s.chain_bytes(oid) == k_size + d_size + size
    # a chain whose keyframe is gone: no cost to build on
    s.delete(k_oid)
    assert s.chain_bytes(d_oid) is None
    assert s.chain_bytes("0" * 64) is None
    assert s.chain_bytes("not an oid") is None


def _rewrite_chain_bytes(repo: Path, m: Manifest, name: str, value: int) -> Manifest:
    """m with tensor `name`'s delta object replaced by a copy whose header says chain_bytes=value
    (the same content: a hand-made object that lies about its cost)."""
    s = store(repo)
    t = next(t for t in m.tensors if t.name == name)
    header, payload = split_object(s.read(t.obj.oid))
    assert header.base
    header = dataclasses.replace(header, params={**header.params, CHAIN_BYTES: value})
    oid, size = s.write_encoded(codecs.Encoded(header, [bytes(payload)]))
    ref = ObjectRef(t.obj.raw, oid, size, t.obj.codec, t.obj.extra)
    tensors = [dataclasses.replace(x, obj=ref) if x is t else x for x in m.tensors]
    return Manifest(m.format, m.size, m.skeleton_length, m.skeleton, tensors)


@pytest.mark.parametrize("lie", ["huge", "tiny"])
def test_a_lying_chain_bytes_costs_compression_never_correctness(repo: Path, lie: str) -> None:
    rng = np.random.default_rng(4)
    sd = model()
    commit(repo, as_file(sd), "v0")
    sd = sparse_finetune(sd, rng)
    v1 = as_file(sd)
    commit(repo, v1, "v1")
    name = "layers.0.mlp.weight"
    m1 = manifest(repo, "HEAD")
    assert store(repo).read_header(next(t for t in m1.tensors if t.name == name).obj.oid).base
    # the staged (parent) version of the file now references the lying object
    value = 10**18 if lie == "huge" else next(t for t in m1.tensors if t.name == name).obj.stored + 1
    (repo / NAME).write_bytes(_rewrite_chain_bytes(repo, m1, name, value).to_bytes())
    git(repo, "add", NAME)
    git(repo, "commit", "-qm", "v1, its object lying about its chain")
    (repo / NAME).unlink()
    git(repo, "checkout", "--", NAME)
    assert (repo / NAME).read_bytes() == v1
    v2 = as_file(sparse_finetune(sd, rng))
    commit(repo, v2, "v2")
    t2 = next(t for t in manifest(repo, "HEAD").tensors if t.name == name)
    if lie == "huge":
        assert t2.obj.codec == "exponent"  # believed too costly to build on: a keyframe
    else:
        assert t2.obj.codec == "sparse"  # believed cheap: a delta, decoded exactly all the same
    (repo / NAME).unlink()
    git(repo, "checkout", "--", NAME)
    assert (repo / NAME).read_bytes() == v2


# ------------------------------------------------------------------ through a real remote


@pytest.mark.slow
def test_fresh_clone_of_full_finetunes_downloads_at_most_the_file(tmp_path: Path) -> None:
    assert giftless_available(), "giftless is not installed: run scripts/setup"
    remote = Remote(tmp_path, "giftless")
    try:
        work = make_origin(tmp_path, remote)
        rng = np.random.default_rng(5)
        sd = model()
        files = []
        for i in range(4):
            if i:
                sd = full_finetune(sd, rng)
            files.append(as_file(sd))
            commit(work, files[-1], f"v{i}")
        git(work, "push", "-q", "origin", "main")
        fresh = clone(tmp_path, remote, "fresh")
        assert (fresh / NAME).read_bytes() == files[-1]
        got = sum(p.stat().st_size for p in (fresh / ".git" / "lfs" / "objects").rglob("*") if p.is_file())
        assert 0 < got <= len(files[-1])
        git(fresh, "checkout", "-q", "HEAD~2")
        assert (fresh / NAME).read_bytes() == files[1]
    finally:
        remote.stop()
