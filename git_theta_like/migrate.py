"""`git theta-like migrate`: convert git-lfs-tracked checkpoints in history to git-theta-like.

Like `git lfs migrate import`, this rewrites history. Every commit of the selected refs is
visited parents first; in its tree, each git-lfs pointer at a path matching the migrated
patterns is replaced by the manifest `Engine.clean` makes of the LFS object's content, with the
manifest of the same path in the (first) parent's rewritten commit as `previous`, so that later
versions are stored as deltas. The root `.gitattributes` of each commit trades `filter=lfs` for
our attributes on the migrated patterns. Everything else is kept byte for byte: other files
(LFS-tracked ones included), modes, authors, committers, dates, messages, merges. Commits whose
tree and parents do not change keep their ids; signatures of rewritten commits and tags are
dropped (they no longer match).

Nothing is changed until every LFS object is available (downloaded from the remote when
missing), verified against its SHA-256 and converted: refs are then updated in one atomic
`git update-ref --stdin` transaction, and the old tips kept under
`refs/theta-like-migrate/original/<ref>`.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pygit2

from git_theta_like.display import human_size
from git_theta_like.errors import ManifestError, MigrateError, ObjectMissingError
from git_theta_like.filters.engine import Engine
from git_theta_like.formats import ByteReader, HashingSource
from git_theta_like.gitio.attributes import (
    DRIVER,
    OUR_ATTRS,
    effective_filter,
    lfs_patterns,
    pattern_matches,
    retrack,
)
from git_theta_like.gitio.rawobjects import (
    BLOB_MODES,
    SIGNATURE_HEADERS,
    TREE_MODE,
    TreeEntry,
    parse_tree,
    split_headers,
    strip_signature,
    tree_key,
)
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import looks_like_manifest
from git_theta_like.lfs.pointer import POINTER_MAX, LfsPointer, parse_pointer
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.progress import Progress
from git_theta_like.store import store_of

CHECKPOINT_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")
BACKUP_PREFIX = "refs/theta-like-migrate/original/"
ATTRIBUTES = b".gitattributes"
ZERO = "0" * 40
# attributes that git-lfs's tracking sets and ours replace (as `git theta-like track` does)

Say = Callable[[str], None]


def looks_like_checkpoint(pattern: str) -> bool:
    return pattern.lower().endswith(CHECKPOINT_EXTENSIONS)


# ------------------------------------------------------------------ raw git objects


# ------------------------------------------------------------------ the rewrite


@dataclass
class MigrateResult:
    patterns: list[str]
    refs: list[str]
    commits: int = 0  # commits visited
    rewritten: int = 0  # commits whose id changed
    converted: int = 0  # distinct LFS objects turned into manifests
    raw_converted: int = 0  # distinct raw checkpoint blobs turned into manifests (--fixup)
    bytes_before: int = 0  # their LFS object sizes
    bytes_after: int = 0  # distinct git-theta-like objects the new manifests reference
    updated: list[tuple[str, str, str]] = field(default_factory=list)  # ref, old, new
    reset: bool = False  # whether the work tree was reset to the new HEAD


@dataclass
class _Where:
    size: int
    path: str
    commit: str


class Migrator:
    """The history rewrite, in two passes over the same commits: `scan` (what LFS objects are
    needed; nothing written) and `rewrite` (objects converted, new trees/commits/tags written;
    refs untouched)."""

    def __init__(
        self, repo: Repo, patterns: list[str], engine: Engine, say: Say, fixup: bool = False
    ) -> None:
        self.repo = repo
        self.git = repo.git
        self.odb = repo.git.odb
        self.patterns = patterns
        # --fixup: the migrated paths are those each commit's root .gitattributes gives our
        # filter, and raw checkpoints there (added without the filter) are converted too
        self.fixup = fixup
        self._attr_id = b""  # the root .gitattributes blob of the commit being visited (fixup)
        self._attr_text = ""
        self.by_blob: dict[bytes, pygit2.Oid] = {}  # raw checkpoint blob -> manifest blob
        self.raw_needed: dict[bytes, _Where] = {}  # raw checkpoint blobs to convert (fixup)
        self._is_raw: dict[bytes, bool] = {}
        self.engine = engine
        self.say = say
        if (repo.config_get("extensions.objectformat") or "sha1").lower() != "sha1":
            raise MigrateError("migrate supports SHA-1 repositories only")
        self.id_len = 20
        self.commit_map: dict[pygit2.Oid, pygit2.Oid] = {}
        self.tag_map: dict[pygit2.Oid, pygit2.Oid] = {}
        self.by_lfs: dict[str, pygit2.Oid] = {}  # LFS oid -> manifest blob
        self.manifests: dict[pygit2.Oid, Manifest] = {}  # manifest blob -> parsed
        self.pointers: dict[bytes, LfsPointer | None] = {}  # blob (raw id) -> pointer or None
        self._is_manifest: dict[bytes, bool] = {}  # blob (raw id) -> whether it is a manifest
        self._produced: set[pygit2.Oid] = set()  # manifest blobs made from LFS objects
        # per original commit: checkpoint path -> manifest blob in its rewritten tree
        self.files: dict[pygit2.Oid, dict[str, pygit2.Oid]] = {}
        self._trees: dict[tuple[bytes, str, bytes], tuple[bytes, dict[str, pygit2.Oid]]] = {}
        self._parents: list[dict[str, pygit2.Oid]] = []  # files of the commit being rewritten's parents
        self._commit = ""  # the commit being rewritten (for messages)
        self._total_objects = 0

    # -- reading

    def _raw(self, oid: pygit2.Oid | bytes) -> bytes:
        key = oid if isinstance(oid, pygit2.Oid) else pygit2.Oid(raw=oid)
        try:
            return bytes(self.odb.read(key)[1])
        except KeyError:
            data = self.repo.blob(key)  # a partial clone's blob not fetched yet
            if data is None:
                raise MigrateError(
                    f"object {key} is missing from this repository; nothing was changed"
                ) from None
            return data

    def _size(self, oid: pygit2.Oid) -> int:
        try:
            return int(self.odb.read_header(oid)[1])
        except KeyError:
            return len(self._raw(oid))

    def _tree(self, raw_id: bytes) -> list[TreeEntry]:
        return parse_tree(self._raw(raw_id), self.id_len)

    def _matches(self, path: str) -> str | None:
        if self.fixup:
            return ".gitattributes" if effective_filter(self._attr_text, path) == DRIVER else None
        for pat in self.patterns:
            if pattern_matches(pat, path):
                return pat
        return None

    def _pointer(self, raw_id: bytes) -> LfsPointer | None:
        if raw_id not in self.pointers:
            oid = pygit2.Oid(raw=raw_id)
            size = self._size(oid)
            ptr = None
            if size < POINTER_MAX:
                ptr = parse_pointer(self._raw(oid))
            self.pointers[raw_id] = ptr
        return self.pointers[raw_id]

    def _visit(self, tree_raw_id: bytes) -> None:
        """Take the root `.gitattributes` of the commit about to be visited (for --fixup)."""
        if not self.fixup:
            return
        entry = next((e for e in self._tree(tree_raw_id) if e[1] == ATTRIBUTES and e[0] in BLOB_MODES), None)
        attr_id = entry[2] if entry is not None else b""
        if attr_id != self._attr_id:
            self._attr_id = attr_id
            self._attr_text = self._raw(attr_id).decode("utf-8", "surrogateescape") if attr_id else ""

    def _is_raw_checkpoint(self, raw_id: bytes) -> bool:
        """A blob at a tracked path that is neither a manifest nor a pointer nor empty (fixup)."""
        if raw_id not in self._is_raw:
            _, size = self.odb.read_header(pygit2.Oid(raw=raw_id))
            self._is_raw[raw_id] = (
                size > 0
                and self._pointer(raw_id) is None
                and not self._is_manifest_blob(raw_id)
                and not looks_like_manifest(self._raw(raw_id)[:4096])
            )
        return self._is_raw[raw_id]

    def commits(self, tips: list[pygit2.Oid]) -> list[pygit2.Oid]:
        """Every commit reachable from tips, parents before children."""
        order: list[pygit2.Oid] = []
        done: set[pygit2.Oid] = set()
        for tip in tips:
            stack: list[tuple[pygit2.Oid, bool]] = [(tip, False)]
            while stack:
                cid, expanded = stack.pop()
                if cid in done:
                    continue
                if expanded:
                    done.add(cid)
                    order.append(cid)
                    continue
                stack.append((cid, True))
                for p in reversed(self._parent_ids(cid)):
                    if p not in done:
                        stack.append((p, False))
        return order

    def _parent_ids(self, cid: pygit2.Oid) -> list[pygit2.Oid]:
        commit = self.git.get(cid)
        if not isinstance(commit, pygit2.Commit):
            return []
        # a shallow clone's boundary: parents that are not here stay as they are
        return [p for p in commit.parent_ids if self.odb.exists(p)]

    def attribute_texts(self, commits: list[pygit2.Oid]) -> Iterator[str]:
        """The root `.gitattributes` of each commit (each distinct one once)."""
        seen: set[pygit2.Oid] = set()
        for cid in commits:
            tree = self.git[cid].peel(pygit2.Commit).tree
            if ".gitattributes" in tree:
                blob_id = tree[".gitattributes"].id
                if blob_id not in seen:
                    seen.add(blob_id)
                    yield self._raw(blob_id).decode("utf-8", errors="replace")

    # -- pass 1: which LFS objects are needed

    def scan(self, commits: list[pygit2.Oid]) -> dict[str, _Where]:
        """The LFS objects of every pointer at a migrated path, with where one was first seen
        (with --fixup, the raw checkpoints to convert go to `raw_needed`)."""
        found: dict[str, _Where] = {}
        seen: set[tuple[bytes, str, bytes]] = set()

        def walk(raw_id: bytes, prefix: str, commit: str) -> None:
            if (raw_id, prefix, self._attr_id) in seen:
                return
            seen.add((raw_id, prefix, self._attr_id))
            for mode, name, child in self._tree(raw_id):
                path = prefix + name.decode("utf-8", "surrogateescape")
                if mode == TREE_MODE:
                    walk(child, path + "/", commit)
                elif mode in BLOB_MODES and self._matches(path):
                    ptr = self._pointer(child)
                    if ptr is None:
                        if self.fixup and child not in self.raw_needed and self._is_raw_checkpoint(child):
                            _, size = self.odb.read_header(pygit2.Oid(raw=child))
                            self.raw_needed[child] = _Where(size, path, commit)
                        continue
                    if ptr.extensions:
                        raise MigrateError(
                            f"{path} (commit {commit}) is a git-lfs pointer written through a git-lfs "
                            "extension; migrate does not support extensions"
                        )
                    found.setdefault(ptr.oid, _Where(ptr.size, path, commit))

        for cid in commits:
            tree = self.git[cid].peel(pygit2.Commit).tree_id.raw
            self._visit(tree)
            walk(tree, "", str(cid)[:12])
        return found

    # -- pass 2: the rewrite

    def rewrite(self, commits: list[pygit2.Oid], objects: int = 0) -> None:
        """Rewrite commits (parents first); `objects`: how many LFS objects to convert (progress)."""
        self._total_objects = objects
        total = len(commits)
        progress = Progress("Rewriting commits", unit="commits", total=total, show_bytes=False, delay=1.0)
        say = self.say

        def said(msg: str) -> None:  # a line of its own, the progress line redrawn below it
            progress.clear()
            say(msg)

        self.say = said
        try:
            for i, cid in enumerate(commits, 1):
                self.commit_map[cid] = self._rewrite_commit(cid)
                progress.step()
                if not progress.enabled and total >= 20 and (i % 100 == 0 or i == total):
                    say(f"rewrote {i}/{total} commits")
        finally:
            self.say = say
        progress.finish()

    def _rewrite_commit(self, cid: pygit2.Oid) -> pygit2.Oid:
        commit = self.git[cid].peel(pygit2.Commit)
        parents = self._parent_ids(cid)
        self._parents = [self.files.get(p, {}) for p in parents]
        self._commit = str(cid)[:12]
        self._visit(commit.tree_id.raw)
        new_tree, files = self._rewrite_tree(commit.tree_id.raw, "")
        self.files[cid] = files
        fields, body = split_headers(self._raw(cid))
        out: list[bytes] = []
        for f in fields:
            if f.startswith(b"tree "):
                out.append(b"tree " + str(pygit2.Oid(raw=new_tree)).encode())
            elif f.startswith(b"parent "):
                old = pygit2.Oid(hex=f[7:].decode())
                out.append(b"parent " + str(self.commit_map.get(old, old)).encode())
            else:
                out.append(f)
        if new_tree == commit.tree_id.raw and out == fields:
            return cid  # nothing changed: the commit (and its signature) stays
        out = [f for f in out if f.split(b" ", 1)[0] not in SIGNATURE_HEADERS]
        return self.odb.write(pygit2.GIT_OBJECT_COMMIT, b"\n".join(out) + body)

    def _rewrite_tree(self, raw_id: bytes, prefix: str) -> tuple[bytes, dict[str, pygit2.Oid]]:
        """The rewritten tree and the manifests at migrated paths in it. A tree rewrites the same
        way wherever it appears at the same place (a pointer's manifest is cached by LFS oid)."""
        key = (raw_id, prefix, self._attr_id)
        cached = self._trees.get(key)
        if cached is not None:
            return cached
        entries = self._tree(raw_id)
        new_entries: list[TreeEntry] = []
        files: dict[str, pygit2.Oid] = {}
        attributes: TreeEntry | None = None
        for entry in entries:
            mode, name, child = entry
            path = prefix + name.decode("utf-8", "surrogateescape")
            if mode == TREE_MODE:
                sub, sub_files = self._rewrite_tree(child, path + "/")
                files.update(sub_files)
                new_entries.append((mode, name, sub))
                continue
            if prefix == "" and name == ATTRIBUTES and mode in BLOB_MODES:
                attributes = entry
            elif mode in BLOB_MODES and self._matches(path):
                ptr = self._pointer(child)
                if ptr is not None:
                    blob = self._convert(ptr, path)
                    files[path] = blob
                    new_entries.append((mode, name, blob.raw))
                    continue
                if self._is_manifest_blob(child):
                    files[path] = pygit2.Oid(raw=child)
                elif self.fixup and self._is_raw_checkpoint(child):
                    blob = self._convert_raw(child, path)
                    files[path] = blob
                    new_entries.append((mode, name, blob.raw))
                    continue
            new_entries.append(entry)
        if prefix == "":
            converted = [p for p, b in files.items() if b in self._produced]
            new_entries = self._rewrite_attributes(new_entries, attributes, converted)
        new_id = raw_id
        if new_entries != entries:
            data = b"".join(m + b" " + n + b"\0" + i for m, n, i in new_entries)
            new_id = self.odb.write(pygit2.GIT_OBJECT_TREE, data).raw
        result = (new_id, files)
        self._trees[key] = result
        return result

    def _is_manifest_blob(self, raw_id: bytes) -> bool:
        """Whether a blob already is a manifest (a path migrated before, or tracked by us)."""
        if raw_id not in self._is_manifest:
            oid = pygit2.Oid(raw=raw_id)
            size = self._size(oid)
            self._is_manifest[raw_id] = size < (16 << 20) and is_manifest(self._raw(oid)[:64])
        return self._is_manifest[raw_id]

    def _rewrite_attributes(
        self, entries: list[TreeEntry], attributes: TreeEntry | None, converted: list[str]
    ) -> list[TreeEntry]:
        """The root `.gitattributes`: our attributes for every migrated pattern that git-lfs
        tracked here or that a converted path matches, and a checked result (every converted path
        gets our filter, whatever other lines say)."""
        text = self._raw(attributes[2]).decode("utf-8", "surrogateescape") if attributes else ""
        lfs = set(lfs_patterns(text))
        wanted = [p for p in self.patterns if p in lfs or any(pattern_matches(p, c) for c in converted)]
        if not wanted:
            return entries
        new_text = retrack(text, wanted)
        for path in converted:
            if effective_filter(new_text, path) != DRIVER:
                # a later line (e.g. a broader git-lfs pattern) overrides ours: repeat ours last
                pat = self._matches(path)
                assert pat is not None
                new_text += " ".join([pat, *OUR_ATTRS]) + "\n"
        if new_text == text:
            return entries
        blob = self.odb.write(pygit2.GIT_OBJECT_BLOB, new_text.encode("utf-8", "surrogateescape")).raw
        if attributes is not None:
            return [(m, n, blob) if (m, n, i) == attributes else (m, n, i) for m, n, i in entries]
        new_entry = (b"100644", ATTRIBUTES, blob)
        return sorted([*entries, new_entry], key=tree_key)

    def _previous(self, path: str) -> Manifest | None:
        for files in self._parents:
            blob = files.get(path)
            if blob is not None:
                return self._manifest(blob)
        return None

    def _manifest(self, blob: pygit2.Oid) -> Manifest | None:
        if blob not in self.manifests:
            try:
                self.manifests[blob] = Manifest.from_bytes(self._raw(blob))
            except ManifestError:
                return None
        return self.manifests[blob]

    def _convert(self, ptr: LfsPointer, path: str) -> pygit2.Oid:
        """The manifest blob of an LFS object (cleaned once, whatever the path or commit)."""
        done = self.by_lfs.get(ptr.oid)
        if done is not None:
            return done
        store = store_of(self.repo)
        n, total = len(self.by_lfs) + 1, self._total_objects or "?"
        self.say(f"converting {n}/{total}: {path} ({human_size(ptr.size)}, commit {self._commit})")
        try:
            f = open(store.path(ptr.oid), "rb")
        except FileNotFoundError:
            raise ObjectMissingError(
                f"{path} (commit {self._commit}): LFS object {ptr.oid} is not in {store.objects}"
            ) from None
        with f:
            reader = HashingSource(f)
            data = self.engine.clean(ByteReader(reader), self._previous(path), path)
            reader.drain()
        if reader.size != ptr.size or reader.sha.hexdigest() != ptr.oid:
            raise MigrateError(
                f"{path} (commit {self._commit}): LFS object {ptr.oid} is corrupt: it holds "
                f"{reader.size} bytes hashing to {reader.sha.hexdigest()}, the pointer says {ptr.size} "
                f"bytes; restore it (git lfs fetch) and run migrate again"
            )
        blob = self.odb.write(pygit2.GIT_OBJECT_BLOB, data)
        self.manifests[blob] = Manifest.from_bytes(data)
        self.by_lfs[ptr.oid] = blob
        self._produced.add(blob)
        return blob

    def _convert_raw(self, raw_id: bytes, path: str) -> pygit2.Oid:
        """The manifest blob of a raw checkpoint blob (--fixup; cleaned once, as `git add` would
        have cleaned the file)."""
        done = self.by_blob.get(raw_id)
        if done is not None:
            return done
        data = self._raw(raw_id)
        n, total = len(self.by_lfs) + len(self.by_blob) + 1, self._total_objects or "?"
        self.say(f"converting {n}/{total}: {path} ({human_size(len(data))}, commit {self._commit})")
        manifest = self.engine.clean(ByteReader(io.BytesIO(data)), self._previous(path), path)
        blob = self.odb.write(pygit2.GIT_OBJECT_BLOB, manifest)
        self.manifests[blob] = Manifest.from_bytes(manifest)
        self.by_blob[raw_id] = blob
        self._produced.add(blob)
        return blob

    def rewrite_tag(self, tag_id: pygit2.Oid) -> pygit2.Oid:
        """An annotated tag pointing at the rewritten commit (or tag); itself if nothing changed."""
        if tag_id in self.tag_map:
            return self.tag_map[tag_id]
        fields, body = split_headers(self._raw(tag_id))
        target = next(pygit2.Oid(hex=f[7:].decode()) for f in fields if f.startswith(b"object "))
        kind = next((f[5:] for f in fields if f.startswith(b"type ")), b"commit")
        new = target
        if kind == b"commit":
            new = self.commit_map.get(target, target)
        elif kind == b"tag":
            new = self.rewrite_tag(target)
        result = tag_id
        if new != target:
            out = [
                b"object " + str(new).encode() if f.startswith(b"object ") else f
                for f in fields
                if f.split(b" ", 1)[0] not in SIGNATURE_HEADERS
            ]
            result = self.odb.write(pygit2.GIT_OBJECT_TAG, b"\n".join(out) + strip_signature(body))
        self.tag_map[tag_id] = result
        return result

    def stored_bytes(self) -> int:
        """Bytes of the distinct objects the new manifests reference."""
        sizes: dict[str, int] = {}
        for blob in [*self.by_lfs.values(), *self.by_blob.values()]:
            m = self.manifests[blob]
            for _, ref in m.objects():
                sizes[ref.oid] = ref.stored
        return sum(sizes.values())


# ------------------------------------------------------------------ the command


def _git(repo: Repo, *args: str, input: str | None = None) -> str:
    return repo.run_git(*args, input=input, error=MigrateError)


def select_refs(repo: Repo, refs: list[str], everything: bool) -> list[str]:
    """Full names of the refs to rewrite: all branches and tags, the named ones, or HEAD's branch."""
    names = repo.git.listall_references()
    if everything:
        if refs:
            raise click.UsageError("give either --everything or REFS, not both")
        return sorted(
            n for n in names if n.startswith(("refs/heads/", "refs/tags/")) and not _symbolic(repo, n)
        )
    if refs:
        out: list[str] = []
        for r in refs:
            for full in (r, f"refs/heads/{r}", f"refs/tags/{r}"):
                if full.startswith("refs/") and full in names:
                    if _symbolic(repo, full):
                        full = repo.git.references[full].resolve().name
                    out.append(full)
                    break
            else:
                raise MigrateError(f"{r!r} is not a branch or tag of this repository")
        return list(dict.fromkeys(out))
    if repo.git.head_is_unborn:
        raise MigrateError("the current branch has no commits yet: nothing to migrate")
    if repo.git.head_is_detached:
        raise MigrateError("HEAD is detached: name the branches to migrate, or use --everything")
    return [repo.git.head.name]


def _symbolic(repo: Repo, name: str) -> bool:
    return repo.git.references[name].type == pygit2.enums.ReferenceType.SYMBOLIC


def _target(repo: Repo, name: str) -> pygit2.Oid:
    """The object a ref points to (following symbolic refs, HEAD included)."""
    target = repo.git.lookup_reference(name).resolve().target
    assert isinstance(target, pygit2.Oid)
    return target


def _peel(repo: Repo, oid: pygit2.Oid) -> pygit2.Oid | None:
    obj = repo.git.get(oid)
    while isinstance(obj, pygit2.Tag):
        obj = repo.git.get(obj.target)
    return obj.id if isinstance(obj, pygit2.Commit) else None


def _ensure_objects(repo: Repo, needed: dict[str, _Where], remote: str | None, say: Say) -> None:
    """Every LFS object needed in the local store: download the missing ones, or fail clearly."""
    from git_theta_like.lfs import sync

    missing = [(oid, w) for oid, w in needed.items() if not store_of(repo).has(oid)]
    if not missing:
        return
    name = remote or sync.default_remote(repo)
    listed = "; ".join(f"{oid} ({w.path} in commit {w.commit})" for oid, w in missing[:5])
    more = f"; and {len(missing) - 5} more" if len(missing) > 5 else ""
    if repo.config_get(f"remote.{name}.url") is None and repo.config_get("lfs.url") is None:
        raise MigrateError(
            f"{len(missing)} LFS object(s) are not in {store_of(repo).objects} and there is no remote "
            f"{name!r} to download them from: {listed}{more}. Fetch them (git lfs fetch --all) or "
            "name a remote with --remote; nothing was changed"
        )
    from git_theta_like.lfs.transfer import RemoteStore

    say(f"downloading {len(missing)} LFS object(s) from {name}")
    RemoteStore(repo, name).download([(oid, w.size) for oid, w in missing])


def _file_matches(path: Path, ptr: LfsPointer) -> bool:
    """Whether a working-tree file holds exactly the LFS object a pointer names."""
    try:
        with open(path, "rb") as f:
            reader = HashingSource(f)
            reader.drain()
    except OSError:
        return False
    return reader.size == ptr.size and reader.sha.hexdigest() == ptr.oid


def _check_clean(repo: Repo, fixup: bool = False) -> None:
    """Refuse a work tree with uncommitted changes. With --fixup, a checkpoint committed without
    the filter shows as modified (cleaning it now gives a manifest): that is not a change when
    the file still holds exactly the committed content (the raw blob, or a pointer's object)."""
    if repo.workdir is None:
        return
    status = _git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    changed = [e for e in status.split("\0") if e]
    if fixup and changed:
        from git_theta_like.gitio.scan import unconverted_files
        from git_theta_like.gitio.status import worktree_raw_id

        raw = {u.path: u for u in unconverted_files(repo) if u.committed}

        def unchanged(path: str) -> bool:
            u = raw.get(path)
            if u is None:
                return False
            if u.kind == "raw":
                return worktree_raw_id(repo, path) == u.blob
            ptr = parse_pointer(bytes(repo.git.odb.read(pygit2.Oid(hex=u.blob))[1]))
            assert repo.workdir is not None
            return ptr is not None and _file_matches(repo.workdir / path, ptr)

        changed = [e for e in changed if not (e[:3] == " M " and unchanged(e[3:]))]
    if changed:
        raise MigrateError(
            "the work tree has uncommitted changes; commit or stash them first (migrate resets "
            "the work tree to the rewritten HEAD)"
        )


def _ensure_installed(repo: Repo, say: Say) -> None:
    """Our filter must be configured before the work tree is checked out again."""
    if repo.config_get(f"filter.{DRIVER}.process"):
        return
    from git_theta_like.gitio import install

    install.write_config(repo.git.config)
    say(f"configured the {DRIVER} filter for this repository (git theta-like install)")
    for note in install.install_hooks(repo):
        say(note)


def migrate(
    repo: Repo,
    include: list[str],
    refs: list[str],
    everything: bool = False,
    remote: str | None = None,
    confirm: Callable[[str], bool] | None = None,
    say: Say = lambda msg: print(f"git-theta-like: {msg}", file=sys.stderr, flush=True),
    fixup: bool = False,
) -> MigrateResult:
    """Rewrite the history of the selected refs (see the module docstring). `confirm` is asked
    before anything is written; None means yes. `fixup`: convert what each commit's root
    `.gitattributes` already gives our filter but was committed without it (raw checkpoints,
    git-lfs pointers), like `git lfs migrate import --fixup`; it takes no `include`."""
    with store_of(repo).lock.shared():
        return _migrate(repo, include, refs, everything, remote, confirm, say, fixup)


def _migrate(
    repo: Repo,
    include: list[str],
    refs: list[str],
    everything: bool,
    remote: str | None,
    confirm: Callable[[str], bool] | None,
    say: Say,
    fixup: bool,
) -> MigrateResult:
    from git_theta_like.filters import engine_for

    if fixup and include:
        raise MigrateError(
            "--fixup converts the paths .gitattributes already gives filter=theta-like; it takes no --include"
        )
    names = select_refs(repo, refs, everything)
    _check_clean(repo, fixup)
    old_targets = {n: _target(repo, n) for n in names}
    tips = {n: _peel(repo, t) for n, t in old_targets.items()}
    for n, tip in tips.items():
        if tip is None:
            say(f"{n} does not point to a commit: left as it is")
    with engine_for(repo) as engine:
        patterns = list(include)
        m = Migrator(repo, patterns, engine, say, fixup)
        commits = m.commits([t for t in dict.fromkeys(tips.values()) if t is not None])
        if not patterns and not fixup:
            for text in m.attribute_texts(commits):
                patterns.extend(p for p in lfs_patterns(text) if looks_like_checkpoint(p))
            patterns[:] = list(dict.fromkeys(patterns))
            if not patterns:
                say(
                    "no git-lfs-tracked checkpoint patterns (filter=lfs on "
                    f"{', '.join('*' + e for e in CHECKPOINT_EXTENSIONS)}) in .gitattributes: nothing "
                    "to migrate (name other patterns with --include)"
                )
                return MigrateResult(patterns, names, commits=len(commits))
        result = MigrateResult(patterns, names, commits=len(commits))
        needed = m.scan(commits)
        if fixup and not needed and not m.raw_needed:
            say(
                "no raw checkpoints or git-lfs pointers at paths .gitattributes gives "
                "filter=theta-like: nothing to fix"
            )
            return result
        if not needed and not fixup:
            say(f"no git-lfs pointers at paths matching {' '.join(patterns)}: nothing to migrate")
            return result
        _ensure_objects(repo, needed, remote, say)
        what = (
            f"{len(m.raw_needed)} raw checkpoint(s) and {len(needed)} LFS object(s) at paths "
            ".gitattributes gives filter=theta-like"
            if fixup
            else f"{len(needed)} LFS object(s) matching {' '.join(patterns)}"
        )
        if confirm is not None and not confirm(
            f"Rewrite the history of {', '.join(names)} ({len(commits)} commits): "
            f"{what} become git-theta-like checkpoints. Commit ids change; the originals are kept "
            f"under {BACKUP_PREFIX}. Go on?"
        ):
            raise MigrateError("not confirmed: nothing was changed")
        m.rewrite(commits, len(needed) + len(m.raw_needed))

    new_targets: dict[str, pygit2.Oid] = {}
    for n, old in old_targets.items():
        obj = repo.git.get(old)
        new = m.rewrite_tag(old) if isinstance(obj, pygit2.Tag) else m.commit_map.get(old, old)
        if new != old:
            new_targets[n] = new
    for n in repo.git.listall_references():
        if n in old_targets or not n.startswith(("refs/heads/", "refs/tags/")) or _symbolic(repo, n):
            continue
        tip = _peel(repo, _target(repo, n))
        if tip is not None and m.commit_map.get(tip, tip) != tip:
            say(f"note: {n} still points into the original history (name it, or use --everything)")
    head_detached = not repo.git.head_is_unborn and repo.git.head_is_detached
    old_head = None if repo.git.head_is_unborn else _target(repo, "HEAD")
    if (
        everything
        and head_detached
        and old_head is not None
        and m.commit_map.get(old_head, old_head) != old_head
    ):
        new_targets["HEAD"] = m.commit_map[old_head]
        old_targets["HEAD"] = old_head
    for n in new_targets:
        if n != "HEAD" and (BACKUP_PREFIX + n) in repo.git.references:
            raise MigrateError(
                f"a backup from an earlier migrate exists ({BACKUP_PREFIX + n}); delete it first "
                f"(git update-ref -d {BACKUP_PREFIX + n}); nothing was changed"
            )
    if new_targets:
        lines = []
        for n, new in new_targets.items():
            old = old_targets[n]
            if n == "HEAD":
                lines.append("option no-deref")
            lines.append(f"update {n} {new} {old}")
            lines.append(f"update {BACKUP_PREFIX}{n} {old} {ZERO}")
        _git(repo, "update-ref", "-m", "theta-like migrate", "--stdin", input="\n".join(lines) + "\n")
        result.updated = [(n, str(old_targets[n]), str(new)) for n, new in new_targets.items()]

    result.rewritten = sum(1 for old, new in m.commit_map.items() if old != new)
    result.converted = len(m.by_lfs)
    result.raw_converted = len(m.by_blob)
    result.bytes_before = sum(needed[oid].size for oid in m.by_lfs) + sum(
        m.raw_needed[b].size for b in m.by_blob if b in m.raw_needed
    )
    result.bytes_after = m.stored_bytes()
    if repo.workdir is None or not new_targets:
        return result
    _ensure_installed(repo, say)  # later checkouts of the migrated refs need our filter too
    new_head = None if repo.git.head_is_unborn else _target(repo, "HEAD")
    if new_head is not None and new_head != old_head:
        try:
            _git(repo, "reset", "--hard", "-q")
        except MigrateError as e:
            raise MigrateError(
                f"the refs were migrated (originals under {BACKUP_PREFIX}) but the work tree could "
                f"not be reset to the new HEAD: {e}; fix that and run `git reset --hard`"
            ) from None
        result.reset = True
    return result


def summary(r: MigrateResult) -> list[str]:
    """What a migration did, for people (nothing when there was nothing to migrate)."""
    if not r.converted and not r.raw_converted and not r.updated:
        return []
    ratio = f" ({r.bytes_after / r.bytes_before:.2f}x)" if r.bytes_before else ""
    raw = f", {r.raw_converted} raw checkpoints converted" if r.raw_converted else ""
    before = "LFS objects"
    if r.raw_converted:
        before = "LFS objects and raw Git blobs" if r.converted else "raw Git blobs"
    lines = [
        f"patterns migrated: {' '.join(r.patterns) or 'those .gitattributes gives filter=theta-like'}",
        f"{r.rewritten} of {r.commits} commits rewritten, {r.converted} LFS pointers converted{raw}",
        f"checkpoint storage: {human_size(r.bytes_before)} in {before} -> "
        f"{human_size(r.bytes_after)} in git-theta-like objects{ratio}",
    ]
    for ref, old, new in r.updated:
        lines.append(f"{ref}: {old[:12]} -> {new[:12]} (was kept as {BACKUP_PREFIX}{ref})")
    if r.updated:
        lines.append(
            "push the rewritten refs with --force (collaborators must re-clone); see docs/migrate.md"
        )
    if r.reset:
        lines.append("work tree reset to the rewritten HEAD")
    return lines
