"""Partial clones (`git clone --filter=blob:none`): manifests not fetched yet are read through
git (its promisor remote fetches them), so log, diff and fsck answer exactly as in a full clone.
A bare remote served over file:// (protocol v2), its LFS objects in its own lfs/ dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import finetuned

M = "model.safetensors"
VERSIONS = [
    finetuned(1),
    finetuned(2, ("layers.0.attn.weight",)),
    finetuned(3, ("layers.0.attn.weight", "layers.2.mlp.weight")),
]


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare remote holding three commits of a tracked checkpoint (and a plain file)."""
    bare = tmp_path / "remote.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git(bare, "config", "uploadpack.allowFilter", "true")
    git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    gtl(work, "install")
    gtl(work, "track", "*.safetensors")
    git(work, "remote", "add", "origin", f"file://{bare}")
    (work / "README.md").write_text("a model\n")
    git(work, "add", ".")
    git(work, "commit", "-qm", "setup")
    for i, data in enumerate(VERSIONS, 1):
        (work / M).write_bytes(data)
        (work / "README.md").write_text(f"a model, version {i}\n")
        git(work, "add", M, "README.md")
        git(work, "commit", "-qm", f"v{i}")
    git(work, "push", "-q", "origin", "main")
    run("git", "theta-like", "install", "--global", "--no-hooks", cwd=tmp_path)
    return bare


def missing_blobs(repo: Path) -> int:
    out = git(repo, "rev-list", "--objects", "--all", "--missing=print").stdout
    return sum(1 for line in out.splitlines() if line.startswith("?"))


@pytest.mark.slow
def test_log_diff_and_fsck_in_a_partial_clone_answer_as_a_full_clone(origin: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    run("git", "clone", "-q", f"file://{origin}", str(full), cwd=tmp_path)
    assert (full / M).read_bytes() == VERSIONS[-1]
    partial = tmp_path / "partial"
    run(
        "git",
        "clone",
        "-q",
        "--filter=blob:none",
        "--no-checkout",
        f"file://{origin}",
        str(partial),
        cwd=tmp_path,
    )
    assert git(partial, "config", "remote.origin.promisor").stdout.strip() == "true"
    assert missing_blobs(partial) >= 6  # three manifests, four READMEs, .gitattributes: none here
    # each command runs in a partial clone that has fetched nothing yet
    fresh = {name: tmp_path / f"partial-{name}" for name in ("log", "diff", "fsck", "stat")}
    for copy in fresh.values():
        shutil.copytree(partial, copy, symlinks=True)

    log = gtl(fresh["log"], "log").stdout
    assert log == gtl(full, "log").stdout
    assert log.count("new checkpoint") == 1 and log.count("changed") == 2

    diff = gtl(fresh["diff"], "diff", "HEAD~2", "HEAD").stdout
    assert diff == gtl(full, "diff", "HEAD~2", "HEAD").stdout
    assert "layers.0.attn.weight" in diff and "layers.2.mlp.weight" in diff

    stat = gtl(fresh["stat"], "diff", "--stat", "HEAD~1", "HEAD", "--exit-code", check=False)
    full_stat = gtl(full, "diff", "--stat", "HEAD~1", "HEAD", "--exit-code", check=False)
    assert (stat.returncode, stat.stdout) == (full_stat.returncode, full_stat.stdout) and stat.returncode == 1

    fsck = gtl(fresh["fsck"], "fsck").stdout
    assert fsck.splitlines()[0].startswith("checked 3 manifest(s)") and fsck.strip().endswith("ok")
    assert fsck.splitlines()[0] == gtl(full, "fsck").stdout.splitlines()[0]

    # the partial clone checks out the same bytes
    git(fresh["fsck"], "checkout", "-q", "main")
    assert (fresh["fsck"] / M).read_bytes() == VERSIONS[-1]
    git(fresh["fsck"], "checkout", "-q", "HEAD~2")
    assert (fresh["fsck"] / M).read_bytes() == VERSIONS[0]


def test_migrate_in_a_partial_clone_rewrites_as_in_a_full_clone(tmp_path: Path) -> None:
    # a git-lfs history on a file remote that allows partial clones
    src = tmp_path / "src"
    src.mkdir()
    git(src, "init", "-q", "-b", "main")
    run("git", "lfs", "install", "--local", cwd=src)
    run("git", "lfs", "track", "*.safetensors", cwd=src)
    for i, data in enumerate(VERSIONS[:2], 1):
        (src / M).write_bytes(data)
        git(src, "add", ".")
        git(src, "commit", "-qm", f"v{i}", "--date", f"170000{i}000 +0000")
    bare = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    shutil.copytree(src / ".git" / "lfs" / "objects", bare / "lfs" / "objects")
    git(bare, "config", "uploadpack.allowFilter", "true")
    git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")

    tips = {}
    for name, extra in (("full", ()), ("partial", ("--filter=blob:none",))):
        c = tmp_path / name
        run("git", "clone", "-q", *extra, f"file://{bare}", str(c), cwd=tmp_path)
        if name == "partial":
            assert missing_blobs(c) >= 1  # v1's pointer was never fetched
        gtl(c, "install")
        gtl(c, "migrate", "--yes")
        tips[name] = git(c, "rev-parse", "main", "main~1").stdout.split()
        assert (c / M).read_bytes() == VERSIONS[1]
        git(c, "checkout", "-q", "--detach", "main~1")
        assert (c / M).read_bytes() == VERSIONS[0]
    assert tips["partial"] == tips["full"]  # the same rewritten commits, id for id
