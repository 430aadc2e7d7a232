"""gc and fsck roots beyond the current branch: linked worktrees (detached HEAD, index, HEAD
reflog), every ref namespace (notes, stash and its reflog, refs/original, replace refs, tags of
blobs, any other refs/*), and gc's lock against a `git add` in flight. Through real git."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, gtl
from fixtures import finetuned, safetensors_bytes, small_model

from git_theta_like.manifest import Manifest
from git_theta_like.store import LocalStore

M = "model.safetensors"
V1 = finetuned(1)
V2 = finetuned(2, ("layers.0.attn.weight",))
V3 = finetuned(3, ("layers.1.mlp.weight",))
V4 = finetuned(4, ("embed.weight",))


def store(repo: Path) -> LocalStore:
    return LocalStore(repo / ".git" / "lfs")


def commit(repo: Path, data: bytes, msg: str) -> str:
    (repo / M).write_bytes(data)
    git(repo, "add", M)
    git(repo, "commit", "-qm", msg)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def objects_of(repo: Path, spec: str) -> set[str]:
    """The objects of the manifest `git show spec` names (a rev:path, a blob id, :path)."""
    m = Manifest.from_text(git(repo, "show", spec).stdout)
    return {ref.oid for _, ref in m.objects()}


def staged_orphan(repo: Path, seed: int) -> set[str]:
    """Objects staged once and then dropped from the index: what gc must delete."""
    before = store(repo).all_oids()
    (repo / M).write_bytes(finetuned(seed, ("layers.2.attn.weight", "layers.2.mlp.weight")))
    git(repo, "add", M)
    git(repo, "reset", "-q", "--hard")
    return store(repo).all_oids() - before


def checks(fsck_out: str) -> int:
    """How many manifests fsck says it checked."""
    first = fsck_out.splitlines()[0]
    assert first.startswith("checked "), fsck_out
    return int(first.split()[1])


def checkout_bytes(repo: Path, rev: str) -> bytes:
    git(repo, "checkout", "-q", "--detach", rev)
    return (repo / M).read_bytes()


# ------------------------------------------------------------------ linked worktrees


@pytest.mark.slow
def test_gc_and_fsck_keep_what_linked_worktrees_need(repo: Path, tmp_path: Path) -> None:
    commit(repo, V1, "v1")
    base = objects_of(repo, f"HEAD:{M}")
    # a worktree whose detached HEAD is the only reference to v2
    wt1 = tmp_path / "wt1"
    git(repo, "worktree", "add", "-q", "--detach", str(wt1))
    commit(wt1, V2, "v2, on a detached HEAD")
    only_head = objects_of(wt1, f"HEAD:{M}") - base
    # ... and whose HEAD reflog alone still holds v3 (HEAD moved back to v2)
    commit(wt1, V3, "v3, then left")
    only_reflog = objects_of(wt1, f"HEAD:{M}") - base - only_head
    git(wt1, "checkout", "-q", "--detach", "HEAD~1")
    # a worktree whose index alone holds v4 (staged, never committed)
    wt2 = tmp_path / "wt2"
    git(repo, "worktree", "add", "-q", "--detach", str(wt2))
    (wt2 / M).write_bytes(V4)
    git(wt2, "add", M)
    only_index = objects_of(wt2, f":{M}") - base
    assert only_head and only_reflog and only_index
    orphans = staged_orphan(repo, 9)
    assert orphans

    out = gtl(repo, "gc", "--prune=now").stdout
    assert f"deleted {len(orphans)} " in out
    have = store(repo).all_oids()
    assert only_head | only_reflog | only_index <= have and not orphans & have
    # the same from inside a linked worktree (its own HEAD and index, the main one's too)
    assert "deleted 0 " in gtl(wt2, "gc", "--prune=now").stdout
    assert only_head | only_reflog | only_index <= store(repo).all_oids()
    for where in (repo, wt1, wt2):
        out = gtl(where, "fsck").stdout
        assert checks(out) == 4 and out.strip().endswith("ok")  # v1, v2, v3 and staged v4

    # the worktrees check out exactly what they hold
    (wt1 / M).unlink()
    git(wt1, "checkout", "--", M)
    assert (wt1 / M).read_bytes() == V2
    git(wt1, "checkout", "-q", "--detach", "HEAD@{1}")
    assert (wt1 / M).read_bytes() == V3
    (wt2 / M).unlink()
    git(wt2, "checkout", "--", M)
    assert (wt2 / M).read_bytes() == V4

    # fsck checks what only a worktree's index needs: it names it when it is gone
    victim = sorted(only_index)[0]
    store(repo).delete(victim)
    r = gtl(repo, "fsck", check=False)
    assert r.returncode == 1 and f"missing: {victim}" in r.stdout and f"index of worktree {wt2}" in r.stdout


# ------------------------------------------------------------------ ref namespaces


@pytest.mark.slow
def test_gc_and_fsck_keep_what_every_ref_namespace_reaches(repo: Path) -> None:
    commit(repo, V1, "v1")
    main = git(repo, "rev-parse", "HEAD").stdout.strip()
    base = objects_of(repo, f"HEAD:{M}")
    unique: dict[str, set[str]] = {}
    expected: dict[str, bytes] = {}

    def detached(data: bytes, msg: str) -> str:
        git(repo, "checkout", "-q", "--detach", main)
        return commit(repo, data, msg)

    # refs/original: a filter-branch backup (history rewritten without the checkpoint)
    git(repo, "checkout", "-q", "main")
    commit(repo, finetuned(11, ("layers.0.mlp.weight",)), "v11")
    unique["original"] = objects_of(repo, f"HEAD:{M}") - base
    expected["original"] = finetuned(11, ("layers.0.mlp.weight",))
    subprocess.run(
        [
            "git",
            "filter-branch",
            "-f",
            "--index-filter",
            f"git rm -q --cached --ignore-unmatch {M}",
            "main~1..main",
        ],
        cwd=repo,
        env={**os.environ, "FILTER_BRANCH_SQUELCH_WARNING": "1"},
        capture_output=True,
        check=True,
    )
    assert git(repo, "rev-parse", "--verify", "-q", "refs/original/refs/heads/main").stdout.strip()
    # refs/notes: a manifest kept as a note (only the notes commit's tree holds the blob)
    detached(finetuned(12, ("layers.1.attn.weight",)), "v12")
    blob12 = git(repo, "rev-parse", f"HEAD:{M}").stdout.strip()
    unique["notes"] = objects_of(repo, blob12) - base
    expected["notes"] = finetuned(12, ("layers.1.attn.weight",))
    git(repo, "notes", "--ref=checkpoints", "add", "-C", blob12, main)
    # refs/replace: a replacement commit
    c13 = detached(finetuned(13, ("layers.2.attn.weight",)), "v13")
    unique["replace"] = objects_of(repo, f"{c13}:{M}") - base
    expected["replace"] = finetuned(13, ("layers.2.attn.weight",))
    dummy = git(repo, "commit-tree", "-m", "replaced", f"{main}^{{tree}}").stdout.strip()
    git(repo, "replace", dummy, c13)
    # any other namespace
    c14 = detached(finetuned(14, ("layers.0.attn.bias",)), "v14")
    unique["custom"] = objects_of(repo, f"{c14}:{M}") - base
    expected["custom"] = finetuned(14, ("layers.0.attn.bias",))
    git(repo, "update-ref", "refs/keep/experiment", c14)
    # a tag naming a manifest blob directly
    git(repo, "checkout", "-q", "--detach", main)
    (repo / M).write_bytes(finetuned(15, ("layers.1.norm.weight", "layers.1.mlp.weight")))
    git(repo, "add", M)
    blob15 = git(repo, "rev-parse", f":{M}").stdout.strip()
    unique["blob tag"] = objects_of(repo, blob15) - base
    expected["blob tag"] = finetuned(15, ("layers.1.norm.weight", "layers.1.mlp.weight"))
    git(repo, "tag", "manifest-15", blob15)
    git(repo, "reset", "-q", "--hard")
    # the stash, and an older stash entry only its reflog holds
    for key, seed in (("stash@{1}", 16), ("stash", 17)):
        data = finetuned(seed, ("layers.2.mlp.weight", "layers.2.attn.bias"))
        (repo / M).write_bytes(data)
        git(repo, "add", M)
        unique[key] = objects_of(repo, f":{M}") - base
        expected[key] = data
        git(repo, "stash", "-q")
    # nothing else reaches them: no branch, no HEAD reflog
    git(repo, "reflog", "expire", "--expire=now", "HEAD", "refs/heads/main")
    assert all(unique.values())
    orphans = staged_orphan(repo, 19)

    gtl(repo, "gc", "--prune=now")
    have = store(repo).all_oids()
    for key, oids in unique.items():
        assert oids <= have, key
    assert not orphans & have
    out = gtl(repo, "fsck").stdout
    assert out.strip().endswith("ok") and checks(out) == 1 + len(unique)  # and v1

    git(repo, "checkout", "-q", "--detach", main)
    assert checkout_bytes(repo, "refs/original/refs/heads/main") == expected["original"]
    assert checkout_bytes(repo, "refs/keep/experiment") == expected["custom"]
    assert checkout_bytes(repo, f"refs/replace/{dummy}") == expected["replace"]
    git(repo, "checkout", "-q", "--detach", main)
    for key, blob in (("notes", blob12), ("blob tag", "manifest-15")):
        blob_id = git(repo, "rev-parse", blob).stdout.strip()
        git(repo, "update-index", "--cacheinfo", f"100644,{blob_id},{M}")
        (repo / M).unlink()
        git(repo, "checkout", "--", M)
        assert (repo / M).read_bytes() == expected[key], key
        git(repo, "reset", "-q", "--hard")
    for key in ("stash", "stash@{1}"):
        git(repo, "stash", "apply", "-q", key)
        assert (repo / M).read_bytes() == expected[key], key
        git(repo, "reset", "-q", "--hard")


# ------------------------------------------------------------------ the lock


@pytest.mark.slow
def test_gc_waits_for_a_git_add_in_flight_and_deletes_nothing_it_wrote(repo: Path, tmp_path: Path) -> None:
    commit(repo, V1, "v1")
    orphans = staged_orphan(repo, 9)
    data = safetensors_bytes(small_model(seed=7, scale=2))  # every tensor a new object
    (repo / M).write_bytes(data)
    before = store(repo).all_oids()
    go = tmp_path / "go"
    env = {**os.environ, "GIT_THETA_LIKE_FAULT": f"write:2:pause={go}"}
    adder = subprocess.Popen(
        ["git", "add", M], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while not Path(f"{go}.reached").exists():  # the clean has written two objects, and waits
            assert adder.poll() is None, adder.communicate()
        written = store(repo).all_oids() - before
        assert len(written) >= 2

        # a gc that may not wait refuses, and deletes nothing
        r = gtl(repo, "gc", "--prune=now", "--wait=now", check=False)
        assert r.returncode == 1
        assert "another git command is writing objects; try again" in r.stderr
        assert before | written <= store(repo).all_oids()  # (other workers may still be writing)

        # a gc that waits runs once the git add is done: what the clean wrote is staged and stays
        gc = subprocess.Popen(
            ["git", "theta-like", "gc", "--prune=now", "--wait=10m"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert gc.stderr is not None
        assert "waiting for" in gc.stderr.readline()  # it is blocked on the lock now
        go.touch()
        out, err = adder.communicate()
        assert adder.returncode == 0, err
        gc_out, gc_err = gc.communicate()
        assert gc.returncode == 0, gc_err
    finally:
        go.touch()
        adder.wait()
    have = store(repo).all_oids()
    assert written <= have and objects_of(repo, f":{M}") <= have
    assert orphans <= before and not orphans & have  # the gc did run, after the git add
    assert gtl(repo, "fsck").stdout.strip().endswith("ok")
    (repo / M).unlink()
    git(repo, "checkout", "--", M)
    assert (repo / M).read_bytes() == data


def test_gc_refuses_while_a_writer_holds_the_shared_lock(repo: Path, tmp_path: Path) -> None:
    commit(repo, V1, "v1")
    new = tmp_path / "new.safetensors"
    new.write_bytes(safetensors_bytes(small_model(seed=8)))
    go = tmp_path / "go"
    # a writer outside any git command (no index.lock): an Engine that has cleaned a file holds
    # the store's shared lock until it is closed; nothing references what it wrote
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import io, sys, time, pathlib\n"
            "from git_theta_like.filters.engine import Engine\n"
            "from git_theta_like.formats import ByteReader\n"
            "from git_theta_like.manifest import Manifest\n"
            "from git_theta_like.store import LocalStore\n"
            "e = Engine(LocalStore(sys.argv[1]))\n"
            "data = pathlib.Path(sys.argv[2]).read_bytes()\n"
            "m = Manifest.from_bytes(e.clean(ByteReader(io.BytesIO(data))))\n"
            "print(' '.join(sorted({r.oid for _, r in m.objects()})), flush=True)\n"
            "while not pathlib.Path(sys.argv[3]).exists(): time.sleep(0.02)\n"
            "e.close()\n",
            str(repo / ".git" / "lfs"),
            str(new),
            str(go),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        written = set(writer.stdout.readline().split())
        assert written and written <= store(repo).all_oids()
        r = gtl(repo, "gc", "--prune=now", "--wait=now", check=False)
        assert r.returncode == 1 and "another git command is writing objects; try again" in r.stderr
        assert written <= store(repo).all_oids()
        go.touch()
        assert writer.wait() == 0
    finally:
        go.touch()
        writer.wait()
    # once the writer is done, its unreferenced objects are garbage like any other
    out = gtl(repo, "gc", "--prune=now").stdout
    assert f"deleted {len(written)} " in out and not written & store(repo).all_oids()
