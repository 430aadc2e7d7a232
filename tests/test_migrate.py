"""`git theta-like migrate`: a history of git-lfs-tracked checkpoints becomes git-theta-like,
with real git and git-lfs: every commit checks out byte-identical files, later versions are
deltas, tags and merges keep their shape, and nothing changes when an LFS object is missing."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pygit2
import pytest
from conftest import git, gtl, run
from fixtures import safetensors_bytes, small_model

from git_theta_like.gitio.attributes import effective_filter, pattern_matches, retrack
from git_theta_like.lfs.pointer import parse_pointer
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.migrate import BACKUP_PREFIX

OUR_LINE = "*.safetensors filter=theta-like diff=theta-like merge=theta-like -text"
LFS_ONNX = "*.onnx filter=lfs diff=lfs merge=lfs -text"


def version(*changes: tuple[str, int]) -> bytes:
    """The small model with a few entries of some tensors changed (a sparse fine-tune)."""
    sd = small_model(seed=0)
    for name, seed in changes:
        dtype, shape, data = sd[name]
        a = np.frombuffer(data, np.float32).copy()
        rng = np.random.default_rng(seed)
        idx = rng.choice(a.size, 12, replace=False)
        a[idx] += np.float32(0.01)
        sd[name] = (dtype, shape, a.tobytes())
    return safetensors_bytes(sd)


V1 = version()
V2 = version(("layers.0.mlp.weight", 2), ("embed.weight", 2))
V3 = version(("layers.0.mlp.weight", 2), ("embed.weight", 2), ("layers.1.attn.weight", 3))
V4 = version(("layers.0.mlp.weight", 2), ("embed.weight", 2), ("layers.2.mlp.weight", 4))
V5 = version(
    ("layers.0.mlp.weight", 2), ("embed.weight", 2), ("layers.1.attn.weight", 3), ("layers.2.mlp.weight", 4)
)
HEAD_V1 = safetensors_bytes({"w": ("F32", (8, 8), np.arange(64, dtype=np.float32).tobytes())})
ONNX_A = b"onnx-graph-a" * 100
ONNX_B = b"onnx-graph-b" * 100


def lfs_oid(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lfs_init(r: Path) -> None:
    r.mkdir()
    git(r, "init", "-q")
    run("git", "lfs", "install", "--local", cwd=r)
    run("git", "lfs", "track", "*.safetensors", "*.onnx", cwd=r)


def commit(
    r: Path, message: str, monkeypatch: pytest.MonkeyPatch, when: int, files: dict[str, bytes]
) -> None:
    for path, data in files.items():
        (r / path).parent.mkdir(parents=True, exist_ok=True)
        (r / path).write_bytes(data)
    git(r, "add", "-A")
    monkeypatch.setenv("GIT_AUTHOR_DATE", f"{when} +0200")
    monkeypatch.setenv("GIT_COMMITTER_DATE", f"{when + 60} -0500")
    git(r, "commit", "-qm", message)


def history(r: Path, *refs: str) -> list[str]:
    """Everything about the commits but their ids: authors, committers, dates, messages, shape."""
    fmt = "%an|%ae|%ad|%cn|%ce|%cd|%s|%P"
    out = git(r, "log", "--topo-order", "--date=raw", f"--format={fmt}", *refs).stdout.splitlines()
    # parents by subject instead of id
    subjects = dict(line.split(" ", 1) for line in git(r, "log", "--format=%H %s", *refs).stdout.splitlines())
    rows = []
    for line in out:
        head, _, parents = line.rpartition("|")
        rows.append(head + "|" + ",".join(subjects[p] for p in parents.split()))
    return rows


def subject(r: Path, rev: str) -> str:
    return git(r, "log", "-1", "--format=%s", rev).stdout.strip()


@pytest.fixture
def lfs_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, dict[str, bytes]]]:
    """main: v1 -> v2 -> v3 (+ sub/head.safetensors) -> merge; exp (from v2): v4; tags: `first`
    (lightweight, v1), `release` (annotated, v3). Returns the repository and, per commit
    subject, the checkpoint files it holds."""
    r = tmp_path / "repo"
    lfs_init(r)
    files = {
        "v1": {"model.safetensors": V1},
        "v2": {"model.safetensors": V2},
        "v3": {"model.safetensors": V3, "sub/head.safetensors": HEAD_V1},
        "v4 on exp": {"model.safetensors": V4},
        "merge exp": {"model.safetensors": V5, "sub/head.safetensors": HEAD_V1},
    }
    commit(
        r,
        "v1",
        monkeypatch,
        1_700_000_000,
        {"README.md": b"a model\n", "weights.onnx": ONNX_A, **files["v1"]},
    )
    git(r, "tag", "first")
    commit(r, "v2", monkeypatch, 1_700_001_000, files["v2"])
    git(r, "checkout", "-qb", "exp")
    commit(r, "v4 on exp", monkeypatch, 1_700_002_000, {**files["v4 on exp"], "weights.onnx": ONNX_B})
    git(r, "checkout", "-q", "main")
    commit(r, "v3", monkeypatch, 1_700_003_000, files["v3"])
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1700003500 +0000")
    git(r, "tag", "-a", "release", "-m", "release notes")
    git(r, "merge", "--no-commit", "exp", check=False)  # conflicts on model.safetensors
    (r / "model.safetensors").write_bytes(V5)
    git(r, "add", "model.safetensors")
    monkeypatch.setenv("GIT_AUTHOR_DATE", "1700004000 +0100")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "1700004000 +0100")
    git(r, "commit", "-qm", "merge exp")
    # sanity: git-lfs stored pointers
    assert parse_pointer(git(r, "cat-file", "-p", "HEAD:model.safetensors").stdout.encode()) is not None
    assert git(r, "status", "--porcelain").stdout == ""
    return r, files


@pytest.mark.slow
def test_migrate_everything(lfs_history: tuple[Path, dict[str, dict[str, bytes]]]) -> None:
    r, files = lfs_history
    refs = ["refs/heads/main", "refs/heads/exp", "refs/tags/first", "refs/tags/release"]
    old = {ref: git(r, "rev-parse", ref).stdout.strip() for ref in refs}
    old_history = history(r, "main", "exp")
    old_trees = {
        subject(r, c): pygit2.Repository(str(r)).get(c).peel(pygit2.Commit).tree
        for c in git(r, "rev-list", "--branches").stdout.split()
    }
    lfs_objects_before = {lfs_oid(d) for f in files.values() for d in f.values()}

    gtl(r, "install")
    out = gtl(r, "migrate", "--everything", "--yes")
    assert "5 of 5 commits rewritten" in out.stdout, out.stdout + out.stderr
    assert "6 LFS pointers converted" in out.stdout  # V1..V5 + the head
    assert "force" in out.stdout

    # refs moved, originals kept (the annotated tag's object too)
    for ref in refs:
        assert git(r, "rev-parse", ref).stdout.strip() != old[ref]
        assert git(r, "rev-parse", BACKUP_PREFIX + ref).stdout.strip() == old[ref]
    assert git(r, "cat-file", "-t", "release").stdout.strip() == "tag"
    assert git(r, "cat-file", "-t", "first").stdout.strip() == "commit"
    assert subject(r, "release^{commit}") == "v3" and subject(r, "first") == "v1"
    tag_text = git(r, "cat-file", "-p", "release").stdout
    assert "tag release" in tag_text and tag_text.rstrip().endswith("release notes")
    assert git(r, "symbolic-ref", "HEAD").stdout.strip() == "refs/heads/main"

    # same authors, committers, dates, messages and merge structure
    assert history(r, "main", "exp") == old_history
    assert [subject(r, f"main^{i}") for i in (1, 2)] == ["v3", "v4 on exp"]

    repo = pygit2.Repository(str(r))
    head_attrs = git(r, "show", "HEAD:.gitattributes").stdout.splitlines()
    assert OUR_LINE in head_attrs and LFS_ONNX in head_attrs
    manifests: dict[str, Manifest] = {}
    for c in git(r, "rev-list", "--branches", "--tags").stdout.split():
        name = subject(r, c)
        tree = repo.get(c).peel(pygit2.Commit).tree
        for path, data in files[name].items():
            blob = tree[path].data
            assert is_manifest(blob), (name, path)
            m = Manifest.from_bytes(blob)
            assert m.size == len(data)
            manifests[f"{name}:{path}"] = m
        # other files, LFS-tracked non-checkpoints included, are the same blobs
        for path in ("README.md", "weights.onnx"):
            assert tree[path].id == old_trees[name][path].id, (name, path)
        assert parse_pointer(tree["weights.onnx"].data) is not None
        attrs = tree[".gitattributes"].data.decode()
        assert effective_filter(attrs, "model.safetensors") == "theta-like"
        assert effective_filter(attrs, "weights.onnx") == "lfs"

    # checking out every commit gives the original bytes; git status stays clean
    for c in git(r, "rev-list", "--branches", "--tags").stdout.split():
        git(r, "checkout", "-q", "--detach", c)
        name = subject(r, c)
        for path, data in files[name].items():
            assert (r / path).read_bytes() == data, (name, path)
        assert (r / "weights.onnx").read_bytes() == (ONNX_B if name in ("v4 on exp", "merge exp") else ONNX_A)
        assert git(r, "status", "--porcelain").stdout == "", name
    git(r, "checkout", "-q", "main")
    assert git(r, "status", "--porcelain").stdout == ""

    # later versions are deltas against the parent's version: only small new objects
    def new_bytes(m: Manifest, base: Manifest) -> int:
        have = {ref.oid for _, ref in base.objects()}
        return sum({ref.oid: ref.stored for _, ref in m.objects() if ref.oid not in have}.values())

    for child, parent, changed in (
        ("v2", "v1", {"layers.0.mlp.weight", "embed.weight"}),
        ("v3", "v2", {"layers.1.attn.weight"}),
        ("v4 on exp", "v2", {"layers.2.mlp.weight"}),
    ):
        m, base = manifests[f"{child}:model.safetensors"], manifests[f"{parent}:model.safetensors"]
        assert new_bytes(m, base) < len(V1) // 20, child
        for t in m.tensors:
            if t.name in changed:
                assert dict(t.obj.extra).get("base"), (child, t.name, t.obj.codec)
            else:
                assert t.obj == base.tensors[[x.name for x in base.tensors].index(t.name)].obj

    git(r, "fsck", "--strict", "--no-dangling")

    # the old LFS objects are still there (the backup refs need them)
    lfs_dir = r / ".git" / "lfs" / "objects"
    for oid in lfs_objects_before:
        assert (lfs_dir / oid[:2] / oid[2:4] / oid).is_file()

    # running it again finds nothing to do and changes nothing
    tips = git(r, "for-each-ref").stdout
    again = gtl(r, "migrate", "--everything", "--yes")
    assert "nothing to migrate" in again.stderr
    assert git(r, "for-each-ref").stdout == tips


def test_missing_lfs_object_without_remote_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = tmp_path / "repo"
    lfs_init(r)
    commit(r, "v1", monkeypatch, 1_700_000_000, {"model.safetensors": V1})
    commit(r, "v2", monkeypatch, 1_700_001_000, {"model.safetensors": V2})
    oid = lfs_oid(V1)
    (r / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).unlink()
    refs_before = git(r, "for-each-ref").stdout
    gtl(r, "install")

    p = gtl(r, "migrate", "--yes", check=False)
    assert p.returncode == 1
    assert oid in p.stderr and "no remote 'origin'" in p.stderr and "nothing was changed" in p.stderr
    assert git(r, "for-each-ref").stdout == refs_before
    assert BACKUP_PREFIX not in git(r, "for-each-ref").stdout
    assert is_manifest(git(r, "cat-file", "-p", "HEAD:model.safetensors").stdout.encode()) is False


def test_corrupt_lfs_object_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = tmp_path / "repo"
    lfs_init(r)
    commit(r, "v1", monkeypatch, 1_700_000_000, {"model.safetensors": V1})
    git(r, "checkout", "-q", "--detach")
    oid = lfs_oid(V1)
    obj = r / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.chmod(0o644)
    obj.write_bytes(V2[: len(V1)])
    refs_before = git(r, "for-each-ref").stdout + git(r, "rev-parse", "HEAD").stdout

    p = gtl(r, "migrate", "--everything", "--yes", check=False)
    assert p.returncode == 1 and f"LFS object {oid} is corrupt" in p.stderr, p.stderr
    assert git(r, "for-each-ref").stdout + git(r, "rev-parse", "HEAD").stdout == refs_before

    # restored: a detached HEAD moves with --everything too
    obj.write_bytes(V1)
    gtl(r, "migrate", "--everything", "--yes")
    assert git(r, "rev-parse", "HEAD").stdout == git(r, "rev-parse", "main").stdout
    assert git(r, "rev-parse", BACKUP_PREFIX + "HEAD").stdout.strip() in refs_before
    assert (r / "model.safetensors").read_bytes() == V1
    assert git(r, "status", "--porcelain").stdout == ""


def test_missing_lfs_object_is_downloaded_from_the_remote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = tmp_path / "repo"
    lfs_init(r)
    commit(r, "v1", monkeypatch, 1_700_000_000, {"model.safetensors": V1})
    commit(r, "v2", monkeypatch, 1_700_001_000, {"model.safetensors": V2})
    # a file remote holding the LFS objects (git-lfs's standalone layout: <bare>/lfs/objects)
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(r), str(bare))
    shutil.copytree(r / ".git" / "lfs" / "objects", bare / "lfs" / "objects")
    git(r, "remote", "add", "origin", str(bare))
    oid = lfs_oid(V1)
    local = r / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    local.unlink()

    gtl(r, "install")
    gtl(r, "migrate", "--yes")
    assert local.is_file()
    git(r, "checkout", "-q", "--detach", "HEAD~1")
    assert (r / "model.safetensors").read_bytes() == V1
    git(r, "checkout", "-q", "main")
    assert (r / "model.safetensors").read_bytes() == V2
    assert git(r, "status", "--porcelain").stdout == ""


def test_current_branch_only_and_dirty_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = tmp_path / "repo"
    lfs_init(r)
    commit(r, "v1", monkeypatch, 1_700_000_000, {"model.safetensors": V1})
    git(r, "branch", "other")
    commit(r, "v2", monkeypatch, 1_700_001_000, {"model.safetensors": V2})
    other = git(r, "rev-parse", "other").stdout.strip()

    (r / "model.safetensors").write_bytes(V3)
    p = gtl(r, "migrate", "--yes", check=False)
    assert p.returncode == 1 and "uncommitted changes" in p.stderr
    git(r, "checkout", "-q", "--", "model.safetensors")

    p = gtl(r, "migrate", check=False)  # no terminal to ask: --yes is required
    assert p.returncode == 2 and "--yes" in p.stderr

    # without `install`, migrate configures the filter itself before resetting the work tree
    out = gtl(r, "migrate", "--yes")
    assert "2 of 2 commits rewritten" in out.stdout
    assert "configured the theta-like filter" in out.stderr
    assert git(r, "rev-parse", "other").stdout.strip() == other  # not selected: untouched
    assert is_manifest(git(r, "cat-file", "-p", "main~1:model.safetensors").stdout.encode())
    assert (r / "model.safetensors").read_bytes() == V2
    assert git(r, "status", "--porcelain").stdout == ""


def test_include_pattern_without_gitattributes_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pointer committed as a plain file (no filter=lfs line, no .gitattributes at all):
    --include migrates it and the commit gains a .gitattributes; untouched commits keep their ids."""
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    commit(r, "readme", monkeypatch, 1_700_000_000, {"README.md": b"hi\n"})
    first = git(r, "rev-parse", "HEAD").stdout.strip()
    oid = lfs_oid(V1)
    obj = r / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    obj.parent.mkdir(parents=True)
    obj.write_bytes(V1)
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(V1)}\n"
    commit(r, "pointer", monkeypatch, 1_700_001_000, {"ckpt/m.pt": pointer.encode(), "a.txt": b"a"})
    nothing = gtl(r, "migrate", "--yes")  # no filter=lfs patterns in .gitattributes
    assert "nothing to migrate" in nothing.stderr and nothing.stdout == ""
    out = gtl(r, "migrate", "--include", "ckpt/*.pt", "--yes")
    assert "1 of 2 commits rewritten" in out.stdout
    assert git(r, "rev-parse", "HEAD~1").stdout.strip() == first
    assert git(r, "show", "HEAD:.gitattributes").stdout == (
        "ckpt/*.pt filter=theta-like diff=theta-like merge=theta-like -text\n"
    )
    assert [line.split("\t")[1] for line in git(r, "ls-tree", "HEAD").stdout.splitlines()] == [
        ".gitattributes",
        "README.md",
        "a.txt",
        "ckpt",
    ]
    git(r, "fsck", "--strict", "--no-dangling")
    assert (r / "ckpt" / "m.pt").read_bytes() == V1
    assert git(r, "status", "--porcelain").stdout == ""


