"""Push, clone, fetch and checkout through real remotes: a file:// bare repository (git-lfs's
standalone transfer layout) and a real LFS HTTP server (giftless) on loopback; failures through
our fault-injecting LFS server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import finetuned
from lfs_server import FaultyLFSServer, GiftlessServer, giftless_available

from git_theta_like.manifest import Manifest

version = finetuned


V1 = version(1)
V2 = version(2, ("layers.0.attn.weight",))
V3 = version(3, ("layers.0.attn.weight", "layers.2.mlp.weight"))


class Remote:
    """A bare git repository plus where its LFS objects go (file:// or an HTTP server)."""

    def __init__(self, root: Path, kind: str) -> None:
        self.kind = kind
        self.bare = root / "remote.git"
        run("git", "init", "-q", "--bare", "-b", "main", str(self.bare), cwd=root)
        self.server: GiftlessServer | FaultyLFSServer | None = None
        if kind == "giftless":
            self.server = GiftlessServer(root / "giftless").start()
        elif kind == "faulty":
            self.server = FaultyLFSServer(root / "faulty").start()

    @property
    def lfs_url(self) -> str | None:
        return self.server.endpoint if self.server else None

    def objects(self) -> set[str]:
        if self.server is None:
            root = self.bare / "lfs" / "objects"
            return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()
        if isinstance(self.server, GiftlessServer):
            d = self.server.object_path("0" * 64).parent
        else:
            d = self.server.storage
        return {p.name for p in d.iterdir()} if d.exists() else set()

    def object_file(self, oid: str) -> Path:
        if self.server is None:
            return self.bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        return self.server.object_path(oid)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(params=["file", "giftless"])
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    if request.param == "giftless" and not giftless_available():
        pytest.fail("giftless is not installed: run scripts/setup (tests/requirements-lfs-server.txt)")
    r = Remote(tmp_path, request.param)
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def global_install(git_env: None, tmp_path: Path) -> None:
    """Clones get the filter from the global config, as a user with `install --global` has."""
    run("git", "theta-like", "install", "--global", "--no-hooks", cwd=tmp_path)


def make_origin(tmp_path: Path, remote: Remote) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    gtl(work, "install")
    gtl(work, "track", "*.safetensors")
    if remote.lfs_url:  # a committed .lfsconfig points every clone at the LFS server
        (work / ".lfsconfig").write_text(f'[lfs]\n\turl = "{remote.lfs_url}"\n')
    git(
        work,
        "remote",
        "add",
        "origin",
        str(remote.bare) if remote.kind != "file" else f"file://{remote.bare}",
    )
    git(work, "add", ".")
    git(work, "commit", "-qm", "setup")
    return work


def commit(repo: Path, data: bytes, msg: str, name: str = "model.safetensors") -> None:
    (repo / name).write_bytes(data)
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)


def clone(tmp_path: Path, remote: Remote, name: str, *args: str, env: dict[str, str] | None = None) -> Path:
    dest = tmp_path / name
    url = f"file://{remote.bare}" if remote.kind == "file" else str(remote.bare)
    full_env = {**os.environ, **(env or {})}
    import subprocess

    p = subprocess.run(
        ["git", "clone", "-q", *args, url, str(dest)],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
    )
    if p.returncode:
        raise AssertionError(f"clone failed:\n{p.stderr}")
    return dest


def manifest_objects(repo: Path, rev: str, path: str = "model.safetensors") -> set[str]:
    m = Manifest.from_text(git(repo, "show", f"{rev}:{path}").stdout)
    return {ref.oid for _, ref in m.objects()}


