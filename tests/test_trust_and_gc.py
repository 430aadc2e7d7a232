"""Issue 14 items 1 and 2: clean never trusts a (raw hash -> object) pair it has not checked
against the object's own header, nor one from a blob at a path the filter does not track; fsck
checks every pair it meets; objects are freshened when a write or a reuse finds them; gc refuses a
store other repositories share unless told, and goes past text files that only look like
manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path

from conftest import git, gtl, run
from fixtures import safetensors_bytes
from test_hostile_objects import commit_blob

from git_theta_like.manifest import Manifest, ObjectRef
from git_theta_like.store.local import USERS_FILE, LocalStore

A = bytes(range(256)) * 16  # 4 KiB: tensor A
B = bytes(reversed(range(256))) * 16  # tensor B: same dtype and shape, other content


def _file(data: bytes) -> bytes:
    return safetensors_bytes({"w": ("U8", (len(data),), data)})


def _staged(repo: Path, path: str) -> Manifest:
    return Manifest.from_bytes(git(repo, "show", f":{path}").stdout.encode())


def _hostile(repo: Path) -> tuple[bytes, str]:
    """b.safetensors committed; a hand-made manifest mapping A's raw hash to B's object."""
    (repo / "b.safetensors").write_bytes(_file(B))
    git(repo, "add", "b.safetensors")
    git(repo, "commit", "-qm", "b")
    mb = _staged(repo, "b.safetensors")
    b_obj = mb.tensors[0].obj
    lie = ObjectRef(hashlib.sha256(A).hexdigest(), b_obj.oid, b_obj.stored, b_obj.codec, b_obj.extra)
    mb = dataclasses.replace(mb, tensors=[dataclasses.replace(mb.tensors[0], obj=lie)])
    return mb.to_bytes(), b_obj.oid


def test_clean_reuses_no_pair_a_hostile_blob_offers(repo: Path) -> None:
    """A text file at an untracked path and a hand-made manifest at a tracked one both map A's raw
    hash to B's object; `git add` of a checkpoint holding A commits objects that decode to A, the
    checkout is byte-identical, and fsck flags the hand-made manifest although b.safetensors uses
    the same object correctly."""
    text, b_oid = _hostile(repo)
    commit_blob(repo, "notes.txt", text, "a text file that looks like a manifest")
    commit_blob(repo, "evil.bin", text, "a hand-made manifest at a tracked path")
    (repo / "a.safetensors").write_bytes(_file(A))
    git(repo, "add", "a.safetensors")
    git(repo, "commit", "-qm", "a")
    ma = _staged(repo, "a.safetensors")
    obj = ma.tensors[0].obj
    assert obj.oid != b_oid and obj.raw == hashlib.sha256(A).hexdigest()
    store = LocalStore(repo / ".git" / "lfs")
    assert bytes(store.read_raw(obj.oid, "A", obj.raw, 0, len(A))) == A
    (repo / "a.safetensors").unlink()
    git(repo, "checkout", "--", "a.safetensors")
    assert (repo / "a.safetensors").read_bytes() == _file(A)
    p = gtl(repo, "fsck", check=False)
    assert p.returncode == 1, p.stdout
    assert f"corrupt: {b_oid}" in p.stdout and "evil.bin" in p.stdout, p.stdout
    assert "a.safetensors" not in p.stdout and "b.safetensors" not in p.stdout, p.stdout


def test_index_manifests_skip_untracked_paths(repo: Path) -> None:
    """Only index entries at paths `filter=theta-like` tracks offer objects to reuse."""
    from git_theta_like.gitio.repo import Repo
    from git_theta_like.gitio.scan import IndexManifests

    text, _ = _hostile(repo)
    commit_blob(repo, "notes.txt", text, "untracked")
    commit_blob(repo, "evil.bin", text, "tracked")
    others = IndexManifests(Repo(repo)).others("a.safetensors")
    assert len(others) == 2  # b.safetensors and evil.bin, not notes.txt


def _age(store: LocalStore, oids: list[str], seconds: float) -> None:
    old = time.time() - seconds
    for oid in oids:
        os.utime(store.path(oid), (old, old))


def _mtime(store: LocalStore, oid: str) -> float:
    return store.path(oid).stat().st_mtime


def test_reuse_and_rewrite_freshen_old_objects(repo: Path) -> None:
    """Objects older than gc's grace period are freshened when clean reuses them (a re-add of
    unchanged content) and when a write finds them present (content added again after it was
    unstaged), so a concurrent gc's grace period covers them."""
    store = LocalStore(repo / ".git" / "lfs")
    (repo / "a.safetensors").write_bytes(_file(A))
    git(repo, "add", "a.safetensors")
    oids = [ref.oid for _, ref in _staged(repo, "a.safetensors").objects()]
    _age(store, oids, 7200)
    os.utime(repo / "a.safetensors")  # git re-cleans: every object is reused
    git(repo, "add", "--renormalize", "a.safetensors")
    assert all(time.time() - _mtime(store, o) < 600 for o in oids)
    git(repo, "rm", "-q", "--cached", "a.safetensors")  # unreferenced now
    _age(store, oids, 7200)
    git(repo, "add", "a.safetensors")  # nothing to reuse: written again, found present
    assert all(time.time() - _mtime(store, o) < 600 for o in oids)


