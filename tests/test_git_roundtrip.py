"""The foundation workflow through real git: install, track, add, commit, checkout, byte-exact."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl, objects_in, run
from fixtures import every_dtype_file, safetensors_bytes, small_model


def write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def commit_file(repo: Path, name: str, data: bytes, msg: str) -> None:
    write(repo / name, data)
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)


def test_issue_workflow_base_then_finetune(repo: Path) -> None:
    base = safetensors_bytes(small_model(seed=0, scale=4))
    commit_file(repo, "model.safetensors", base, "base")
    stored = git(repo, "show", "HEAD:model.safetensors").stdout
    assert stored.startswith("git-theta-like manifest v1 format=safetensors")
    before = objects_in(repo)

    tensors = small_model(seed=0, scale=4)
    rng = np.random.default_rng(5)
    tensors["layers.1.attn.weight"] = (
        "F32",
        (256, 256),
        rng.standard_normal(256 * 256).astype(np.float32).tobytes(),
    )
    ft = safetensors_bytes(tensors)
    commit_file(repo, "model.safetensors", ft, "ft")
    new = objects_in(repo) - before
    assert len(new) == 1, "only the changed tensor is a new object (same header, same skeleton)"
    diff = git(repo, "diff", "--no-ext-diff", "--no-textconv", "HEAD~1", "HEAD").stdout
    changed = [line for line in diff.splitlines() if line.startswith("+tensor")]
    assert len(changed) == 1 and "layers.1.attn.weight" in changed[0]

    git(repo, "checkout", "HEAD~1", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == base
    git(repo, "checkout", "HEAD", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == ft
    assert git(repo, "status", "--porcelain").stdout == ""


def test_every_dtype_and_edge_case_round_trips(repo: Path) -> None:
    data = every_dtype_file()
    commit_file(repo, "all.safetensors", data, "all dtypes")
    (repo / "all.safetensors").unlink()
    git(repo, "checkout", "--", "all.safetensors")
    assert (repo / "all.safetensors").read_bytes() == data


@pytest.mark.slow
def test_real_minilm_round_trips_and_status_is_clean(repo: Path, minilm_path: Path) -> None:
    shutil.copy(minilm_path, repo / "model.safetensors")
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "minilm")
    ls = gtl(repo, "ls-files").stdout
    assert "model.safetensors" in ls and "safetensors" in ls
    clone = repo.parent / "clone"
    run("git", "clone", "-q", "--no-checkout", str(repo), str(clone), cwd=repo.parent)
    # share the object store, as a fetch would fill it (remotes are tested elsewhere)
    shutil.copytree(repo / ".git" / "lfs", clone / ".git" / "lfs")
    gtl(clone, "install")
    git(clone, "checkout", "-q", "main")
    assert (clone / "model.safetensors").read_bytes() == minilm_path.read_bytes()
    assert git(clone, "status", "--porcelain").stdout == ""
    os.utime(clone / "model.safetensors")  # touch: git re-cleans the file
    assert git(clone, "status", "--porcelain").stdout == ""


def test_torch_save_with_tied_weights(repo: Path) -> None:
    torch = pytest.importorskip("torch")
    emb = torch.randn(50, 16)
    sd = {"embed.weight": emb, "lm_head.weight": emb, "bias": torch.zeros(16), "view": emb[:, 3]}
    torch.save({"model": sd, "step": 7}, repo / "ckpt.pt")
    data = (repo / "ckpt.pt").read_bytes()
    git(repo, "add", "ckpt.pt")
    git(repo, "commit", "-qm", "torch")
    manifest = git(repo, "show", "HEAD:ckpt.pt").stdout
    assert "format=pytorch" in manifest
    assert manifest.count("\ntensor ") == 2, "tied storage stored once"
    (repo / "ckpt.pt").unlink()
    git(repo, "checkout", "--", "ckpt.pt")
    assert (repo / "ckpt.pt").read_bytes() == data
    loaded = torch.load(repo / "ckpt.pt", weights_only=True)
    assert loaded["model"]["lm_head.weight"].data_ptr() == loaded["model"]["embed.weight"].data_ptr()


@pytest.mark.parametrize(
    "name, data",
    [
        ("truncated.safetensors", safetensors_bytes(small_model())[:-100]),
        ("garbage.bin", os.urandom(100_000)),
        ("text.pt", b"this is not a checkpoint\n"),
    ],
    ids=["truncated", "random", "text"],  # empty files are the empty blob: test_track_empty.py
)
@pytest.mark.slow
def test_unparseable_files_are_stored_whole_and_exact(repo: Path, name: str, data: bytes) -> None:
    write(repo / name, data)
    r = git(repo, "add", name)
    if data[:8] and "truncated" in name:
        assert "stored whole" in r.stderr
    git(repo, "commit", "-qm", name)
    assert "format=opaque" in git(repo, "show", f"HEAD:{name}").stdout
    (repo / name).unlink()
    git(repo, "checkout", "--", name)
    assert (repo / name).read_bytes() == data
    assert git(repo, "status", "--porcelain").stdout == ""


def test_hostile_pickle_is_never_executed(repo: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (os.system, (f"touch {marker}",))

    torch.save({"w": torch.ones(3), "evil": Evil()}, repo / "evil.pt")
    data = (repo / "evil.pt").read_bytes()
    r = git(repo, "add", "evil.pt")
    assert "os" in r.stderr and "system" in r.stderr and "stored whole" in r.stderr
    git(repo, "commit", "-qm", "evil")
    (repo / "evil.pt").unlink()
    git(repo, "checkout", "--", "evil.pt")
    assert (repo / "evil.pt").read_bytes() == data
    assert not marker.exists()


def test_corrupt_object_is_a_clear_error_naming_the_tensor(repo: Path) -> None:
    commit_file(repo, "m.safetensors", safetensors_bytes(small_model()), "m")
    manifest = git(repo, "show", "HEAD:m.safetensors").stdout
    line = next(line for line in manifest.splitlines() if "layers.2.mlp.weight" in line)
    oid = line.split()[7]
    obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    data = bytearray(obj.read_bytes())
    data[10] ^= 0x55
    obj.write_bytes(bytes(data))
    (repo / "m.safetensors").unlink()
    r = git(repo, "checkout", "--", "m.safetensors", check=False)
    assert r.returncode != 0
    assert "layers.2.mlp.weight" in r.stderr and oid in r.stderr
    from git_theta_like.store import LocalStore

    LocalStore(repo / ".git" / "lfs").delete(oid)
    r = git(repo, "checkout", "--", "m.safetensors", check=False)
    assert r.returncode != 0 and "not in the local store" in r.stderr and oid in r.stderr


def test_install_chains_existing_hooks(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    run("git", "lfs", "install", "--local", cwd=r)
    lfs_hook = (r / ".git" / "hooks" / "pre-push").read_text()
    assert "git lfs pre-push" in lfs_hook or "git-lfs" in lfs_hook
    out = gtl(r, "install").stdout
    assert "kept the existing hook" in out
    hooks = r / ".git" / "hooks"
    assert (hooks / "pre-push.theta-like-chained").read_text() == lfs_hook
    assert "git-theta-like" in (hooks / "pre-push").read_text()
    gtl(r, "install")  # idempotent
    assert (hooks / "pre-push.theta-like-chained").read_text() == lfs_hook
    assert git(r, "config", "filter.theta-like.process").stdout.strip() == "git-theta-like filter-process"
    gtl(r, "uninstall")
    assert (hooks / "pre-push").read_text() == lfs_hook
    assert git(r, "config", "filter.theta-like.process", check=False).returncode != 0


def test_chained_hook_runs_with_same_input(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    hook = r / ".git" / "hooks" / "pre-push"
    log = tmp_path / "hook.log"
    hook.write_text(f'#!/bin/sh\necho "args: $@" > {log}\ncat >> {log}\n')
    hook.chmod(0o755)
    gtl(r, "install")
    line = f"refs/heads/main {'0' * 40} refs/heads/main {'0' * 40}\n"  # a deletion: nothing to upload
    run(str(hook), "origin", "url", cwd=r, input=line.encode())
    assert log.read_text() == "args: origin url\n" + line


def test_track_untrack_and_coexistence_with_git_lfs(repo: Path) -> None:
    # git-lfs refuses to replace our pre-push hook; ours runs `git lfs pre-push` for it
    run("git", "lfs", "install", "--local", "--skip-repo", cwd=repo)
    run("git", "lfs", "track", "*.onnx", cwd=repo)
    gtl(repo, "track", "*.gguf")
    attrs = (repo / ".gitattributes").read_text()
    assert "*.onnx filter=lfs" in attrs and "*.gguf filter=theta-like" in attrs
    assert gtl(repo, "track", "*.gguf").stdout.strip() == '"*.gguf" already tracked'
    write(repo / "x.onnx", os.urandom(5000))
    write(repo / "y.safetensors", safetensors_bytes(small_model()))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "both")
    assert git(repo, "show", "HEAD:x.onnx").stdout.startswith("version https://git-lfs")
    assert git(repo, "show", "HEAD:y.safetensors").stdout.startswith("git-theta-like manifest")
    gtl(repo, "untrack", "*.gguf")
    assert "*.gguf" not in (repo / ".gitattributes").read_text()
    assert "*.gguf" not in gtl(repo, "track").stdout


def test_cli_errors_are_clear(tmp_path: Path) -> None:
    r = run("git-theta-like", "ls-files", cwd=tmp_path, check=False)
    assert (r.returncode, r.stdout) == (128, "") and r.stderr.startswith("fatal: not a git repository")
    r = run("git-theta-like", "untrack", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "Missing argument" in r.stderr
    r = run("git-theta-like", "frobnicate", cwd=tmp_path, check=False)
    assert r.returncode == 2 and "No such command" in r.stderr
