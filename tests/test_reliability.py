"""Reliability: fsck, gc, crash safety under fault injection, concurrency, hostile objects."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import finetuned, safetensors_bytes, small_model

from git_theta_like.manifest import Manifest
from git_theta_like.store import LocalStore

version = finetuned


V1 = version(1)
V2 = version(2, ("layers.0.attn.weight",))
V3 = version(3, ("layers.0.attn.weight", "layers.1.mlp.weight"))
V4 = version(4, ("embed.weight",))


def commit(repo: Path, data: bytes, msg: str, name: str = "model.safetensors") -> None:
    (repo / name).write_bytes(data)
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)


def store(repo: Path) -> LocalStore:
    return LocalStore(repo / ".git" / "lfs")


def oids_at(repo: Path, rev: str, path: str = "model.safetensors") -> dict[str, str]:
    m = Manifest.from_text(git(repo, "show", f"{rev}:{path}").stdout)
    return {what: ref.oid for what, ref in m.objects()}


@pytest.fixture
def history(repo: Path) -> Path:
    """main: v1 -> v2 (deltas); branch side: v3; a stash holding v4; an unpushed commit."""
    commit(repo, V1, "v1")
    commit(repo, V2, "v2")
    git(repo, "checkout", "-q", "-b", "side")
    commit(repo, V3, "v3")
    git(repo, "checkout", "-q", "main")
    (repo / "model.safetensors").write_bytes(V4)
    git(repo, "stash", "-q")
    return repo


# ------------------------------------------------------------------ fsck


@pytest.mark.slow
def test_fsck_passes_then_names_corrupt_and_missing_objects(history: Path) -> None:
    out = gtl(history, "fsck").stdout
    assert out.strip().endswith("ok")
    victim = oids_at(history, "side")["tensor 'layers.1.mlp.weight'"]
    p = store(history).path(victim)
    data = bytearray(p.read_bytes())
    data[3] ^= 0x10
    os.chmod(p, 0o644)
    p.write_bytes(bytes(data))
    r = gtl(history, "fsck", check=False)
    assert r.returncode == 1
    assert f"corrupt: {victim}" in r.stdout and "layers.1.mlp.weight" in r.stdout
    store(history).delete(victim)
    r = gtl(history, "fsck", check=False)
    assert r.returncode == 1 and f"missing: {victim}" in r.stdout


@pytest.mark.slow
def test_fsck_finds_a_missing_delta_base(history: Path) -> None:
    delta_obj = oids_at(history, "main")["tensor 'layers.0.attn.weight'"]
    base = store(history).read_header(delta_obj).base
    assert base is not None
    # the base is referenced by main~1 too; drop that history so only the chain needs it
    store(history).delete(base)
    r = gtl(history, "fsck", check=False)
    assert r.returncode == 1 and base in r.stdout


def test_fsck_reports_a_manifest_with_conflict_markers(repo: Path) -> None:
    commit(repo, V1, "v1")
    text = git(repo, "show", "HEAD:model.safetensors").stdout
    blob = run(
        "git", "hash-object", "-w", "--stdin", cwd=repo, input=("<<<<<<< ours\n" + text).encode()
    ).stdout
    assert blob  # an unreachable blob is not checked; make it reachable through the index
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob.strip()},broken.safetensors")
    r = gtl(repo, "fsck", check=False)
    assert r.returncode == 1 and "bad-manifest" in r.stdout and "broken.safetensors" in r.stdout


# ------------------------------------------------------------------ gc


@pytest.mark.slow
def test_gc_keeps_everything_reachable_and_deletes_orphans(history: Path) -> None:
    # an orphan: a version staged, then dropped from the index
    (history / "model.safetensors").write_bytes(version(9, ("layers.2.attn.bias", "layers.2.mlp.weight")))
    git(history, "add", "model.safetensors")
    git(history, "reset", "-q", "--hard")
    before = store(history).all_oids()
    dry = gtl(history, "gc", "--dry-run", "--prune=now").stdout
    assert "would delete 2" in dry and store(history).all_oids() == before
    out = gtl(history, "gc", "--prune=now").stdout
    assert "deleted 2" in out
    assert len(store(history).all_oids()) == len(before) - 2
    assert gtl(history, "fsck").stdout.strip().endswith("ok")
    for rev, data in (("main~1", V1), ("main", V2), ("side", V3)):
        git(history, "checkout", "-q", rev)
        assert (history / "model.safetensors").read_bytes() == data
    git(history, "checkout", "-q", "main")
    git(history, "stash", "pop", "-q")
    assert (history / "model.safetensors").read_bytes() == V4


def test_gc_keeps_delta_bases_whose_commits_are_gone(repo: Path) -> None:
    commit(repo, V1, "v1")
    commit(repo, V2, "v2")  # layers.0.attn.weight: a delta on v1's object
    delta_obj = oids_at(repo, "HEAD")["tensor 'layers.0.attn.weight'"]
    base = store(repo).read_header(delta_obj).base
    # rewrite history so that no commit holds v1 any more
    git(repo, "checkout", "-q", "--orphan", "fresh")
    git(repo, "commit", "-qm", "v2 only")
    git(repo, "branch", "-D", "main")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    gtl(repo, "gc", "--prune=now")
    assert store(repo).has(base)
    (repo / "model.safetensors").unlink()
    git(repo, "checkout", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == V2


def test_gc_respects_the_grace_period(repo: Path) -> None:
    commit(repo, V1, "v1")
    (repo / "model.safetensors").write_bytes(V2)
    git(repo, "add", "model.safetensors")
    git(repo, "reset", "-q", "--hard")
    assert "deleted 0" in gtl(repo, "gc").stdout  # default: objects younger than 1h stay


@pytest.mark.slow
def test_git_lfs_prune_cannot_lose_unpushed_objects(history: Path) -> None:
    run("git", "lfs", "prune", cwd=history)
    assert gtl(history, "fsck").stdout.strip().endswith("ok")
    git(history, "checkout", "-q", "side")
    assert (history / "model.safetensors").read_bytes() == V3


# ------------------------------------------------------------------ crash safety


def killed(repo: Path, point: str, n: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_THETA_LIKE_FAULT": f"{point}:{n}"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 4, 7, 9])
def test_add_killed_after_n_object_writes_leaves_a_consistent_repo(repo: Path, n: int) -> None:
    commit(repo, V1, "v1")
    # a new model: every random tensor (10 of them) is a new object
    (repo / "model.safetensors").write_bytes(safetensors_bytes(small_model(seed=n, scale=2)))
    data = (repo / "model.safetensors").read_bytes()
    r = killed(repo, "write", n, "add", "model.safetensors")
    assert r.returncode != 0  # the filter died: git refuses to stage
    assert gtl(repo, "fsck").stdout.strip().endswith("ok")
    git(repo, "add", "model.safetensors")  # the next command completes
    git(repo, "commit", "-qm", "after crash")
    assert gtl(repo, "fsck").stdout.strip().endswith("ok")
    (repo / "model.safetensors").unlink()
    git(repo, "checkout", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == data


@pytest.mark.slow
def test_pushes_and_checkouts_killed_midway_recover(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "remote.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git(repo, "remote", "add", "origin", f"file://{bare}")
    commit(repo, V1, "v1")
    commit(repo, V3, "v3")
    for n in (1, 4):
        r = killed(repo, "upload", n, "push", "-q", "origin", "main")
        assert r.returncode != 0
        assert run("git", "ls-remote", str(bare), cwd=tmp_path).stdout == ""  # ref unchanged
    git(repo, "push", "-q", "origin", "main")
    run("git", "theta-like", "install", "--global", "--no-hooks", cwd=tmp_path)
    c = tmp_path / "clone"
    run("git", "clone", "-q", "--no-checkout", f"file://{bare}", str(c), cwd=tmp_path)
    for n in (1, 3, 7):
        r = killed(c, "download", n, "checkout", "-q", "main")
        assert r.returncode != 0
        assert (
            not any((c / ".git" / "lfs" / "tmp").glob("*.part"))
            if (c / ".git" / "lfs" / "tmp").exists()
            else True
        )
        assert gtl(c, "fsck").stdout.strip().endswith("ok")
    git(c, "checkout", "-q", "-f", "main")
    assert (c / "model.safetensors").read_bytes() == V3
    assert git(c, "status", "--porcelain").stdout == ""


def test_concurrent_cleans_do_not_corrupt_the_store(repo: Path) -> None:
    big = safetensors_bytes(small_model(seed=3, scale=8))
    (repo / "a.safetensors").write_bytes(big)
    procs = [
        subprocess.Popen(
            ["git-theta-like", "clean", "a.safetensors"],
            cwd=repo,
            stdin=open(repo / "a.safetensors", "rb"),  # noqa: SIM115
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outs = [p.communicate()[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1
    m = Manifest.from_bytes(outs[0])
    s = store(repo)
    for _, ref in m.objects():
        assert hashlib.sha256(s.path(ref.oid).read_bytes()).hexdigest() == ref.oid
        s.read_raw(ref.oid, expect_raw=ref.raw)


# ------------------------------------------------------------------ hostile objects


def test_object_with_valid_hash_but_malformed_header(repo: Path) -> None:
    commit(repo, V1, "v1")
    text = git(repo, "show", "HEAD:model.safetensors").stdout
    m = Manifest.from_text(text)
    target = m.tensors[1]
    payload = b"\x00" * 64 + b'{"v":1,"codec":"planes"' + (23).to_bytes(4, "little") + b"GTL\x01"
    oid = hashlib.sha256(payload).hexdigest()
    p = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(payload)
    hacked = text.replace(target.obj.oid, oid, 1)
    (repo / "model.safetensors").unlink()
    blob = run("git", "hash-object", "-w", "--stdin", cwd=repo, input=hacked.encode()).stdout.strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{blob},model.safetensors")
    r = git(repo, "checkout", "--", "model.safetensors", check=False)
    assert r.returncode != 0 and "malformed header" in r.stderr and oid in r.stderr
    assert not (repo / "model.safetensors").exists()


def test_stale_temp_files_from_a_crash_are_cleaned_by_gc(repo: Path) -> None:
    commit(repo, V1, "v1")
    tmp = repo / ".git" / "lfs" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    stale = tmp / "gtl-crashed"
    stale.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    out = gtl(repo, "gc").stdout
    assert "1 stale temp file" in out and not stale.exists()


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 3])
def test_merge_killed_midway_leaves_a_consistent_repo(repo: Path, n: int) -> None:
    commit(repo, V1, "base")
    git(repo, "checkout", "-q", "-b", "a")
    commit(repo, finetuned(11, ("layers.0.attn.weight", "layers.1.mlp.weight", "layers.2.attn.weight")), "a")
    git(repo, "checkout", "-q", "-b", "b", "main")
    commit(repo, finetuned(12, ("layers.0.attn.weight", "layers.1.mlp.weight", "layers.2.attn.weight")), "b")
    r = killed(repo, "write", n, "merge", "--no-edit", "a")
    assert r.returncode != 0  # the merge driver died: git reports a conflict, nothing is committed
    assert gtl(repo, "fsck").stdout.strip().endswith("ok")
    git(repo, "merge", "--abort")
    git(repo, "merge", "-q", "--no-edit", "a")  # the next merge completes
    assert gtl(repo, "fsck").stdout.strip().endswith("ok")
    merged = (repo / "model.safetensors").read_bytes()
    (repo / "model.safetensors").unlink()
    git(repo, "checkout", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == merged
    assert "[merged: average]" in gtl(repo, "show", "HEAD", "model.safetensors").stdout
