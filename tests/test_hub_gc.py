"""Objects survive a server that garbage-collects LFS objects no git-lfs pointer references (the
Hugging Face Hub, simulated by lfs_server.hub_gc): the anchor branch `theta-like-objects`
(git_theta_like/lfs/anchors.py), and the commands that repair a remote that lost objects
(`git theta-like push --all / --object-id`, `fsck --remote`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, gtl
from fixtures import finetuned
from lfs_server import giftless_available, hub_gc, referenced_by_pointers
from test_remotes import Remote, clone, global_install, make_origin  # noqa: F401

from git_theta_like.manifest import Manifest

BRANCH = "refs/heads/theta-like-objects"
V1 = finetuned(1)
V2 = finetuned(2, ("layers.0.attn.weight",))
V3 = finetuned(3, ("layers.2.mlp.weight",))
V4 = finetuned(4, ("layers.1.mlp.weight", "embed.weight"))
V5 = finetuned(5, ("layers.1.attn.weight",))
V6 = finetuned(6, ("layers.0.mlp.weight",))


@pytest.fixture
def giftless(tmp_path: Path) -> Iterator[Remote]:
    if not giftless_available():
        pytest.fail("giftless is not installed: run scripts/setup (tests/requirements-lfs-server.txt)")
    r = Remote(tmp_path, "giftless")
    yield r
    r.stop()


@pytest.fixture
def file_remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path, "file")


class History:
    """Commits made in some clones, with the bytes of every checkpoint each one holds."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}

    def commit(self, repo: Path, msg: str, **files: bytes) -> str:
        for name, data in files.items():
            (repo / name).write_bytes(data)
            git(repo, "add", name)
        git(repo, "commit", "-qm", msg)
        return self.record(repo)

    def record(self, repo: Path) -> str:
        sha = git(repo, "rev-parse", "HEAD").stdout.strip()
        self.files[sha] = {p.name: p.read_bytes() for p in repo.glob("*.safetensors")}
        return sha


def drop_from_remote(remote: Remote, oid: str) -> None:
    """Delete an object from a file:// remote (and the second link the store keeps)."""
    remote.object_file(oid).unlink()
    (remote.bare / "theta-like" / "objects" / oid[:2] / oid[2:4] / oid).unlink(missing_ok=True)


def pushed_commits(bare: Path) -> list[str]:
    """The commits of the remote's branches and tags, the anchor branch's left out."""
    return git(bare, "rev-list", "--exclude=theta-like-objects", "--branches", "--tags").stdout.split()


def all_objects(repo: Path, revs: list[str]) -> set[str]:
    out = set()
    for rev in revs:
        for path in git(repo, "ls-tree", "--name-only", rev).stdout.split():
            if path.endswith(".safetensors"):
                m = Manifest.from_text(git(repo, "show", f"{rev}:{path}").stdout)
                out |= {ref.oid for _, ref in m.objects()}
    return out


