"""Empty files under a tracked pattern (they are the empty blob, clean everywhere) and `track` /
`untrack` run from a subdirectory (the pattern is scoped to it, as git-lfs scopes it), through
real git and git-lfs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import finetuned

from git_theta_like.manifest import is_manifest

V1 = finetuned(1)


def cat(r: Path, spec: str) -> bytes:
    import subprocess

    return subprocess.run(["git", "cat-file", "blob", spec], cwd=r, capture_output=True, check=True).stdout


def all_clean(r: Path) -> None:
    assert git(r, "status", "--porcelain").stdout == ""
    assert git(r, "diff", "--quiet", check=False).returncode == 0
    assert git(r, "diff", "--cached", "--quiet", check=False).returncode == 0
    assert gtl(r, "diff", "--exit-code", check=False).returncode == 0
    assert gtl(r, "diff", "HEAD", "--exit-code", check=False).returncode == 0


def test_empty_file_is_the_empty_blob(repo: Path) -> None:
    (repo / "empty.bin").write_bytes(b"")
    (repo / "sub").mkdir()
    (repo / "sub" / "e.safetensors").write_bytes(b"")
    git(repo, "add", "empty.bin", "sub/e.safetensors")
    git(repo, "commit", "-qm", "empty files")
    assert cat(repo, "HEAD:empty.bin") == b""
    assert cat(repo, "HEAD:sub/e.safetensors") == b""
    all_clean(repo)
    os.utime(repo / "empty.bin", (1, 1))
    all_clean(repo)
    for p in ("empty.bin", "sub/e.safetensors"):
        os.unlink(repo / p)
    git(repo, "checkout", "--", ".")
    assert (repo / "empty.bin").read_bytes() == b"" and (repo / "sub" / "e.safetensors").read_bytes() == b""
    all_clean(repo)


def test_checkpoint_emptied_and_refilled(repo: Path) -> None:
    """A checkpoint truncated to nothing is a change (to an empty file stored whole), committed as
    the empty blob; filled again it is a manifest, and each version checks out as it was."""
    f = repo / "model.safetensors"
    f.write_bytes(V1)
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "v1")
    f.write_bytes(b"")
    assert git(repo, "diff", "--quiet", check=False).returncode == 1
    out = json.loads(gtl(repo, "diff", "--format", "json").stdout)
    (fd,) = out["files"]
    assert fd["status"] == "modified" and fd["old"]["format"] == "safetensors"
    assert fd["new"]["format"] == "opaque" and fd["new"]["size"] == 0
    git(repo, "commit", "-qam", "emptied")
    assert cat(repo, "HEAD:model.safetensors") == b""
    all_clean(repo)
    f.write_bytes(V1)
    git(repo, "commit", "-qam", "v1 again")
    assert is_manifest(cat(repo, "HEAD:model.safetensors"))
    git(repo, "checkout", "-q", "HEAD~1")
    assert f.read_bytes() == b""
    all_clean(repo)
    git(repo, "checkout", "-q", "main")
    assert f.read_bytes() == V1
    all_clean(repo)


# ---------------------------------------------------------------------------- track in a subdir


def check_attr(r: Path, paths: list[str]) -> dict[str, str]:
    out = git(r, "check-attr", "filter", "--", *paths).stdout
    return {line.split(": ")[0]: line.split(": ")[2] for line in out.splitlines()}


PROBES = [
    "m.gguf",
    "sub/m.gguf",
    "sub/dir/m.gguf",
    "sub/dir/deep/er/m.gguf",
    "sub/dir/a/x.pt",
    "sub/dir/x.pt",
]


def fresh(r: Path) -> Path:
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    (r / "sub" / "dir" / "deep" / "er").mkdir(parents=True)
    (r / "sub" / "dir" / "a").mkdir()
    return r


def test_track_in_a_subdirectory_matches_git_lfs(tmp_path: Path) -> None:
    """The same patterns given in sub/dir select the same files as git-lfs's `track` there; ours
    go into the root .gitattributes, scoped."""
    ours = fresh(tmp_path / "ours")
    gtl(ours, "install")
    out = gtl(ours / "sub" / "dir", "track", "*.gguf", "a/*.pt").stdout
    assert 'Tracking "sub/dir/**/*.gguf"' in out and 'Tracking "sub/dir/a/*.pt"' in out
    assert not (ours / "sub" / "dir" / ".gitattributes").exists()
    lines = (ours / ".gitattributes").read_text().splitlines()
    assert lines == [
        "sub/dir/**/*.gguf filter=theta-like diff=theta-like merge=theta-like -text",
        "sub/dir/a/*.pt filter=theta-like diff=theta-like merge=theta-like -text",
    ]
    theirs = fresh(tmp_path / "theirs")
    run("git", "lfs", "install", "--local", cwd=theirs)
    run("git", "lfs", "track", "*.gguf", "a/*.pt", cwd=theirs / "sub" / "dir")
    got = {p: v.replace("theta-like", "X") for p, v in check_attr(ours, PROBES).items()}
    want = {p: v.replace("lfs", "X") for p, v in check_attr(theirs, PROBES).items()}
    assert got == want
    assert got["sub/dir/deep/er/m.gguf"] == "X" and got["m.gguf"] == "unspecified"

    # a file there goes through the filter and checks out byte-identical
    f = ours / "sub" / "dir" / "deep" / "model.pt"
    gtl(ours / "sub" / "dir", "track", "/deep/*.pt")  # anchored to sub/dir
    assert "sub/dir/deep/*.pt filter=theta-like" in (ours / ".gitattributes").read_text()
    f.write_bytes(V1)
    git(ours, "add", "-A")
    git(ours, "commit", "-qm", "m")
    assert is_manifest(cat(ours, "HEAD:sub/dir/deep/model.pt"))
    os.unlink(f)
    git(ours, "checkout", "--", ".")
    assert f.read_bytes() == V1
    assert gtl(ours / "sub" / "dir", "track").stdout.splitlines() == [
        "sub/dir/**/*.gguf",
        "sub/dir/a/*.pt",
        "sub/dir/deep/*.pt",
    ]
    # untrack in the same directory removes the scoped line
    out = gtl(ours / "sub" / "dir", "untrack", "*.gguf").stdout
    assert 'Untracking "sub/dir/**/*.gguf"' in out
    assert "gguf" not in (ours / ".gitattributes").read_text()


@pytest.mark.parametrize("name", ["we*rd", "br[ack]ets"])
def test_track_in_a_directory_with_glob_characters(tmp_path: Path, name: str) -> None:
    r = fresh(tmp_path / "r")
    gtl(r, "install")
    (r / name).mkdir()
    gtl(r / name, "track", "*.bin")
    attr = check_attr(r, [f"{name}/x.bin", "wexrd/x.bin", "bk/x.bin", "x.bin"])
    assert attr[f"{name}/x.bin"] == "theta-like"
    assert {v for p, v in attr.items() if p != f"{name}/x.bin"} == {"unspecified"}


def test_track_refuses_what_a_pattern_cannot_say(tmp_path: Path) -> None:
    r = fresh(tmp_path / "r")
    gtl(r, "install")
    (r / "with space").mkdir()
    p = gtl(r / "with space", "track", "*.bin", check=False)
    assert p.returncode != 0 and "whitespace" in p.stderr
    p = gtl(r / "sub", "track", "../../*.bin", check=False)
    assert p.returncode != 0 and "leaves the repository" in p.stderr
    assert not (r / ".gitattributes").exists()