@pytest.mark.slow
def test_push_clone_checkout_old_revisions(tmp_path: Path, remote: Remote) -> None:
    work = make_origin(tmp_path, remote)
    commit(work, V1, "v1")
    commit(work, V2, "v2")
    commit(work, V3, "v3")
    r = git(work, "push", "-q", "origin", "main")
    assert "uploaded" in r.stderr
    needed = set().union(*(manifest_objects(work, f"HEAD~{i}") for i in range(3)))
    assert needed <= remote.objects()

    c = clone(tmp_path, remote, "clone")
    assert (c / "model.safetensors").read_bytes() == V3
    assert git(c, "status", "--porcelain").stdout == ""
    for rev, data in (("main~1", V2), ("main~2", V1)):
        git(c, "checkout", "-q", rev)
        assert (c / "model.safetensors").read_bytes() == data
    # the clone only downloaded what its checkouts needed
    assert len(list((c / ".git" / "lfs" / "objects").rglob("*"))) > 0


def test_push_only_sends_what_the_remote_lacks(tmp_path: Path, remote: Remote) -> None:
    work = make_origin(tmp_path, remote)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    before = remote.objects()
    commit(work, V2, "v2")
    r = git(work, "push", "-q", "origin", "main")
    new = remote.objects() - before
    assert len(new) == 1 and "uploaded 1 object" in r.stderr  # the one changed tensor (a delta)


@pytest.mark.slow
def test_new_branch_from_a_clone_and_a_merge_commit(tmp_path: Path, remote: Remote) -> None:
    work = make_origin(tmp_path, remote)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    c = clone(tmp_path, remote, "c1")
    git(c, "checkout", "-q", "-b", "feature")
    commit(c, V2, "v2 on feature")
    git(c, "push", "-q", "origin", "feature")
    # merge commit: main gains another checkpoint, feature's model comes in with the merge
    git(c, "checkout", "-q", "main")
    commit(c, V3, "other model", name="other.safetensors")
    git(c, "merge", "-q", "--no-edit", "feature")
    git(c, "push", "-q", "origin", "main")
    fresh = clone(tmp_path, remote, "c2")
    assert (fresh / "model.safetensors").read_bytes() == V2
    assert (fresh / "other.safetensors").read_bytes() == V3
    git(fresh, "checkout", "-q", "origin/feature")
    assert (fresh / "model.safetensors").read_bytes() == V2


def _fork_scenario(tmp_path: Path) -> tuple[Path, Remote]:
    """origin has v1; a colleague cloned it, committed v2 and pushed it to a fork of their own."""
    (tmp_path / "o").mkdir()
    (tmp_path / "f").mkdir()
    origin, fork = Remote(tmp_path / "o", "file"), Remote(tmp_path / "f", "file")
    work = make_origin(tmp_path, origin)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    colleague = clone(tmp_path, origin, "colleague")
    git(colleague, "remote", "add", "fork", f"file://{fork.bare}")
    commit(colleague, V2, "v2 by a colleague")
    git(colleague, "push", "-q", "fork", "main")
    assert fork.objects() - origin.objects()  # v2's objects are on the fork only
    git(work, "remote", "add", "colleague", f"file://{fork.bare}")
    git(work, "fetch", "-q", "colleague")
    return work, fork