def check_every_commit(tmp_path: Path, remote: Remote, history: History, name: str) -> None:
    """A fresh clone checks out every commit the remote's branches and tags reach, each
    byte-identical to what was committed."""
    fresh = clone(tmp_path, remote, name)
    commits = pushed_commits(remote.bare)
    assert set(commits) <= set(history.files)
    for sha in commits:
        git(fresh, "checkout", "-q", sha)
        for path, data in history.files.get(sha, {}).items():
            assert (fresh / path).read_bytes() == data, (sha, path)
        assert git(fresh, "status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_every_pushed_commit_survives_the_hubs_gc(tmp_path: Path, giftless: Remote) -> None:
    """A plain push, `--all` with a new branch, a tag only, a force-push, and a fresh clone's
    merge commit: each anchors what it sends; after the GC a fresh clone checks out them all."""
    h = History()
    work = make_origin(tmp_path, giftless)
    h.record(work)
    h.commit(work, "v1", **{"model.safetensors": V1})
    r = git(work, "push", "-q", "origin", "main")
    assert "anchored" in r.stderr
    git(work, "checkout", "-q", "-b", "feature")
    h.commit(work, "v2 on feature", **{"model.safetensors": V2})
    git(work, "checkout", "-q", "main")
    h.commit(work, "v3 on main", **{"model.safetensors": V3})
    git(work, "push", "-q", "--all", "origin")
    git(work, "checkout", "-q", "--detach")
    h.commit(work, "only a tag reaches this", **{"model.safetensors": V4})
    git(work, "tag", "-a", "special", "-m", "a tag")
    git(work, "push", "-q", "origin", "special")
    git(work, "checkout", "-q", "main")
    git(work, "reset", "-q", "--hard", "HEAD~1")
    h.commit(work, "v5 instead of v3", **{"model.safetensors": V5})
    git(work, "push", "-q", "--force", "origin", "main")
    c = clone(tmp_path, giftless, "colleague")
    h.record(c)
    h.commit(c, "a second model", **{"other.safetensors": V6})
    git(c, "merge", "-q", "--no-edit", "origin/feature")  # both changed the model: merged per tensor
    assert len(git(c, "rev-list", "--parents", "-n1", "HEAD").stdout.split()) == 3  # a merge commit
    h.record(c)
    git(c, "push", "-q", "origin", "main")

    # what the pushed refs need is anchored, and the branch is laid out as documented
    needed = all_objects(giftless.bare, pushed_commits(giftless.bare))
    anchored = {oid for oid, _ in referenced_by_pointers(giftless.bare)}
    assert needed <= anchored
    tree = git(giftless.bare, "ls-tree", "-r", "--name-only", BRANCH).stdout.split()
    assert ".gitattributes" in tree and "README.md" in tree
    for oid in needed:
        assert f"{oid[:2]}/{oid[2:4]}/{oid}" in tree
    attrs = git(giftless.bare, "show", f"{BRANCH}:.gitattributes").stdout
    assert "* filter=lfs diff=lfs merge=lfs -text" in attrs

    stray = hashlib.sha256(b"uploaded by someone, referenced by nothing").hexdigest()
    giftless.object_file(stray).write_bytes(b"uploaded by someone, referenced by nothing")
    assert hub_gc(giftless.bare, giftless.server) == [stray]  # the GC runs, and keeps ours
    check_every_commit(tmp_path, giftless, h, "after-gc")


def v1_without_anchors(tmp_path: Path, remote: Remote) -> Path:
    """A repository for remote with anchors off and V1 committed (not pushed)."""
    work = make_origin(tmp_path, remote)
    git(work, "config", "theta-like.anchors", "false")
    (work / "model.safetensors").write_bytes(V1)
    git(work, "add", "model.safetensors")
    git(work, "commit", "-qm", "v1")
    return work


def test_without_anchors_the_gc_deletes_objects_and_the_clone_fails(tmp_path: Path, giftless: Remote) -> None:
    work = v1_without_anchors(tmp_path, giftless)
    r = git(work, "push", "-q", "origin", "main")
    assert "anchored" not in r.stderr
    assert git(giftless.bare, "rev-parse", "--verify", "-q", BRANCH, check=False).returncode != 0
    deleted = hub_gc(giftless.bare, giftless.server)
    assert set(deleted) == all_objects(work, ["HEAD"])
    p = subprocess.run(
        ["git", "clone", "-q", str(giftless.bare), str(tmp_path / "broken")], capture_output=True, text=True
    )
    assert p.returncode != 0 and "not found on the remote" in p.stderr, p.stderr


@pytest.mark.slow
def test_push_all_repairs_a_remote_that_lost_objects(tmp_path: Path, giftless: Remote) -> None:
    """Pushed before anchors (or with them off), the Hub's GC took the objects; `push --all`
    from a clone that has them uploads and anchors them, and fsck --remote says so first."""
    h = History()
    work = make_origin(tmp_path, giftless)
    git(work, "config", "theta-like.anchors", "false")
    h.record(work)
    h.commit(work, "v1", **{"model.safetensors": V1})
    h.commit(work, "v2", **{"model.safetensors": V2})
    git(work, "push", "-q", "origin", "main")
    lost = hub_gc(giftless.bare, giftless.server)
    assert lost
    r = git(work, "push", "origin", "main", check=False)
    assert "up-to-date" in r.stderr  # git has nothing to send: only the repair helps
    git(work, "config", "--unset", "theta-like.anchors")

    f = gtl(work, "fsck", "--remote", check=False)
    assert f.returncode == 1
    assert f"missing-on-remote: {lost[0]}" in f.stdout
    assert f"run `git theta-like push --all origin` to upload the {len(lost)} missing object(s)" in f.stdout

    out = gtl(work, "push", "--all", "origin").stdout
    assert {line.split()[1] for line in out.splitlines() if line.startswith("uploaded ")} == set(lost)
    assert f"{len(lost)} uploaded to origin, {len(lost)} newly anchored" in out
    assert gtl(work, "fsck", "--remote").stdout.rstrip().endswith("ok")
    again = gtl(work, "push", "--all", "origin").stdout
    assert "0 uploaded to origin, 0 newly anchored" in again
    assert hub_gc(giftless.bare, giftless.server) == []
    check_every_commit(tmp_path, giftless, h, "repaired")


def test_fsck_remote_reports_unanchored_objects_and_the_repair(tmp_path: Path, file_remote: Remote) -> None:
    work = v1_without_anchors(tmp_path, file_remote)
    git(work, "push", "-q", "origin", "main")
    git(work, "config", "--unset", "theta-like.anchors")
    needed = all_objects(work, ["HEAD"])
    f = gtl(work, "fsck", "--remote", check=False)
    assert f.returncode == 1
    assert f.stdout.count("not-anchored: ") == len(needed) and "missing-on-remote" not in f.stdout
    assert (
        f"run `git theta-like push --all origin` to anchor the {len(needed)} unanchored object(s)" in f.stdout
    )
    gtl(work, "push", "--all", "origin")
    assert gtl(work, "fsck", "--remote").returncode == 0
    # an object neither here nor on the remote: named as beyond repair from this clone
    victim = sorted(needed)[0]
    drop_from_remote(file_remote, victim)
    local = work / ".git" / "lfs" / "objects" / victim[:2] / victim[2:4] / victim
    local.unlink()
    (work / ".git" / "theta-like" / "objects" / victim[:2] / victim[2:4] / victim).unlink()
    f = gtl(work, "fsck", "--remote", check=False)
    assert f"lost: {victim}" in f.stdout and "cannot repair" in f.stdout


def test_push_object_id_uploads_and_anchors_those_objects(tmp_path: Path, file_remote: Remote) -> None:
    work = make_origin(tmp_path, file_remote)
    (work / "model.safetensors").write_bytes(V1)
    git(work, "add", "model.safetensors")
    git(work, "commit", "-qm", "v1")
    git(work, "push", "-q", "origin", "main")
    needed = sorted(all_objects(work, ["HEAD"]))
    victims = needed[:2]
    for oid in victims:
        drop_from_remote(file_remote, oid)
    out = gtl(work, "push", "--object-id", "origin", *victims).stdout
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("uploaded ")) == victims
    assert all(file_remote.object_file(o).is_file() for o in victims)
    assert "2 object(s) needed, 2 uploaded to origin, 0 newly anchored" in out  # anchored at the push
    bad = gtl(work, "push", "--object-id", "origin", "f" * 64, check=False)
    assert bad.returncode == 1 and "not in the local store" in bad.stderr
    assert gtl(work, "push", "--object-id", "origin", check=False).returncode == 2


