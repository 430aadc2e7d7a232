"""A path that was plain git-lfs in older commits (a user switched `*.safetensors` from `git lfs
track` to `git theta-like track`), through real git and git-lfs: old versions check out
byte-identical, stay git-lfs pointers while unchanged (`git status` clean), are downloaded from a
remote when only the remote has them, and `diff` / `log` show them as files stored whole.
Also GIT_LFS_SKIP_SMUDGE, honoured like GIT_THETA_LIKE_SKIP_SMUDGE."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import finetuned
from test_remotes import Remote, clone, global_install, make_origin, remote  # noqa: F401

from git_theta_like.lfs.pointer import parse_pointer
from git_theta_like.manifest import is_manifest

V1 = finetuned(1)
V2 = finetuned(2, ("layers.0.attn.weight",))
V3 = finetuned(3, ("layers.1.mlp.weight",))
NAME = "model.safetensors"


def pointer_text(data: bytes) -> bytes:
    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def blob_of(r: Path, spec: str) -> bytes:
    return subprocess.run(["git", "cat-file", "blob", spec], cwd=r, capture_output=True, check=True).stdout


def clean_status(r: Path) -> str:
    return git(r, "status", "--porcelain").stdout


@pytest.fixture
def switched(tmp_path: Path) -> Path:
    """V1 committed by git-lfs, then the pattern moved to git-theta-like and V2 committed."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    run("git", "lfs", "install", "--local", cwd=r)
    run("git", "lfs", "track", "*.safetensors", cwd=r)
    (r / NAME).write_bytes(V1)
    git(r, "add", ".gitattributes", NAME)
    git(r, "commit", "-qm", "v1 (git-lfs)")
    assert parse_pointer(blob_of(r, f"HEAD:{NAME}")) is not None
    run("git", "lfs", "untrack", "*.safetensors", cwd=r)
    gtl(r, "install")
    gtl(r, "track", "*.safetensors")
    (r / NAME).write_bytes(V2)
    git(r, "add", ".gitattributes", NAME)
    git(r, "commit", "-qm", "v2 (git-theta-like)")
    assert is_manifest(blob_of(r, f"HEAD:{NAME}"))
    return r


def test_checkout_across_the_switch(switched: Path) -> None:
    """Whole commits: the old one (its .gitattributes says filter=lfs) and back to the tip."""
    r = switched
    git(r, "checkout", "-q", "HEAD~1")
    assert (r / NAME).read_bytes() == V1
    assert clean_status(r) == ""
    git(r, "checkout", "-q", "main")
    assert (r / NAME).read_bytes() == V2
    assert clean_status(r) == ""


@pytest.mark.slow
def test_old_commit_through_our_filter(switched: Path) -> None:
    """With the theta-like attributes in .git/info/attributes (they win over the committed ones),
    the old commit's pointer goes to our smudge: the file comes out of .git/lfs/objects, and it
    stays a clean pointer after a touch."""
    r = switched
    (r / ".git" / "info" / "attributes").write_text(
        "*.safetensors filter=theta-like diff=theta-like merge=theta-like -text\n"
    )
    os.unlink(r / NAME)
    git(r, "checkout", "-q", "HEAD~1")
    assert (r / NAME).read_bytes() == V1
    assert clean_status(r) == ""
    os.utime(r / NAME, (1, 1))  # stat data changed: git re-cleans the file
    assert clean_status(r) == ""
    assert git(r, "diff", "--quiet", check=False).returncode == 0
    git(r, "checkout", "-q", "main")
    assert (r / NAME).read_bytes() == V2
    assert clean_status(r) == ""