@pytest.mark.slow
def test_merging_a_colleagues_fork_fetches_its_objects_from_the_fork(tmp_path: Path) -> None:
    """`git fetch colleague; git merge colleague/main`: the checkout needs objects origin does not
    have; they are looked for on the other remotes (as git-lfs's lfs.remote.searchAll)."""
    work, _ = _fork_scenario(tmp_path)
    (work / "model.safetensors").unlink()
    git(work, "checkout", "-q", "--", "model.safetensors")
    shutil.rmtree(work / ".git" / "lfs" / "objects")  # only what origin and the fork hold
    git(work, "checkout", "-q", "--", "model.safetensors")
    git(work, "merge", "-q", "--ff-only", "colleague/main")
    assert (work / "model.safetensors").read_bytes() == V2
    assert git(work, "status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_with_search_all_remotes_off_only_the_default_remote_is_asked(tmp_path: Path) -> None:
    work, _ = _fork_scenario(tmp_path)
    shutil.rmtree(work / ".git" / "lfs" / "objects")
    git(work, "config", "theta-like.searchAllRemotes", "false")
    r = git(work, "merge", "-q", "--ff-only", "colleague/main", check=False)
    assert r.returncode != 0 and "not found on the remote" in r.stderr, r.stderr
    assert "git-theta-like" in r.stderr and "nor on" not in r.stderr  # the fork was not asked
    gtl(work, "fetch", "colleague", "colleague/main")  # naming the remote still works
    git(work, "reset", "-q", "--hard")
    git(work, "merge", "-q", "--ff-only", "colleague/main")
    assert (work / "model.safetensors").read_bytes() == V2


def _lazy_clone_of_two_versions(tmp_path: Path) -> tuple[Path, Remote]:
    """origin has main (v1, v2) and a branch (v3); a clone that skipped smudge has no object."""
    (tmp_path / "o").mkdir()
    origin = Remote(tmp_path / "o", "file")
    work = make_origin(tmp_path, origin)
    commit(work, V1, "v1")
    commit(work, V2, "v2")
    git(work, "checkout", "-q", "-b", "side")
    commit(work, V3, "v3 on a side branch")
    git(work, "push", "-q", "origin", "main", "side")
    c = clone(tmp_path, origin, "lazy", env={"GIT_THETA_LIKE_SKIP_SMUDGE": "1"})
    git(c, "branch", "-q", "side", "origin/side")
    local = c / ".git" / "lfs" / "objects"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))
    return c, origin


def test_fetch_all_gets_every_version_any_ref_reaches(tmp_path: Path) -> None:
    c, _ = _lazy_clone_of_two_versions(tmp_path)
    out = gtl(c, "fetch", "--all").stdout
    assert "3 checkpoint(s)" in out
    git(c, "remote", "set-url", "origin", str(tmp_path / "gone.git"))  # offline from here on
    for rev, data in (("main~1", V1), ("main", V2), ("side", V3)):
        git(c, "checkout", "-q", rev)
        gtl(c, "checkout")
        assert (c / "model.safetensors").read_bytes() == data, rev


@pytest.mark.slow
def test_pushing_a_lazy_clone_to_a_new_host_fetches_what_it_lacks(tmp_path: Path) -> None:
    """A clone that never downloaded the model pushes to a new, empty host: the pre-push hook
    fetches the objects the push needs from origin first, and the new host serves a full clone."""
    c, _ = _lazy_clone_of_two_versions(tmp_path)
    (tmp_path / "n").mkdir()
    new_host = Remote(tmp_path / "n", "file")
    git(c, "remote", "add", "new", f"file://{new_host.bare}")
    r = git(c, "push", "-q", "new", "main", "side")
    assert "not local: fetching them first" in r.stderr
    fresh = clone(tmp_path, new_host, "from-new-host")
    assert (fresh / "model.safetensors").read_bytes() == V2
    git(fresh, "checkout", "-q", "HEAD~1")
    assert (fresh / "model.safetensors").read_bytes() == V1
    git(fresh, "checkout", "-q", "origin/side")
    assert (fresh / "model.safetensors").read_bytes() == V3


@pytest.mark.slow
def test_rebase_and_force_push(tmp_path: Path, remote: Remote) -> None:
    work = make_origin(tmp_path, remote)
    commit(work, V1, "v1")
    commit(work, V2, "v2")
    git(work, "push", "-q", "origin", "main")
    git(work, "reset", "-q", "--hard", "HEAD~1")
    commit(work, V3, "v3 instead of v2")
    git(work, "push", "-q", "--force", "origin", "main")
    fresh = clone(tmp_path, remote, "fresh")
    assert (fresh / "model.safetensors").read_bytes() == V3


