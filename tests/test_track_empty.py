"""Empty files under a tracked pattern (they are the empty blob, clean everywhere) and `track` /
`untrack` run from a subdirectory (the pattern is scoped to it, as git-lfs scopes it), through
real git and git-lfs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import git, gtl
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