# ------------------------------------------------------------------ pieces


def test_parse_pointer() -> None:
    oid = "a" * 64
    good = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize 12345\n".encode()
    p = parse_pointer(good)
    assert p is not None and p.oid == oid and p.size == 12345 and not p.extensions
    assert parse_pointer(good.replace(b"size 12345", b"size x")) is None
    assert parse_pointer(good.replace(b"sha256:", b"sha1:")) is None
    assert parse_pointer(b"\x00" * 100) is None
    assert parse_pointer(V1) is None


@pytest.mark.parametrize(
    "pattern,path,expected",
    [
        ("*.safetensors", "model.safetensors", True),
        ("*.safetensors", "a/b/model.safetensors", True),
        ("*.safetensors", "model.safetensors.json", False),
        ("/model.bin", "model.bin", True),
        ("/model.bin", "sub/model.bin", False),
        ("ckpt/*.pt", "ckpt/a.pt", True),
        ("ckpt/*.pt", "ckpt/x/a.pt", False),
        ("ckpt/**/*.pt", "ckpt/x/y/a.pt", True),
        ("ckpt/**", "ckpt/x/a.pt", True),
        ("**/*.bin", "a/b.bin", True),
        ("model-?.[bp]in", "model-1.bin", True),
        ("model-?.[!b]in", "model-1.bin", False),
    ],
)
def test_pattern_matches(pattern: str, path: str, expected: bool) -> None:
    assert pattern_matches(pattern, path) is expected


def test_retrack_replaces_lfs_attributes_and_keeps_the_rest() -> None:
    text = "# models\n*.safetensors filter=lfs diff=lfs merge=lfs -text\n" + LFS_ONNX + "\n"
    new = retrack(text, ["*.safetensors", "*.pt"])
    assert new.splitlines() == [
        "# models",
        OUR_LINE,
        LFS_ONNX,
        "*.pt filter=theta-like diff=theta-like merge=theta-like -text",
    ]
    assert effective_filter(new, "x/model.safetensors") == "theta-like"
    # a later, broader git-lfs line wins over ours
    assert effective_filter(new + "x/** filter=lfs\n", "x/model.safetensors") == "lfs"