def test_gc_rechecks_age_before_each_delete(tmp_path: Path) -> None:
    """gc deletes through delete_if_older: an object freshened after gc's scan is kept."""
    store = LocalStore(tmp_path / "lfs")
    oid, _ = store.write([b"payload"])
    cutoff = time.time() - 3600
    assert store.delete_if_older(oid, cutoff) == 0 and store.has(oid)
    _age(store, [oid], 7200)
    assert store.delete_if_older(oid, cutoff) > 0 and not store.has(oid)


def _shared_repo(root: Path, name: str, storage: Path) -> Path:
    r = root / name
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "lfs.storage", str(storage))
    gtl(r, "install")
    gtl(r, "track", "*.safetensors")
    git(r, "add", ".gitattributes")
    git(r, "commit", "-qm", "track")
    return r


def test_gc_refuses_a_shared_store_unless_told(tmp_path: Path) -> None:
    """Two repositories with one lfs.storage: gc in one refuses (deleting nothing) without
    --shared-storage; with it, it keeps what the other repository's roots need."""
    storage = tmp_path / "shared-lfs"
    r1 = _shared_repo(tmp_path, "r1", storage)
    r2 = _shared_repo(tmp_path, "r2", storage)
    (r2 / "b.safetensors").write_bytes(_file(B))
    git(r2, "add", "b.safetensors")
    git(r2, "commit", "-qm", "b")
    store = LocalStore(storage)
    assert str(r2.resolve() / ".git") in (storage / USERS_FILE).read_text()
    oids = [ref.oid for _, ref in _staged(r2, "b.safetensors").objects()]
    _age(store, oids, 7200)
    p = gtl(r1, "gc", "--prune=now", check=False)
    assert p.returncode != 0 and "--shared-storage" in p.stderr and "r2" in p.stderr, p.stderr
    assert all(store.has(o) for o in oids)
    p = gtl(r1, "gc", "--prune=now", "--shared-storage")
    assert all(store.has(o) for o in oids), p.stdout
    (r2 / "b.safetensors").unlink()
    git(r2, "checkout", "--", "b.safetensors")
    assert (r2 / "b.safetensors").read_bytes() == _file(B)
    gtl(r2, "fsck")


def test_gc_goes_past_a_text_file_with_the_manifest_magic(repo: Path) -> None:
    """A committed non-manifest file that starts with the manifest magic, at an untracked path,
    neither stops gc nor keeps anything: unreferenced old objects are still deleted."""
    run("git", "theta-like", "gc", "--prune=now", cwd=repo)
    (repo / "x.safetensors").write_bytes(_file(A))
    git(repo, "add", "x.safetensors")
    store = LocalStore(repo / ".git" / "lfs")
    oids = [ref.oid for _, ref in _staged(repo, "x.safetensors").objects()]
    text = b"git-theta-like manifest v1 this is prose, not a manifest: " + oids[1].encode() + b"\n"
    git(repo, "rm", "-q", "--cached", "x.safetensors")
    commit_blob(repo, "README.txt", text, "prose that starts with the magic")
    _age(store, oids, 7200)
    p = gtl(repo, "gc", "--prune=now")
    assert "README.txt" not in p.stderr, p.stderr
    assert not any(store.has(o) for o in oids)