@pytest.mark.slow
def test_skip_smudge_then_fetch_and_materialise(tmp_path: Path, remote: Remote) -> None:
    work = make_origin(tmp_path, remote)
    commit(work, V1, "v1")
    commit(work, V2, "v2")
    git(work, "push", "-q", "origin", "main")
    c = clone(tmp_path, remote, "lazy", env={"GIT_THETA_LIKE_SKIP_SMUDGE": "1"})
    assert (c / "model.safetensors").read_bytes().startswith(b"git-theta-like manifest v1")
    assert not (c / ".git" / "lfs" / "objects").exists() or not any(
        (c / ".git" / "lfs" / "objects").rglob("*")
    )
    assert git(c, "status", "--porcelain").stdout == ""
    # prefetch only one layer: only those tensors (and the skeleton) arrive
    out = gtl(c, "fetch", "--include", "layers.0.*").stdout
    assert "downloaded" in out
    local = {p.name for p in (c / ".git" / "lfs" / "objects").rglob("*") if p.is_file()}
    m = Manifest.from_text(git(c, "show", "HEAD:model.safetensors").stdout)
    layer0 = {t.obj.oid for t in m.tensors if t.name.startswith("layers.0.")}
    others = {t.obj.oid for t in m.tensors if not t.name.startswith("layers.0.")} - layer0
    assert layer0 <= local and not (others & local)
    # everything for HEAD and HEAD~1, then offline: the server is gone, checkout still works
    gtl(c, "fetch", "origin", "HEAD", "HEAD~1")
    remote.stop()
    shutil.rmtree(remote.bare / "lfs", ignore_errors=True)
    done = gtl(c, "checkout").stdout
    assert "model.safetensors" in done
    assert (c / "model.safetensors").read_bytes() == V2
    assert git(c, "status", "--porcelain").stdout == ""
    git(c, "checkout", "-q", "HEAD~1")
    assert (c / "model.safetensors").read_bytes() == V1


# ------------------------------------------------------------------ failures


@pytest.fixture
def faulty_remote(tmp_path: Path) -> Iterator[Remote]:
    r = Remote(tmp_path, "faulty")
    yield r
    r.stop()


def push_checkpoints(
    tmp_path: Path, remote: Remote, n: int, seed: int
) -> tuple[dict[str, bytes], FaultyLFSServer]:
    """n checkpoints under ckpt/ committed and pushed to the faulty remote: path -> bytes, server."""
    work = make_origin(tmp_path, remote)
    files = {f"ckpt/{i:02d}.safetensors": version(seed + i) for i in range(n)}
    (work / "ckpt").mkdir()
    for name, data in files.items():
        (work / name).write_bytes(data)
    git(work, "add", "ckpt")
    git(work, "commit", "-qm", f"{n} checkpoints")
    git(work, "push", "-q", "origin", "main")
    assert isinstance(remote.server, FaultyLFSServer)
    return files, remote.server


def test_a_clone_of_many_checkpoints_downloads_them_together(tmp_path: Path, faulty_remote: Remote) -> None:
    """git's `delay` capability: the filter answers each file's smudge later, collects what all
    of them lack, and downloads it in one batch request (with concurrent transfers) when git asks
    which files are ready, instead of one batch and one download per file."""
    files, srv = push_checkpoints(tmp_path, faulty_remote, 12, seed=100)
    asked = srv.count("POST", "/objects/batch")
    fresh = clone(tmp_path, faulty_remote, "fresh", env={"GIT_TRACE_PACKET": str(tmp_path / "packets")})
    assert srv.count("POST", "/objects/batch") - asked == 1
    packets = (tmp_path / "packets").read_text()
    assert packets.count("status=delayed") == len(files) and "list_available_blobs" in packets
    for name, data in files.items():
        assert (fresh / name).read_bytes() == data, name
    assert git(fresh, "status", "--porcelain").stdout == ""


