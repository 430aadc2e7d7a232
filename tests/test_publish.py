"""`publish` and `export`, for people without git-theta-like, through real git, git-lfs and LFS
servers (giftless on loopback, a file:// remote): a plain git-lfs clone of the published branch
gets the checkpoints byte for byte, re-publishing is a no-op, later versions follow the last one,
export writes a plain directory, and bad input moves no branch and writes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, git, gtl, run
from fixtures import finetuned, safetensors_bytes, small_model
from safetensors.numpy import load, load_file
from test_hostile_files import MIB, add_measured
from test_remotes import Remote, clone, commit, global_install, make_origin  # noqa: F401

from git_theta_like.lfs.pointer import parse_pointer

V1 = finetuned(1)
V2 = finetuned(2, ("layers.0.attn.weight",))
V3 = finetuned(3, ("layers.0.attn.weight", "layers.2.mlp.weight"))
TOKENS = b"a git-lfs file beside the checkpoints " * 100


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rev(repo: Path, spec: str) -> str:
    return git(repo, "rev-parse", spec).stdout.strip()


def remote_branch(remote: Remote, branch: str) -> str:
    return run("git", "ls-remote", str(remote.bare), f"refs/heads/{branch}", cwd=remote.bare).stdout.split(
        "\t"
    )[0]


def shards(seed: int) -> dict[str, bytes]:
    """A sharded Hugging Face checkpoint: two shards and their index."""
    sd = small_model(seed)
    names = list(sd)
    files: dict[str, bytes] = {}
    weight_map = {}
    for i, part in enumerate((names[: len(names) // 2], names[len(names) // 2 :])):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        files[fname] = safetensors_bytes({n: sd[n] for n in part})
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": sum(len(d) for _, _, d in sd.values())}, "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return files


def consumer_env(tmp_path: Path) -> dict[str, str]:
    """Someone without git-theta-like: a HOME where only `git lfs install` ran, and a PATH
    without our executable."""
    home = tmp_path / "consumer-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != BIN)
    if shutil.which("git-lfs", path=env["PATH"]) is None:  # git-lfs lives in the venv: keep it alone
        link = tmp_path / "consumer-bin"
        link.mkdir()
        (link / "git-lfs").symlink_to(shutil.which("git-lfs", path=BIN) or "git-lfs")
        env["PATH"] = str(link) + os.pathsep + env["PATH"]
    assert shutil.which("git-theta-like", path=env["PATH"]) is None
    subprocess.run(["git", "lfs", "install"], cwd=home, env=env, check=True, capture_output=True)
    config = subprocess.run(
        ["git", "config", "--global", "--list"], cwd=home, env=env, capture_output=True, text=True
    )
    assert "filter.lfs.process" in config.stdout and "theta-like" not in config.stdout
    return env


def run_as(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


@pytest.mark.slow
def test_people_without_the_tool_clone_the_published_branch(tmp_path: Path) -> None:
    origin = Remote(tmp_path, "giftless")
    try:
        work = make_origin(tmp_path, origin)
        commit(work, V1, "v1")
        commit(work, V2, "v2")
        sharded = shards(4)
        for name, data in sharded.items():
            (work / name).write_bytes(data)
        (work / "README.md").write_text("# my model\n")
        git(work, "add", "-A")
        git(work, "commit", "-qm", "v2 and a sharded model")
        git(work, "push", "-q", "origin", "main")
        pushed = rev(work, "main")
        # a git-lfs file committed since, not pushed: publish uploads its object too
        run("git", "lfs", "install", "--local", "--skip-repo", cwd=work)
        run("git", "lfs", "track", "*.dat", cwd=work)
        (work / "tokens.dat").write_bytes(TOKENS)
        git(work, "add", ".gitattributes", "tokens.dat")
        git(work, "commit", "-qm", "tokens")
        main = rev(work, "main")
        assert sha256(TOKENS) not in origin.objects()

        r = gtl(work, "publish")
        assert f"publishes {main[:12]}" in r.stdout and "pushed published to origin" in r.stdout
        published = rev(work, "published")
        assert remote_branch(origin, "published") == published
        assert remote_branch(origin, "main") == pushed  # the native history is untouched
        wanted = {"model.safetensors": V2, **{n: d for n, d in sharded.items() if n.endswith(".safetensors")}}
        on_server = origin.objects()
        assert {sha256(d) for d in wanted.values()} <= on_server  # the whole files
        assert sha256(TOKENS) in on_server
        assert git(work, "log", "-1", "--format=%B", "published").stdout.startswith(f"Publish {main}: tokens")

        env = consumer_env(tmp_path)
        c = tmp_path / "consumer"
        run_as(env, tmp_path, "git", "clone", "-q", "-b", "published", str(origin.bare), str(c))
        for name, data in wanted.items():
            assert (c / name).read_bytes() == data, name
            ptr = parse_pointer(run_as(env, c, "git", "cat-file", "blob", f"HEAD:{name}").stdout.encode())
            assert ptr is not None and ptr.oid == sha256(data) and ptr.size == len(data)
        assert (c / "model.safetensors.index.json").read_bytes() == sharded["model.safetensors.index.json"]
        assert (c / "README.md").read_text() == "# my model\n"
        model = load_file(c / "model.safetensors")
        expected = load(V2)
        assert set(model) == set(expected)
        assert all(model[k].tobytes() == expected[k].tobytes() for k in expected)  # NaNs included
        assert load_file(c / "model-00002-of-00002.safetensors")
        attributes = (c / ".gitattributes").read_text()
        assert (
            "*.safetensors filter=lfs diff=lfs merge=lfs -text" in attributes
            and "theta-like" not in attributes
        )
        assert (c / "tokens.dat").read_bytes() == TOKENS
        lfs_files = run_as(env, c, "git", "lfs", "ls-files", "-n").stdout.split()
        assert sorted(lfs_files) == sorted([*wanted, "tokens.dat"])
        assert run_as(env, c, "git", "status", "--porcelain").stdout == ""
    finally:
        origin.stop()


@pytest.mark.slow
def test_republish_is_a_no_op_and_a_later_version_follows_the_last(tmp_path: Path) -> None:
    origin = Remote(tmp_path, "file")
    work = make_origin(tmp_path, origin)
    commit(work, V1, "v1")
    commit(work, V2, "v2")
    git(work, "push", "-q", "origin", "main")
    v1, v2 = rev(work, "HEAD~1"), rev(work, "HEAD")

    r = gtl(work, "publish", "--no-push", "HEAD~1")
    assert "not pushed" in r.stdout
    first = rev(work, "published")
    assert remote_branch(origin, "published") == ""
    assert git(work, "log", "-1", "--format=%B", "published").stdout.startswith(f"Publish {v1}: v1")
    assert (
        parse_pointer(git(work, "cat-file", "blob", "published:model.safetensors").stdout.encode())
        is not None
    )

    # the same tree again: no new commit, but the remote lacked the branch, so it is pushed
    r = gtl(work, "publish", "HEAD~1")
    assert "no new commit" in r.stdout and "pushed published to origin" in r.stdout
    assert rev(work, "published") == first == remote_branch(origin, "published")
    assert sha256(V1) in origin.objects()
    r = gtl(work, "publish", "HEAD~1")
    assert "no new commit" in r.stdout and "nothing pushed" in r.stdout
    assert rev(work, "published") == first

    r = gtl(work, "publish")
    second = rev(work, "published")
    assert second != first and rev(work, "published^") == first
    assert git(work, "log", "-1", "--format=%s", "published").stdout.strip() == f"Publish {v2}: v2"
    assert remote_branch(origin, "published") == second

    # a colleague publishes a later version from another clone: it follows the remote's tip
    colleague = clone(tmp_path, origin, "colleague")
    commit(colleague, V3, "v3")
    git(colleague, "push", "-q", "origin", "main")
    gtl(colleague, "publish")
    third = rev(colleague, "published")
    assert rev(colleague, "published^") == second and remote_branch(origin, "published") == third
    subjects = git(colleague, "log", "--format=%s", "published").stdout.split("\n")
    assert [s.split(":")[1].strip() for s in subjects if s] == ["v3", "v2", "v1"]


def test_export_writes_the_files_byte_identical(tmp_path: Path, minilm_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    gtl(work, "install")
    gtl(work, "track", "*.safetensors")
    run("git", "lfs", "install", "--local", "--skip-repo", cwd=work)
    run("git", "lfs", "track", "*.dat", cwd=work)
    minilm = minilm_path.read_bytes()
    (work / "model.safetensors").write_bytes(minilm)
    (work / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (work / "run.sh").chmod(0o755)
    (work / "latest").symlink_to("model.safetensors")
    (work / "sub").mkdir()
    (work / "sub" / "notes.txt").write_text("notes\n")
    (work / "sub" / "data.dat").write_bytes(b"lfs data " * 1000)
    (work / "sub" / "lost.dat").write_bytes(b"an object that is gone " * 100)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "minilm")
    commit(work, V1, "v1")
    lost = sha256(b"an object that is gone " * 100)
    (work / ".git" / "lfs" / "objects" / lost[:2] / lost[2:4] / lost).unlink()
    lost_pointer = git(work, "cat-file", "blob", "HEAD:sub/lost.dat").stdout

    for spec, model in (("HEAD~1", minilm), ("HEAD", V1)):
        out = tmp_path / f"export-{spec}"
        r = gtl(work, "export", spec, str(out))
        assert "1 checkpoint(s), 1 git-lfs file(s), 1 left as git-lfs pointers" in r.stdout
        assert "sub/lost.dat left as a git-lfs pointer" in r.stderr
        assert (out / "model.safetensors").read_bytes() == model
        assert (out / "sub" / "data.dat").read_bytes() == b"lfs data " * 1000
        assert (out / "sub" / "lost.dat").read_text() == lost_pointer
        assert (out / "sub" / "notes.txt").read_text() == "notes\n"
        assert os.access(out / "run.sh", os.X_OK) and not os.access(out / "sub" / "notes.txt", os.X_OK)
        assert os.readlink(out / "latest") == "model.safetensors"
        assert (out / ".gitattributes").read_bytes() == (work / ".gitattributes").read_bytes()
        assert sorted(p.name for p in out.parent.iterdir() if ".gtl-export-" in p.name) == []
    assert set(load_file(tmp_path / "export-HEAD~1" / "model.safetensors")) == set(load(minilm))

    # an empty directory is fine; `git archive` runs our smudge too (the documented recipe)
    empty = tmp_path / "empty"
    empty.mkdir()
    gtl(work, "export", "HEAD~1", str(empty))
    assert (empty / "model.safetensors").read_bytes() == minilm
    git(
        work,
        "archive",
        "--format=tar",
        "-o",
        str(tmp_path / "v.tar"),
        "HEAD~1",
        "model.safetensors",
        "run.sh",
    )
    with tarfile.open(tmp_path / "v.tar") as tar:
        member = tar.extractfile("model.safetensors")
        assert member is not None and member.read() == minilm


def test_bad_input_moves_no_branch_and_writes_nothing(tmp_path: Path) -> None:
    origin = Remote(tmp_path, "file")
    work = make_origin(tmp_path, origin)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")

    def nothing_published() -> None:
        assert git(work, "rev-parse", "--verify", "-q", "refs/heads/published", check=False).returncode != 0
        assert remote_branch(origin, "published") == ""

    r = gtl(work, "publish", "nope", check=False)
    assert r.returncode == 128 and "bad revision 'nope'" in r.stderr
    out = tmp_path / "out"
    r = gtl(work, "export", "nope", str(out), check=False)
    assert r.returncode == 128 and "bad revision 'nope'" in r.stderr and not out.exists()

    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("mine")
    r = gtl(work, "export", "HEAD", str(full), check=False)
    assert r.returncode == 1 and "is not empty" in r.stderr
    assert [p.name for p in full.iterdir()] == ["mine.txt"]
    assert [p.name for p in tmp_path.iterdir() if ".gtl-export-" in p.name] == []

    r = gtl(work, "publish", "--remote", "nowhere", check=False)
    assert r.returncode == 1 and "no remote named 'nowhere'" in r.stderr
    # a Git remote whose LFS server is not there: nothing pushed, the branch not written
    git(work, "remote", "add", "dead", str(origin.bare))
    git(work, "config", "remote.dead.lfsurl", "http://127.0.0.1:9/none.git/info/lfs")
    r = gtl(work, "publish", "--remote", "dead", check=False)
    assert r.returncode == 1 and "127.0.0.1:9" in r.stderr, r.stderr
    nothing_published()

    r = gtl(work, "publish", "--branch", "main", check=False)
    assert r.returncode == 1 and "checked out" in r.stderr
    git(work, "branch", "dev")
    r = gtl(work, "publish", "--branch", "dev", check=False)
    assert r.returncode == 1 and "holds git-theta-like checkpoints" in r.stderr
    assert rev(work, "dev") == rev(work, "main")
    nothing_published()


def test_attributes_trade_ours_for_git_lfs_and_keep_the_rest() -> None:
    from git_theta_like.gitio.attributes import as_lfs, retrack

    text = (
        "# models\r\n"
        "*.safetensors filter=theta-like diff=theta-like merge=theta-like -text\r\n"
        "*.bin filter=theta-like diff=theta-like merge=theta-like -text lockable\n"
        "*.txt text eol=lf\n"
        "*.dat filter=lfs diff=lfs merge=lfs -text"
    )
    assert as_lfs(text) == (
        "# models\r\n"
        "*.safetensors filter=lfs diff=lfs merge=lfs -text\r\n"
        "*.bin lockable filter=lfs diff=lfs merge=lfs -text\n"
        "*.txt text eol=lf\n"
        "*.dat filter=lfs diff=lfs merge=lfs -text"
    )
    lfs = "*.pt filter=lfs diff=lfs merge=lfs -text\n"
    assert as_lfs(retrack(lfs, ["*.pt"])) == lfs


def measured(repo: Path, *args: str) -> int:
    """Peak RSS (bytes) of `git theta-like ARGS` and its children."""
    code = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "git", "theta-like", *args], cwd=repo, capture_output=True
    )
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return int(p.stdout.split()[-1]) * 1024


@pytest.mark.slow
def test_a_checkpoint_larger_than_memory_allows_is_streamed(repo: Path, tmp_path: Path) -> None:
    """A 400 MiB checkpoint is published and exported within 300 MiB of peak RSS: it is smudged
    into a temporary file while it is hashed, never held whole."""
    n, count = 8 * MIB, 50
    header = {
        f"w{i}": {"dtype": "F32", "shape": [n // 4], "data_offsets": [i * n, (i + 1) * n]}
        for i in range(count)
    }
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    sha = hashlib.sha256()
    with open(repo / "big.safetensors", "wb") as f:

        def parts() -> Iterator[bytes]:
            yield struct.pack("<Q", len(head)) + head
            for i in range(count):
                yield np.full(n // 4, i, np.float32).tobytes()

        for part in parts():
            f.write(part)
            sha.update(part)
    size = (repo / "big.safetensors").stat().st_size
    assert size > 400 * MIB
    add_measured(repo, "big.safetensors")
    git(repo, "commit", "-qm", "big")
    rss = measured(repo, "publish", "--no-push")
    assert rss < 300 * MIB, f"publish: peak RSS {rss >> 20} MiB"
    ptr = parse_pointer(git(repo, "cat-file", "blob", "published:big.safetensors").stdout.encode())
    assert ptr is not None and ptr.oid == sha.hexdigest() and ptr.size == size
    stored = repo / ".git" / "lfs" / "objects" / ptr.oid[:2] / ptr.oid[2:4] / ptr.oid
    assert stored.stat().st_size == size
    assert not any((repo / ".git" / "lfs" / "tmp").iterdir())
    rss = measured(repo, "export", "HEAD", str(tmp_path / "out"))
    assert rss < 300 * MIB, f"export: peak RSS {rss >> 20} MiB"
    with open(tmp_path / "out" / "big.safetensors", "rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == ptr.oid