@pytest.mark.slow
def test_path_checkout_of_a_pointer_version(switched: Path) -> None:
    """`git checkout OLD -- path` under the new attributes: the file, staged as the same pointer;
    unchanged it stays that pointer, changed it becomes a manifest."""
    r = switched
    old_blob = git(r, "rev-parse", f"HEAD~1:{NAME}").stdout.strip()
    git(r, "checkout", "HEAD~1", "--", NAME)
    assert (r / NAME).read_bytes() == V1
    assert git(r, "rev-parse", f":{NAME}").stdout.strip() == old_blob
    assert clean_status(r) == f"M  {NAME}\n"  # staged (the old version), nothing unstaged
    os.utime(r / NAME, (1, 1))
    assert git(r, "diff", "--quiet", check=False).returncode == 0
    git(r, "add", NAME)  # re-cleaned: content is the pointer's object, so the pointer stays
    assert git(r, "rev-parse", f":{NAME}").stdout.strip() == old_blob
    assert gtl(r, "diff", "--exit-code", check=False).returncode == 0  # index vs working tree

    (r / NAME).write_bytes(V3)
    git(r, "add", NAME)
    assert is_manifest(blob_of(r, f":{NAME}"))
    git(r, "commit", "-qm", "v3")
    os.unlink(r / NAME)
    git(r, "checkout", "--", NAME)
    assert (r / NAME).read_bytes() == V3
    git(r, "checkout", "HEAD~1", "--", NAME)
    assert (r / NAME).read_bytes() == V2


def test_corrupt_lfs_object_is_an_error(switched: Path) -> None:
    """A git-lfs object that does not hash to its pointer's oid is refused; the file is not
    written with wrong bytes."""
    r = switched
    ptr = parse_pointer(blob_of(r, f"HEAD~1:{NAME}"))
    assert ptr is not None
    obj = r / ".git" / "lfs" / "objects" / ptr.oid[:2] / ptr.oid[2:4] / ptr.oid
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    keep = r / ".git" / "theta-like" / "objects" / ptr.oid[:2] / ptr.oid[2:4] / ptr.oid
    assert not keep.exists()
    p = git(r, "checkout", "HEAD~1", "--", NAME, check=False)
    assert p.returncode != 0
    assert "does not match its hash" in p.stderr
    f = r / NAME
    assert not f.exists() or f.read_bytes() not in (bytes(data), V1)  # never the corrupt bytes
    git(r, "checkout", "HEAD", "--", NAME)
    assert f.read_bytes() == V2


@pytest.mark.slow
def test_diff_and_log_across_the_switch(switched: Path) -> None:
    r = switched
    out = json.loads(gtl(r, "diff", "HEAD~1", "HEAD", "--format", "json").stdout)
    (f,) = out["files"]
    assert f["path"] == NAME and f["status"] == "modified"
    assert f["old"]["format"] == "opaque" and f["old"]["size"] == len(V1)
    assert f["new"]["format"] == "safetensors" and f["new"]["size"] == len(V2)
    assert "git-lfs" in f["note"]
    text = gtl(r, "diff", "HEAD~1", "HEAD").stdout
    assert "stored whole" in text and "git-lfs" in text
    assert gtl(r, "diff", "HEAD~1", "HEAD", "--exit-code", check=False).returncode == 1

    log = json.loads(gtl(r, "log", "--format", "json").stdout)
    commits = log["commits"] if isinstance(log, dict) else log
    assert [c["subject"] for c in commits] == ["v2 (git-theta-like)", "v1 (git-lfs)"]
    # the git-lfs version is the file's first version (its size: the pointer's), then it changed
    assert [f["path"] for f in commits[1]["files"]] == [NAME]
    assert commits[1]["files"][0]["status"] == "added"
    assert commits[1]["stored_bytes"] == len(V1)
    assert commits[0]["files"][0]["status"] == "modified"

    # git's own diff goes through our driver: the pointer side is a file stored whole
    gd = git(r, "diff", "HEAD~1", "HEAD").stdout
    assert "stored whole" in gd


