"""Issue 14 item 3: a checkout that runs out of disk space leaves a truncated checkpoint.

`git theta-like checkout` rewrites a tracked file that is a truncated copy of its staged
checkpoint (and fails, non-zero, when it cannot write); clean of a tracked path whose staged
version parsed but whose new content ends inside a tensor warns loudly, and stores it anyway.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes

from git_theta_like.manifest import Manifest

MIB = 1 << 20


def checkpoint() -> bytes:
    rng = np.random.default_rng(3)
    return safetensors_bytes(
        {
            "a": ("F32", (512, 1024), rng.standard_normal((512, 1024), dtype=np.float32).tobytes()),
            "b": ("F32", (256, 1024), rng.standard_normal((256, 1024), dtype=np.float32).tobytes()),
        }
    )


def committed(repo: Path) -> bytes:
    data = checkpoint()
    (repo / "m.safetensors").write_bytes(data)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "model")
    return data


def test_checkout_repairs_a_truncated_checkpoint(repo: Path) -> None:
    """A file cut short by hand (what a full disk leaves): `git theta-like checkout` rewrites it
    byte-identical and `git status` is clean; a file of another size that is not a prefix (the
    user's change) is left alone and named, an error when asked for by name."""
    data = committed(repo)
    f = repo / "m.safetensors"
    for cut in (len(data) // 3, 100, len(data) - 1):
        f.write_bytes(data[:cut])
        p = gtl(repo, "checkout")
        assert "checked out m.safetensors" in p.stdout, p.stdout + p.stderr
        assert f.read_bytes() == data
        assert git(repo, "status", "--porcelain").stdout == ""
    # named, no path given: a shorter file that is not the checkpoint's start
    changed = b"\x01" + data[1 : len(data) // 2]
    f.write_bytes(changed)
    p = gtl(repo, "checkout")
    assert p.returncode == 0 and "checked out" not in p.stdout
    assert "m.safetensors is" in p.stderr and "git checkout -- m.safetensors" in p.stderr, p.stderr
    assert f.read_bytes() == changed
    p = gtl(repo, "checkout", "m.safetensors", check=False)
    assert p.returncode == 1 and "a change of yours" in p.stderr, p.stderr
    assert f.read_bytes() == changed


def test_clean_of_a_truncated_checkpoint_warns_and_keeps_every_byte(repo: Path) -> None:
    """`git add` of a file whose staged version parsed but which now ends inside a tensor: a
    loud warning naming the path, both sizes and the fix; the bytes are stored whole, exact."""
    data = committed(repo)
    cut = data[: len(data) // 2]
    (repo / "m.safetensors").write_bytes(cut)
    p = git(repo, "add", "m.safetensors")
    assert "m.safetensors LOOKS TRUNCATED" in p.stderr, p.stderr
    assert f"it is {len(cut)} bytes" in p.stderr and f"a {len(data)}-byte checkpoint" in p.stderr
    assert "`git theta-like checkout m.safetensors`" in p.stderr
    m = Manifest.from_bytes(git(repo, "show", ":m.safetensors").stdout.encode())
    assert m.format == "opaque" and m.size == len(cut)
    (repo / "m.safetensors").unlink()
    git(repo, "checkout", "--", "m.safetensors")
    assert (repo / "m.safetensors").read_bytes() == cut  # never refused, never lost
    # the fix the warning names
    git(repo, "restore", "--staged", "m.safetensors")
    gtl(repo, "checkout", "m.safetensors")
    assert (repo / "m.safetensors").read_bytes() == data
    assert git(repo, "status", "--porcelain").stdout == ""
    # a file stored whole before is no checkpoint to be truncated: no warning
    (repo / "x.bin").write_bytes(b"plain bytes, no format" * 100)
    git(repo, "add", "x.bin")
    git(repo, "commit", "-qm", "x")
    (repo / "x.bin").write_bytes(b"plain")
    assert "TRUNCATED" not in git(repo, "add", "x.bin").stderr


def test_checkout_onto_a_full_disk(repo: Path, tmp_path: Path) -> None:
    """A worktree on a 2 MiB tmpfs, a 3 MiB checkpoint: the checkout cannot finish and `git
    theta-like checkout` says so with a non-zero exit; with space again it rewrites the file
    byte-identical."""
    data = committed(repo)
    assert len(data) > 2 * MIB
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        wt = disk / "wt"
        git(repo, "worktree", "add", "-q", "--no-checkout", str(wt), "HEAD")
        git(wt, "read-tree", "HEAD")  # the index, then the files: git cannot write them all
        p = git(wt, "checkout", "--", ".", check=False)
        assert p.returncode != 0 and "unable to write file m.safetensors" in p.stderr, p.stderr
        f = wt / "m.safetensors"
        assert not f.exists() or f.stat().st_size < len(data)
        p = gtl(wt, "checkout", check=False)
        assert p.returncode != 0, p.stdout + p.stderr
        assert "No space left on device" in p.stderr and "Traceback" not in p.stderr, p.stderr
        assert not f.exists() or f.stat().st_size < len(data)
        assert not [n for n in wt.iterdir() if n.name.startswith(".m.safetensors.gtl-")]
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        p = gtl(wt, "checkout")
        assert "checked out m.safetensors" in p.stdout
        assert f.read_bytes() == data
        assert git(wt, "status", "--porcelain").stdout == ""
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
