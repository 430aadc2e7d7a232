"""Content the filter passes through untouched (a blob at a tracked path that is not a manifest,
skip-smudge, git preparing a diff's temporary file) is read whole before it is answered: git
sends the whole request before reading the answer, so answering early deadlocks on full pipes.
Each git command runs under a generous timeout: a hang fails the test instead of stalling it."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import git
from fixtures import safetensors_bytes

HANG = 120  # seconds: far more than any of these commands needs


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    p = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, timeout=HANG, env={**os.environ, **(env or {})}
    )
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p


def _add_unfiltered(repo: Path, path: str) -> None:
    """Stage path as it is, as if committed before the path was tracked."""
    git(
        repo,
        "-c", "filter.theta-like.process=",
        "-c", "filter.theta-like.clean=",
        "-c", "filter.theta-like.required=false",
        "add", path,
    )  # fmt: skip


def test_checkout_of_a_large_unfiltered_blob_at_a_tracked_path(repo: Path) -> None:
    data = os.urandom(3 << 20)  # well past what the pipes hold
    (repo / "big.bin").write_bytes(data)
    _add_unfiltered(repo, "big.bin")
    git(repo, "commit", "-qm", "committed before tracking")
    blob = _git(repo, "cat-file", "blob", "HEAD:big.bin").stdout
    assert blob == data  # not a manifest: the raw bytes are in git

    (repo / "big.bin").unlink()
    _git(repo, "checkout", "--", "big.bin")
    assert (repo / "big.bin").read_bytes() == data

    # skip-smudge passes manifests and everything else through the same way
    (repo / "big.bin").unlink()
    _git(repo, "checkout", "--", "big.bin", env={"GIT_THETA_LIKE_SKIP_SMUDGE": "1"})
    assert (repo / "big.bin").read_bytes() == data
    tmp = repo / ".git" / "lfs" / "tmp"
    assert not tmp.exists() or not list(tmp.iterdir())  # the spool leaves nothing behind


def _many_tensors(n: int, bump: int = 0) -> bytes:
    tensors = {
        f"model.layers.{i}.self_attn.q_proj.weight": (
            "F32",
            (1,),
            struct.pack("<f", i % 3 + (bump if i % 1000 == 0 else 0)),
        )
        for i in range(n)
    }
    return safetensors_bytes(tensors)


@pytest.mark.slow
def test_diff_and_log_p_of_a_large_manifest(repo: Path) -> None:
    (repo / "wide.safetensors").write_bytes(_many_tensors(8000))
    git(repo, "add", "wide.safetensors")
    git(repo, "commit", "-qm", "v1")
    (repo / "wide.safetensors").write_bytes(_many_tensors(8000, bump=1))
    git(repo, "commit", "-qam", "v2")
    size = len(_git(repo, "cat-file", "blob", "HEAD:wide.safetensors").stdout)
    assert size > 1_300_000  # more than the pipes and the filter's output buffer hold

    diff = _git(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "model.layers.0.self_attn.q_proj.weight" in diff
    log = _git(repo, "log", "-p").stdout.decode()
    assert "model.layers.1000.self_attn.q_proj.weight" in log
    raw = _git(repo, "log", "-p", "--no-ext-diff", "--no-textconv", "-1").stdout
    assert b"model.layers.7000.self_attn.q_proj.weight" in raw
