"""A checkpoint committed without the filter (a collaborator without the tool, `track` before
`install`) is noticed and can be converted (issue 13, item 9): `track` installs missing drivers;
fsck, ls-files and status report the path; `migrate --fixup` converts it, byte-exact."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import safetensors_bytes, small_model

from git_theta_like.display import human_size
from git_theta_like.manifest import Manifest

RAW_ADD = ("-c", "filter.theta-like.process=", "-c", "filter.theta-like.required=false", "add")


def version(seed: int, nudged: tuple[str, ...] = ()) -> bytes:
    sd = small_model(seed=0)
    for i, name in enumerate(nudged):
        dtype, shape, data = sd[name]
        sd[name] = (dtype, shape, bytes([data[0] ^ (seed + i + 1)]) + data[1:])
    return safetensors_bytes(sd)


def raw_commit(repo: Path, name: str, data: bytes, msg: str) -> None:
    """Commit a file as a user without the tool would: the filter does not run."""
    (repo / name).write_bytes(data)
    git(repo, *RAW_ADD, name)
    staged = subprocess.run(["git", "cat-file", "blob", f":{name}"], cwd=repo, capture_output=True)
    assert staged.stdout == data
    git(repo, "commit", "-qm", msg)


def manifest_at(repo: Path, rev: str, path: str) -> Manifest:
    text = git(repo, "show", f"{rev}:{path}").stdout
    assert text.startswith("git-theta-like manifest v"), f"{rev}:{path} is not a manifest"
    return Manifest.from_text(text)


def test_track_installs_missing_drivers(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    out = gtl(r, "track", "*.safetensors").stdout
    assert "was not configured here: configured" in out
    assert git(r, "config", "--local", "filter.theta-like.process").stdout.strip() == (
        "git-theta-like filter-process"
    )
    assert (r / ".git" / "hooks" / "pre-push").is_file()
    data = version(1)
    (r / "model.safetensors").write_bytes(data)
    git(r, "add", ".gitattributes", "model.safetensors")
    assert git(r, "show", ":model.safetensors").stdout.startswith("git-theta-like manifest v")
    assert "configured" not in gtl(r, "track", "*.bin").stdout  # once is enough
    # configured globally: track leaves the repository's config alone
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    gtl(other, "install", "--global", "--no-hooks")
    assert "configured" not in gtl(other, "track", "*.safetensors").stdout
    assert git(other, "config", "--local", "filter.theta-like.process", check=False).returncode == 1


@pytest.mark.slow
def test_raw_commit_is_reported_then_migrate_fixup_converts_it(repo: Path) -> None:
    v1, v2 = version(1), version(2, ("layers.1.attn.weight",))
    raw_commit(repo, "raw.safetensors", v1, "v1 without the filter")
    raw_commit(repo, "raw.safetensors", v2, "v2 without the filter")
    good = version(3, ("embed.weight",))
    (repo / "good.safetensors").write_bytes(good)
    git(repo, "add", "good.safetensors")
    git(repo, "commit", "-qm", "good")
    # Git compares contents only where the file's stat differs from the index's (or is racily
    # close to the index's write): whether a fresh `git status` says M depends on timing. Once the
    # file is touched, as any copy or edit does, Git runs the filter and sees the difference.
    st = (repo / "raw.safetensors").stat()
    os.utime(repo / "raw.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert git(repo, "status", "--porcelain").stdout == " M raw.safetensors\n"  # what users see

    fsck = gtl(repo, "fsck", check=False)
    assert fsck.returncode == 1
    assert "not-converted" in fsck.stdout and "raw.safetensors should have been a manifest" in fsck.stdout
    assert "git theta-like migrate --fixup" in fsck.stdout and "good.safetensors" not in fsck.stdout
    assert "used by HEAD raw.safetensors" in fsck.stdout and "used by index raw.safetensors" in fsck.stdout

    ls = gtl(repo, "ls-files").stdout.splitlines()
    raw_line = next(line for line in ls if "raw.safetensors" in line)
    assert "not converted" in raw_line and human_size(len(v2)) in raw_line
    good_line = next(line for line in ls if "good.safetensors" in line)
    assert good_line.startswith("      16 ") and "not converted" not in good_line
    assert "not converted" in gtl(repo, "ls-files", "HEAD~1").stdout
    assert "raw.safetensors: not converted" in gtl(repo, "ls-files", "-v").stdout

    status = gtl(repo, "status").stdout
    assert "Checkpoints not converted" in status
    assert f"raw.safetensors (Git: {git(repo, 'rev-parse', ':raw.safetensors').stdout[:7]}" in status
    assert human_size(len(v2)) in status
    assert "not staged" not in status  # modified only because it is not converted: listed once

    gtl(repo, "migrate", "--fixup", "--yes")
    assert (repo / "raw.safetensors").read_bytes() == v2
    assert (repo / "good.safetensors").read_bytes() == good
    assert git(repo, "status", "--porcelain").stdout == ""
    m1, m2 = manifest_at(repo, "HEAD~2", "raw.safetensors"), manifest_at(repo, "HEAD~1", "raw.safetensors")
    assert m1.size == len(v1) and m2.size == len(v2)
    same = {t.name: t.obj.oid for t in m1.tensors}
    # v2 is stored against v1: the unchanged tensors are the same objects
    assert [t.name for t in m2.tensors if same[t.name] != t.obj.oid] == ["layers.1.attn.weight"]
    assert git(repo, "log", "--format=%s").stdout.split("\n")[:3] == [
        "good",
        "v2 without the filter",
        "v1 without the filter",
    ]
    git(repo, "checkout", "-q", "HEAD~2", "--", "raw.safetensors")
    assert (repo / "raw.safetensors").read_bytes() == v1
    git(repo, "checkout", "-q", "HEAD", "--", "raw.safetensors")
    assert (repo / "raw.safetensors").read_bytes() == v2
    fsck = gtl(repo, "fsck")
    assert fsck.stdout.endswith("ok\n")
    assert "not converted" not in gtl(repo, "ls-files").stdout
    assert "no changes to tracked checkpoints" in gtl(repo, "status").stdout
    # nothing left to fix: says so, changes nothing
    head = git(repo, "rev-parse", "HEAD").stdout
    assert "nothing to fix" in gtl(repo, "migrate", "--fixup", "--yes").stderr
    assert git(repo, "rev-parse", "HEAD").stdout == head


def test_fixup_refuses_real_changes_and_include(repo: Path) -> None:
    raw_commit(repo, "raw.safetensors", version(1), "raw")
    r = gtl(repo, "migrate", "--fixup", "--include", "*.bin", "--yes", check=False)
    assert r.returncode == 1 and "takes no --include" in r.stderr
    (repo / "raw.safetensors").write_bytes(version(2, ("embed.weight",)))  # a real edit
    head = git(repo, "rev-parse", "HEAD").stdout
    r = gtl(repo, "migrate", "--fixup", "--yes", check=False)
    assert r.returncode == 1 and "uncommitted changes" in r.stderr
    assert git(repo, "rev-parse", "HEAD").stdout == head
    assert (repo / "raw.safetensors").read_bytes() == version(2, ("embed.weight",))


@pytest.mark.slow
def test_staged_raw_file_and_status_sections(repo: Path) -> None:
    a1 = version(1)
    (repo / "a.safetensors").write_bytes(a1)
    (repo / "gone.safetensors").write_bytes(version(4))
    git(repo, "add", "a.safetensors", "gone.safetensors")
    git(repo, "commit", "-qm", "a")
    assert "no changes to tracked checkpoints" in gtl(repo, "status").stdout
    run("touch", "a.safetensors", cwd=repo)  # touched, unchanged: not modified
    assert "no changes to tracked checkpoints" in gtl(repo, "status").stdout
    a2 = version(2, ("embed.weight",))
    (repo / "a.safetensors").write_bytes(a2)
    (repo / "new.safetensors").write_bytes(version(5))
    git(repo, "add", "new.safetensors")
    git(repo, "rm", "-q", "gone.safetensors")
    (repo / "staged-raw.safetensors").write_bytes(version(6))
    git(repo, *RAW_ADD, "staged-raw.safetensors")
    (repo / "notes.txt").write_text("not a checkpoint\n")
    git(repo, "add", "notes.txt")
    out = gtl(repo, "status").stdout
    staged, _, rest = out.partition("Checkpoints not staged for commit:")
    unstaged, _, unconverted = rest.partition("Checkpoints not converted")
    assert staged.startswith("On branch main\n\nCheckpoints to be committed:\n")
    assert "\tnew.safetensors (new; Theta: " in staged and "16 tensors" in staged
    assert "\tgone.safetensors (deleted; Theta: " in staged
    assert "\tstaged-raw.safetensors (new; Git: " in staged
    assert "notes.txt" not in out
    assert "\ta.safetensors (modified; Theta: " in unstaged and f"-> File: {human_size(len(a2))}" in unstaged
    assert "staged-raw.safetensors" in unconverted
    assert "git add --renormalize -- staged-raw.safetensors" in unconverted
    fsck = gtl(repo, "fsck", check=False)
    assert fsck.returncode == 1 and "fix: git add --renormalize -- staged-raw.safetensors" in fsck.stdout
    # the fix it names works: the staged blob becomes a manifest of the same bytes
    git(repo, "add", "--renormalize", "--", "staged-raw.safetensors")
    assert git(repo, "show", ":staged-raw.safetensors").stdout.startswith("git-theta-like manifest v")
    assert "Checkpoints not converted" not in gtl(repo, "status").stdout
    assert gtl(repo, "fsck").returncode == 0


def test_fixup_converts_a_git_lfs_pointer_left_at_a_tracked_path(tmp_path: Path) -> None:
    """`git lfs track` then `git theta-like track` without re-adding: HEAD holds a pointer at a
    path our attributes track. --fixup converts it there and keeps the older LFS commit as it is."""
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "lfs", "install", "--local")
    git(r, "lfs", "track", "*.safetensors")
    data = version(1)
    (r / "m.safetensors").write_bytes(data)
    git(r, "add", ".")
    git(r, "commit", "-qm", "lfs")
    gtl(r, "track", "*.safetensors")
    git(r, "add", ".gitattributes")
    git(r, "commit", "-qm", "switch to theta-like")
    assert "a git-lfs pointer" in gtl(r, "status").stdout
    assert gtl(r, "fsck", check=False).returncode == 1
    gtl(r, "migrate", "--fixup", "--yes")
    assert manifest_at(r, "HEAD", "m.safetensors").size == len(data)
    assert git(r, "show", "HEAD~1:m.safetensors").stdout.startswith(
        "version https://git-lfs.github.com/spec/v1"
    )
    assert (r / "m.safetensors").read_bytes() == data
    assert git(r, "status", "--porcelain").stdout == ""
    assert gtl(r, "fsck").returncode == 0
