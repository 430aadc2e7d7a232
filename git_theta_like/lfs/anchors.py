"""Anchors: git-lfs pointer blobs that keep our objects alive on servers that garbage-collect.

The Hugging Face Hub deletes, daily, every LFS object that no git-lfs pointer file reachable
from the repository's branches and tags references. Our objects are referenced by manifests
only, so a push also keeps a side branch on the remote, `theta-like-objects`, whose tree holds
one standard pointer blob (spec v1) per object that pushed commits need:

    .gitattributes          `* filter=lfs diff=lfs merge=lfs -text`, except itself and README.md
    README.md               what the branch is
    ab/cd/abcd…<64 hex>     `version https://git-lfs.github.com/spec/v1` / `oid sha256:…` / `size N`

Each commit's tree is the union of everything anchored so far (append-only: an object is
anchored when one tree lookup finds its pointer), built with pygit2's TreeBuilder from the
remote's tip (no working tree, no index). The pre-push hook pushes the new commit after the
upload and before git sends the user's refs, so a pushed commit's objects are never
unanchored; a push that someone else's push beat is rebuilt on the new tip and retried.

The branch is not trusted: an object counts as anchored only when the blob at its path is
exactly the pointer we would write (its git id is compared, so no blob is read), anything else
at that path is replaced. `theta-like.anchors=false` turns all of it off.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable

import pygit2

from git_theta_like import faults
from git_theta_like.errors import RemoteError
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.pointer import format_pointer
from git_theta_like.manifest import is_object_id
from git_theta_like.store import store_of

BRANCH = "theta-like-objects"
REMOTE_REF = f"refs/heads/{BRANCH}"
LOCAL_PREFIX = "refs/theta-like/anchors/"
SETTING = "theta-like.anchors"
TRIES = 5  # pushes of the anchor branch rejected because another push advanced it first

ATTRIBUTES = b"""* filter=lfs diff=lfs merge=lfs -text
.gitattributes !filter !diff !merge text
README.md !filter !diff !merge text
"""

README = b"""# theta-like-objects

Written by git-theta-like; do not check this branch out or edit it.

