"""Dependencies by role (pyproject.toml): the filter, diff, log, fsck, push and fetch run on the
core dependencies alone and never import torch; merges need the `merge` extra and say so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl, run
from fixtures import finetuned, safetensors_bytes
from import_blocker import attempts, blocker_dir
from lfs_server import GiftlessServer, giftless_available

from git_theta_like.errors import MissingExtraError, ThetaLikeError
from git_theta_like.extras import EXTRAS, install_command, require

ROOT = Path(__file__).resolve().parents[1]


def test_require_names_the_extra() -> None:
    import json

    assert require("json", "merge", "x") is json
    with pytest.raises(MissingExtraError) as e:
        require("no_such_module_gtl", "merge", "git theta-like merge")
    assert isinstance(e.value, ThetaLikeError) and e.value.extra == "merge"
    assert str(e.value) == (
        "git theta-like merge needs no_such_module_gtl, which is not installed: "
        "pip install 'git-theta-like[merge]'"
    )
    assert install_command("plot") == "pip install 'git-theta-like[plot]'"
    assert set(EXTRAS) == {"merge", "plot"}
    with pytest.raises(ValueError):
        require("json", "nosuchextra", "x")


def _core_workflow(work: Path, gtl_cmd: list[str], full: bool = True) -> None:
    """add, commit, checkout of an old version, git diff, theta-like log (and, `full`, git
    log -p, theta-like diff and fsck): what a user without the merge extra does."""
    v1, v2 = finetuned(1), finetuned(2, ("layers.0.attn.weight",))
    (work / "model.safetensors").write_bytes(v1)
    run("git", "add", "model.safetensors", cwd=work)
    run("git", "commit", "-qm", "v1", cwd=work)
    (work / "model.safetensors").write_bytes(v2)
    run("git", "commit", "-qam", "v2", cwd=work)
    run("git", "checkout", "-q", "HEAD~1", "--", "model.safetensors", cwd=work)
    assert (work / "model.safetensors").read_bytes() == v1
    assert "layers.0.attn.weight" in run("git", "diff", "HEAD~1", "HEAD", cwd=work).stdout
    assert "v2" in run(*gtl_cmd, "log", cwd=work).stdout
    if not full:
        return
    run("git", "checkout", "-q", "HEAD", "--", "model.safetensors", cwd=work)
    assert (work / "model.safetensors").read_bytes() == v2
    assert "layers.0.attn.weight" in run("git", "log", "-p", cwd=work).stdout
    out = run(*gtl_cmd, "diff", "HEAD~1", "HEAD", "--format", "json", cwd=work).stdout
    assert '"layers.0.attn.weight"' in out
    run(*gtl_cmd, "fsck", cwd=work)


def test_filter_diff_log_fsck_never_import_torch(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the dev venv (torch installed): a shadow `torch` on PYTHONPATH records every import."""
    block = blocker_dir(tmp_path, "torch", "matplotlib")
    monkeypatch.setenv("PYTHONPATH", f"{block}{os.pathsep}{ROOT}")
    _core_workflow(repo, ["git", "theta-like"], full=False)
    assert attempts(block) == ""
    # the blocker does block: a merge of a tensor both sides changed tries torch
    p = subprocess.run(
        [sys.executable, "-c", "import git_theta_like.merge.compute as c; c.resolve_device('cpu')"],
        capture_output=True,
        text=True,
    )
    assert p.returncode != 0 and "import torch" in attempts(block)


def _fresh_venv(tmp_path: Path) -> Path:
    """A new virtual environment with `pip install .` (no extras) of this checkout."""
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    py = venv / "bin" / "python"
    p = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return venv


@pytest.mark.slow
def test_pip_install_without_extras_runs_the_core_and_names_the_merge_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not giftless_available():
        pytest.fail("giftless is not installed: run scripts/setup (tests/requirements-lfs-server.txt)")
    venv = _fresh_venv(tmp_path)
    py = str(venv / "bin" / "python")
    listed = subprocess.run(
        [py, "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True
    ).stdout.lower()
    for core in ("numpy", "zstandard", "safetensors", "pygit2", "click", "git-theta-like"):
        assert f"{core}==" in listed.replace("_", "-"), listed
    for extra in ("torch", "pyyaml", "matplotlib"):
        assert f"{extra}==" not in listed, listed
    # the fresh venv's git-theta-like (git's filter, driver and hooks too), not this checkout
    block = blocker_dir(tmp_path, "torch")
    monkeypatch.setenv("PATH", f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(block))
    where = run(py, "-c", "import git_theta_like; print(git_theta_like.__file__)", cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where
    # the wheel's man pages, before `install` could write any
    assert (venv / "share" / "man" / "man1" / "git-theta-like-status.1").is_file()

    server = GiftlessServer(tmp_path / "giftless").start()
    try:
        bare = tmp_path / "remote.git"
        run("git", "init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
        work = tmp_path / "work"
        work.mkdir()
        git(work, "init", "-q", "-b", "main")
        gtl(work, "install")
        gtl(work, "track", "*.safetensors")
        (work / ".lfsconfig").write_text(f'[lfs]\n\turl = "{server.endpoint}"\n')
        git(work, "remote", "add", "origin", str(bare))
        git(work, "add", ".")
        git(work, "commit", "-qm", "setup")
        _core_workflow(work, ["git", "theta-like"])
        git(work, "push", "-q", "origin", "main")
        assert len(list(server.storage.rglob("*"))) > 5  # the objects went to giftless

        other = tmp_path / "other"
        run("git", "clone", "-q", "--no-checkout", str(bare), str(other), cwd=tmp_path)
        gtl(other, "install")
        gtl(other, "fetch")
        git(other, "checkout", "-q", "main")
        assert (other / "model.safetensors").read_bytes() == (work / "model.safetensors").read_bytes()
        assert "layers.0.attn.weight" in gtl(other, "diff", "HEAD~1", "HEAD").stdout

        # a merge that must compute (both sides changed one tensor) names the extra
        git(work, "checkout", "-q", "-b", "theirs", "HEAD~1")
        rng = np.random.default_rng(5)
        sd = {"layers.0.attn.weight": ("F32", (4,), rng.standard_normal(4).astype(np.float32).tobytes())}
        (work / "small.safetensors").write_bytes(safetensors_bytes(sd))
        git(work, "add", "small.safetensors")
        git(work, "commit", "-qm", "small base")
        git(work, "checkout", "-q", "-b", "ours")
        sd2 = {k: (d, s, (np.frombuffer(b, np.float32) + 1).tobytes()) for k, (d, s, b) in sd.items()}
        (work / "small.safetensors").write_bytes(safetensors_bytes(sd2))
        git(work, "commit", "-qam", "ours")
        git(work, "checkout", "-q", "theirs")
        sd3 = {k: (d, s, (np.frombuffer(b, np.float32) * 2).tobytes()) for k, (d, s, b) in sd.items()}
        (work / "small.safetensors").write_bytes(safetensors_bytes(sd3))
        git(work, "commit", "-qam", "theirs")
        assert attempts(block) == "", attempts(block)  # nothing above imported torch

        p = gtl(work, "merge", "ours", check=False)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and "torch" in out, out
        assert "pip install 'git-theta-like[merge]'" in out, out
        assert "Traceback" not in out, out
    finally:
        server.stop()