@pytest.mark.slow
def test_pointer_version_downloaded_from_the_remote(
    tmp_path: Path,
    remote: Remote,  # noqa: F811
) -> None:
    """A clone whose old commit's git-lfs object is only on the remote (file:// or giftless):
    checking that version out downloads it, verified."""
    work = make_origin(tmp_path, remote)
    # the git-lfs era, written as git-lfs writes it (its object in .git/lfs/objects)
    oid = hashlib.sha256(V1).hexdigest()
    (work / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
    git(work, "add", ".gitattributes")
    git(work, "commit", "-qm", "git-lfs tracking")
    pointer = pointer_text(V1)
    sha = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=work, input=pointer, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    git(work, "update-index", "--add", "--cacheinfo", f"100644,{sha},{NAME}")
    git(work, "commit", "-qm", "v1 (git-lfs)")
    dest = remote.object_file(oid)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(V1)  # what git-lfs's pre-push would have uploaded
    # the switch
    (work / ".gitattributes").write_text("")
    gtl(work, "track", "*.safetensors")
    (work / NAME).write_bytes(V2)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "v2 (git-theta-like)")
    git(work, "push", "-q", "origin", "main")

    c = clone(tmp_path, remote, "clone")
    assert (c / NAME).read_bytes() == V2
    local = c / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    assert not local.exists()
    git(c, "checkout", "HEAD~1", "--", NAME)
    assert (c / NAME).read_bytes() == V1
    assert local.read_bytes() == V1
    assert clean_status(c) == f"M  {NAME}\n"
    git(c, "checkout", "HEAD", "--", NAME)
    assert (c / NAME).read_bytes() == V2
    assert clean_status(c) == ""


@pytest.mark.parametrize(
    ("value", "skipped"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("false", False), ("2", False)],
)
@pytest.mark.slow
def test_git_lfs_skip_smudge(tmp_path: Path, value: str, skipped: bool) -> None:  # noqa: F811
    """GIT_LFS_SKIP_SMUDGE, read as git-lfs reads it (true/1/on/yes/t, any case), leaves manifests
    in a clone and downloads nothing; anything else checks the checkpoint out."""
    r = Remote(tmp_path, "file")
    work = make_origin(tmp_path, r)
    (work / NAME).write_bytes(V1)
    git(work, "add", NAME)
    git(work, "commit", "-qm", "v1")
    git(work, "push", "-q", "origin", "main")
    c = clone(tmp_path, r, "clone", env={"GIT_LFS_SKIP_SMUDGE": value})
    data = (c / NAME).read_bytes()
    if skipped:
        assert is_manifest(data)
        objects = c / ".git" / "lfs" / "objects"
        assert not objects.exists() or not any(p.is_file() for p in objects.rglob("*"))
        assert clean_status(c) == ""
        gtl(c, "checkout")
        assert (c / NAME).read_bytes() == V1
    else:
        assert data == V1
    assert clean_status(c) == ""


def test_our_variable_wins_over_git_lfs(tmp_path: Path) -> None:  # noqa: F811
    """GIT_THETA_LIKE_SKIP_SMUDGE=0 with GIT_LFS_SKIP_SMUDGE=1: git-lfs files would be skipped,
    checkpoints are checked out."""
    r = Remote(tmp_path, "file")
    work = make_origin(tmp_path, r)
    (work / NAME).write_bytes(V1)
    git(work, "add", NAME)
    git(work, "commit", "-qm", "v1")
    git(work, "push", "-q", "origin", "main")
    c = clone(tmp_path, r, "clone", env={"GIT_LFS_SKIP_SMUDGE": "1", "GIT_THETA_LIKE_SKIP_SMUDGE": "0"})
    assert (c / NAME).read_bytes() == V1


def test_skip_smudge_leaves_a_pointer_version_clean(switched: Path) -> None:
    """GIT_LFS_SKIP_SMUDGE=1: a pointer version is written as the pointer (as git-lfs does), and
    clean keeps it, so nothing looks modified."""
    r = switched
    env = {**os.environ, "GIT_LFS_SKIP_SMUDGE": "1"}
    subprocess.run(["git", "checkout", "HEAD~1", "--", NAME], cwd=r, env=env, check=True, capture_output=True)
    assert (r / NAME).read_bytes() == blob_of(r, f"HEAD~1:{NAME}")
    os.utime(r / NAME, (1, 1))
    assert git(r, "diff", "--quiet", check=False).returncode == 0
    assert clean_status(r) == f"M  {NAME}\n"