Each file under `ab/cd/` is a standard Git LFS pointer to one object (a tensor, a delta or a
checkpoint skeleton) that the checkpoints committed on the other branches and tags need.
git-theta-like references its objects from its own manifests; LFS servers that delete objects
no LFS pointer references (the Hugging Face Hub does, daily) keep the objects these pointers
name. `git push` adds to this branch; `git theta-like push --all REMOTE` repairs it.
"""


def enabled(repo: Repo) -> bool:
    """Whether pushes keep the anchor branch: `theta-like.anchors`, default true."""
    return repo.config_bool(SETTING, default=True)


def path_of(oid: str) -> str:
    return f"{oid[0:2]}/{oid[2:4]}/{oid}"


def local_ref(repo: Repo, remote: str) -> str:
    """Where the remote's anchor branch is kept here: `refs/theta-like/anchors/<remote>` for a
    configured remote, `…/url-<hash>` for a URL (`git push https://… main`)."""
    name = remote
    if repo.config_get(f"remote.{remote}.url") is None or not pygit2.reference_is_valid_name(
        LOCAL_PREFIX + remote
    ):
        name = "url-" + hashlib.sha256(remote.encode()).hexdigest()[:16]
    return LOCAL_PREFIX + name


def true_sizes(repo: Repo, objs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """oid -> size for the pointers: the local file's size when the object is here (what the
    server holds, whatever a manifest claims), else the size given."""
    store = store_of(repo)
    out: dict[str, int] = {}
    for oid, size in objs:
        if oid in out or not is_object_id(oid):
            continue
        try:
            out[oid] = store.path(oid).stat().st_size
        except OSError:
            out[oid] = int(size)
    return out


def _git(repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=repo.workdir or repo.git_dir,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )


def fetch_tip(repo: Repo, remote: str, url: str | None = None) -> pygit2.Commit | None:
    """The remote's anchor branch, fetched into local_ref (None when the remote has none: the
    local ref is then removed). From `url` when given (the URL a push goes to, which
    `remote.<name>.pushurl` may make another than the one fetches use)."""
    ref = local_ref(repo, remote)
    where = url or remote
    p = _git(
        repo,
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-auto-maintenance",
        "--no-recurse-submodules",
        where,
        f"+{REMOTE_REF}:{ref}",
    )
    if p.returncode != 0:
        listed = _git(repo, "ls-remote", "--heads", where, REMOTE_REF)
        if listed.returncode != 0 or listed.stdout.strip():  # unreachable, or it failed for another reason
            raise RemoteError(f"cannot fetch the anchor branch {BRANCH} from {remote}: {p.stderr.strip()}")
        if ref in repo.git.references:
            repo.git.references.delete(ref)
        return None
    try:
        return repo.git.references[ref].peel(pygit2.Commit)
    except (KeyError, ValueError, pygit2.GitError):
        raise RemoteError(f"the anchor branch {BRANCH} of {remote} is not a commit") from None


def _entry_id(tree: pygit2.Tree | None, path: str) -> pygit2.Oid | None:
    if tree is None:
        return None
    try:
        entry = tree[path]
    except (KeyError, ValueError, TypeError, pygit2.GitError):
        return None
    return entry.id if entry.type_str == "blob" else None


def unanchored(tip: pygit2.Commit | None, sizes: dict[str, int]) -> dict[str, int]:
    """Those of `sizes` (oid -> size) whose pointer the anchor tree does not hold exactly."""
    tree = tip.tree if tip is not None else None
    return {
        oid: size
        for oid, size in sizes.items()
        if _entry_id(tree, path_of(oid)) != pygit2.hash(format_pointer(oid, size))
    }


def _subtree(repo: Repo, tree: pygit2.Tree | None, name: str) -> pygit2.Tree | None:
    if tree is None or name not in tree:
        return None
    obj = repo.git.get(tree[name].id)
    return obj if isinstance(obj, pygit2.Tree) else None


def build(repo: Repo, tip: pygit2.Commit | None, add: dict[str, int]) -> pygit2.Oid:
    """A commit whose tree is tip's plus the pointers of `add` (oid -> size); tip its parent."""
    g = repo.git
    base = tip.tree if tip is not None else None
    groups: dict[str, dict[str, dict[str, int]]] = {}
    for oid, size in add.items():
        groups.setdefault(oid[0:2], {}).setdefault(oid[2:4], {})[oid] = size
    blob, tree = pygit2.enums.FileMode.BLOB, pygit2.enums.FileMode.TREE
    root = g.TreeBuilder(base) if base is not None else g.TreeBuilder()
    for a, subs in sorted(groups.items()):
        old_a = _subtree(repo, base, a)
        tb_a = g.TreeBuilder(old_a) if old_a is not None else g.TreeBuilder()
        for b, leaves in sorted(subs.items()):
            old_b = _subtree(repo, old_a, b)
            tb_b = g.TreeBuilder(old_b) if old_b is not None else g.TreeBuilder()
            for oid, size in sorted(leaves.items()):
                tb_b.insert(oid, g.create_blob(format_pointer(oid, size)), blob)
            tb_a.insert(b, tb_b.write(), tree)
        root.insert(a, tb_a.write(), tree)
    root.insert(".gitattributes", g.create_blob(ATTRIBUTES), blob)
    root.insert("README.md", g.create_blob(README), blob)
    try:
        sig = g.default_signature
    except (KeyError, pygit2.GitError):
        sig = pygit2.Signature("git-theta-like", "git-theta-like@localhost")
    parents = [tip.id] if tip is not None else []
    message = f"git-theta-like: anchor {len(add)} object(s)\n"
    return g.create_commit(None, sig, sig, message, root.write(), parents)


def _push(repo: Repo, remote: str, url: str | None, commit: pygit2.Oid) -> bool:
    """Push commit to the remote's anchor branch; False when rejected as not a fast-forward
    (another push advanced the branch), an error for any other failure."""
    p = _git(
        repo,
        "push",
        "--porcelain",
        "--no-verify",
        "--no-follow-tags",
        "--no-recurse-submodules",
        url or remote,
        f"{commit}:{REMOTE_REF}",
    )
    if p.returncode == 0:
        return True
    for line in p.stdout.splitlines():
        if line.startswith("!") and "[rejected]" in line:
            return False
    detail = (p.stderr.strip() + "\n" + p.stdout.strip()).strip()
    raise RemoteError(
        f"cannot push the anchor branch {BRANCH} to {remote} (it keeps servers that garbage-collect "
        f"LFS objects, as the Hugging Face Hub, from deleting the pushed objects; "
        f"`git config {SETTING} false` turns it off): {detail}"
    )


def anchor(
    repo: Repo, remote: str, objs: Iterable[tuple[str, int]], url: str | None = None, tries: int = TRIES
) -> int:
    """Make sure the remote's anchor branch holds a pointer to each of objs (which the remote
    must have); returns how many were added (0, and nothing pushed, when all were there). `url`:
    the URL the pre-push hook was given, which git commands then use instead of the name."""
    sizes = true_sizes(repo, objs)
    if not sizes or not enabled(repo):
        return 0
    for _ in range(max(1, tries)):
        tip = fetch_tip(repo, remote, url)
        add = unanchored(tip, sizes)
        if not add:
            return 0
        commit = build(repo, tip, add)
        faults.point("anchor")
        if _push(repo, remote, url, commit):
            repo.git.references.create(local_ref(repo, remote), commit, force=True)
            return len(add)
    raise RemoteError(
        f"cannot push the anchor branch {BRANCH} to {remote}: other pushes advanced it {tries} times "
        "in a row; push again"
    )