def test_a_push_that_sends_no_objects_pushes_no_anchor_commit(tmp_path: Path, file_remote: Remote) -> None:
    work = make_origin(tmp_path, file_remote)
    (work / "model.safetensors").write_bytes(V1)
    git(work, "add", "model.safetensors")
    git(work, "commit", "-qm", "v1")
    git(work, "push", "-q", "origin", "main")
    tip = git(file_remote.bare, "rev-parse", BRANCH).stdout
    (work / "notes.txt").write_text("no checkpoint changed\n")
    git(work, "add", "notes.txt")
    git(work, "commit", "-qm", "notes")
    r = git(work, "push", "origin", "main")
    git(work, "push", "-q", "origin", "main:copy")  # objects already anchored: nothing to add
    assert "anchored" not in r.stderr
    assert git(file_remote.bare, "rev-parse", BRANCH).stdout == tip
    assert git(file_remote.bare, "rev-list", "--count", BRANCH).stdout.strip() == "1"
    # deleting the branch by accident (git push --mirror does) is refused
    d = git(work, "push", "origin", ":theta-like-objects", check=False)
    assert d.returncode != 0 and "deletes theta-like-objects" in d.stderr
    assert git(file_remote.bare, "rev-parse", BRANCH).stdout == tip


@pytest.mark.slow
def test_a_push_beaten_by_another_rebuilds_its_anchor_commit(tmp_path: Path, file_remote: Remote) -> None:
    """Two clones push at once: one builds its anchor commit, the other's push advances the
    branch meanwhile; the first is rejected, refetches, rebuilds and pushes again."""
    a = make_origin(tmp_path, file_remote)
    (a / "model.safetensors").write_bytes(V1)
    git(a, "add", "model.safetensors")
    git(a, "commit", "-qm", "v1")
    git(a, "push", "-q", "origin", "main")
    b = clone(tmp_path, file_remote, "b")
    (a / "model.safetensors").write_bytes(V2)
    git(a, "commit", "-qam", "v2 by a")
    (b / "other.safetensors").write_bytes(V3)
    git(b, "add", "other.safetensors")
    git(b, "commit", "-qm", "v3 by b")
    go = tmp_path / "go"
    env = {**os.environ, "GIT_THETA_LIKE_FAULT": f"anchor:1:pause={go}"}
    held = subprocess.Popen(
        ["git", "push", "origin", "main:a"],
        cwd=a,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not Path(f"{go}.reached").exists():
        assert held.poll() is None and time.monotonic() < deadline, held.communicate()
        time.sleep(0.05)
    git(b, "push", "-q", "origin", "main")
    go.touch()
    _, err = held.communicate(timeout=60)
    assert held.returncode == 0, err
    needed = all_objects(a, ["HEAD"]) | all_objects(b, ["HEAD"])
    assert needed <= {oid for oid, _ in referenced_by_pointers(file_remote.bare)}
    assert git(file_remote.bare, "rev-list", "--count", BRANCH).stdout.strip() == "3"


def test_a_wrong_pointer_on_the_anchor_branch_is_not_trusted(tmp_path: Path, file_remote: Remote) -> None:
    """Someone rewrote the branch with one pointer wrong (its size): it does not count as
    anchored, fsck says so, the GC deletes the object, and the repair puts both back."""
    work = make_origin(tmp_path, file_remote)
    (work / "model.safetensors").write_bytes(V1)
    git(work, "add", "model.safetensors")
    git(work, "commit", "-qm", "v1")
    git(work, "push", "-q", "origin", "main")
    victim = sorted(all_objects(work, ["HEAD"]))[0]
    path = f"{victim[:2]}/{victim[2:4]}/{victim}"
    good = git(file_remote.bare, "show", f"{BRANCH}:{path}").stdout
    assert good.startswith("version https://git-lfs.github.com/spec/v1\n")
    wrong = good.replace("size ", "size 1")
    index = tmp_path / "tmp-index"
    env_git = ["env", f"GIT_INDEX_FILE={index}", "git"]
    subprocess.run([*env_git, "read-tree", "refs/theta-like/anchors/origin"], cwd=work, check=True)
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"],
        cwd=work,
        input=wrong,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([*env_git, "update-index", "--cacheinfo", f"100644,{blob},{path}"], cwd=work, check=True)
    tree = subprocess.run(
        [*env_git, "write-tree"], cwd=work, capture_output=True, text=True, check=True
    ).stdout
    commit = git(work, "commit-tree", "-m", "rewritten, history dropped", tree.strip()).stdout
    git(work, "push", "-q", "--no-verify", "--force", "origin", f"{commit.strip()}:{BRANCH}")
    f = gtl(work, "fsck", "--remote", check=False)
    assert (
        f.returncode == 1 and f.stdout.count("not-anchored: ") == 1 and f"not-anchored: {victim}" in f.stdout
    )
    assert hub_gc(file_remote.bare) == [victim]  # the GC does not keep it either
    drop = gtl(work, "push", "--all", "origin").stdout
    assert "1 uploaded to origin, 1 newly anchored" in drop
    assert git(file_remote.bare, "show", f"{BRANCH}:{path}").stdout == good
    assert hub_gc(file_remote.bare) == []


def test_a_remote_with_a_push_url_anchors_where_the_push_goes(tmp_path: Path, file_remote: Remote) -> None:
    """`remote.origin.pushurl` names another repository than fetches use: the anchor branch is
    fetched from and pushed to where the push goes."""
    work = make_origin(tmp_path, file_remote)
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    git(work, "remote", "set-url", "origin", f"file://{mirror}")
    git(work, "remote", "set-url", "--push", "origin", f"file://{file_remote.bare}")
    for i, data in enumerate((V1, V2)):
        (work / "model.safetensors").write_bytes(data)
        git(work, "add", "model.safetensors")
        git(work, "commit", "-qm", f"v{i}")
        git(work, "push", "-q", "origin", "main")
    assert git(file_remote.bare, "rev-list", "--count", BRANCH).stdout.strip() == "2"
    assert all_objects(work, ["HEAD", "HEAD~1"]) <= {o for o, _ in referenced_by_pointers(file_remote.bare)}