def test_delayed_files_are_written_while_the_download_goes_on(tmp_path: Path, faulty_remote: Remote) -> None:
    """The delayed smudges' transfer runs in the background: a file is decoded and written as
    soon as its own objects are in, not after every file's objects are (each download answers
    late here, so the transfer takes several rounds)."""
    import subprocess

    files, srv = push_checkpoints(tmp_path, faulty_remote, 6, seed=200)
    srv.delay_transfers = 0.25
    env = {**os.environ, "GIT_THETA_LIKE_PROGRESS": "1"}
    p = subprocess.run(
        ["git", "clone", "-q", str(faulty_remote.bare), str(tmp_path / "fresh")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    # every redraw, in order (text mode reads each \r as a line end); lines going on at once
    # share the row, the download's first, and it leaves the row when it finishes
    draws = [x.replace("\x1b[K", "") for x in p.stderr.splitlines() if x.strip()]
    both = [x for x in draws if x.startswith("Downloading LFS objects: ") and " | Writing ckpt/" in x]
    assert both, draws  # tensors written while objects were still coming
    for name, data in files.items():
        assert (tmp_path / "fresh" / name).read_bytes() == data, name
    assert git(tmp_path / "fresh", "status", "--porcelain").stdout == ""


def test_server_down_during_push_leaves_the_remote_ref_unchanged(
    tmp_path: Path, faulty_remote: Remote
) -> None:
    work = make_origin(tmp_path, faulty_remote)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    before = git(work, "ls-remote", "origin", "main").stdout
    commit(work, V2, "v2")
    faulty_remote.stop()
    r = git(work, "push", "-q", "origin", "main", check=False)
    assert r.returncode != 0
    assert "cannot reach LFS server" in r.stderr
    assert git(work, "ls-remote", "origin", "main").stdout == before


def test_object_missing_on_server_names_it(tmp_path: Path, faulty_remote: Remote) -> None:
    work = make_origin(tmp_path, faulty_remote)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    m = Manifest.from_text(git(work, "show", "HEAD:model.safetensors").stdout)
    victim = next(t for t in m.tensors if t.name == "layers.1.mlp.weight").obj.oid
    faulty_remote.object_file(victim).unlink()
    c = clone(tmp_path, faulty_remote, "c", "--no-checkout")
    r = git(c, "checkout", "main", check=False)
    assert r.returncode != 0 and victim in r.stderr
    assert not any((c / ".git" / "lfs" / "tmp").glob("*")) if (c / ".git" / "lfs" / "tmp").exists() else True


def test_object_corrupted_in_transit_is_refused(tmp_path: Path, faulty_remote: Remote) -> None:
    work = make_origin(tmp_path, faulty_remote)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    m = Manifest.from_text(git(work, "show", "HEAD:model.safetensors").stdout)
    victim = m.tensors[0].obj.oid
    p = faulty_remote.object_file(victim)
    data = bytearray(p.read_bytes())
    data[0] ^= 0xFF
    p.write_bytes(bytes(data))
    c = clone(tmp_path, faulty_remote, "c", "--no-checkout")
    r = git(c, "checkout", "main", check=False)
    assert r.returncode != 0 and victim in r.stderr and "corrupt" in r.stderr
    assert not (c / ".git" / "lfs" / "objects" / victim[:2] / victim[2:4] / victim).exists()


def test_connection_cut_mid_transfer_is_retried(tmp_path: Path, faulty_remote: Remote) -> None:
    work = make_origin(tmp_path, faulty_remote)
    commit(work, V1, "v1")
    git(work, "push", "-q", "origin", "main")
    assert isinstance(faulty_remote.server, FaultyLFSServer)
    faulty_remote.server.truncate_downloads = 1
    faulty_remote.server.drop_connections = 1
    c = clone(tmp_path, faulty_remote, "c")
    assert (c / "model.safetensors").read_bytes() == V1


def test_no_remote_is_a_clear_error(tmp_path: Path) -> None:
    r = tmp_path / "solo"
    r.mkdir()
    git(r, "init", "-q")
    gtl(r, "install")
    gtl(r, "track", "*.safetensors")
    commit(r, V1, "v1")
    shutil.rmtree(r / ".git" / "lfs")
    shutil.rmtree(r / ".git" / "theta-like")
    (r / "model.safetensors").unlink()
    out = git(r, "checkout", "--", "model.safetensors", check=False)
    assert out.returncode != 0 and "no remote 'origin'" in out.stderr
