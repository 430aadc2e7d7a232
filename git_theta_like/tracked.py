"""Tracked checkpoints of a repository: which index entries hold manifests, and their sizes."""

from __future__ import annotations

from dataclasses import dataclass

from git_theta_like.errors import ManifestError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest, is_manifest


@dataclass
class TrackedFile:
    path: str
    manifest: Manifest | None
    error: str | None = None


def tracked_files(repo: Repo, rev: str | None = None) -> list[TrackedFile]:
    """Files whose staged content (or content at rev) is a manifest, sorted by path."""
    out = []
    if rev is None:
        index = repo.git.index
        index.read(False)
        entries = [(e.path, e.id) for e in index]
    else:
        tree = repo.git.revparse_single(rev).peel(pygit2_commit()).tree
        entries = [(p, oid) for p, oid in _walk(tree, "")]
    for path, oid in sorted(entries):
        blob = repo.git.get(oid)
        data = getattr(blob, "data", b"")
        if not is_manifest(data):
            continue
        try:
            out.append(TrackedFile(path, Manifest.from_bytes(data)))
        except ManifestError as e:
            out.append(TrackedFile(path, None, str(e)))
    return out


def pygit2_commit() -> type:
    import pygit2

    return pygit2.Commit


def _walk(tree, prefix: str):  # type: ignore[no-untyped-def]
    import pygit2

    for entry in tree:
        path = f"{prefix}{entry.name}"
        if entry.type_str == "tree":
            yield from _walk(entry, path + "/")
        elif entry.type_str == "blob" and entry.filemode != pygit2.GIT_FILEMODE_LINK:
            yield path, entry.id


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def load_manifest(repo: Repo, path: str, rev: str | None = None) -> Manifest:
    """The manifest of path, staged (rev None) or at rev; a clear error when there is none."""
    from git_theta_like.errors import ThetaLikeError

    blob = repo.index_blob(path) if rev is None else repo.rev_blob(rev, path)
    where = "in the index" if rev is None else f"at {rev}"
    if blob is None:
        raise ThetaLikeError(f"{path} does not exist {where}")
    if not is_manifest(blob):
        raise ThetaLikeError(f"{path} {where} is not a tracked checkpoint (no manifest)")
    return Manifest.from_bytes(blob)


def describe(m: Manifest, path: str) -> str:
    """A per-tensor table: dtype, shape, codec, stored bytes, delta depth."""
    from git_theta_like.filters import parent_depth

    lines = [
        f"{path}: {m.format}, {len(m.tensors)} tensors, {human_size(m.size)}, "
        f"stored {human_size(m.stored_size)} ({m.stored_size / max(1, m.size):.3f}x)",
        f"  {'codec':<8} {'stored':>10} {'ratio':>6} {'depth':>5}  {'dtype':<6} {'shape':<16} name",
        f"  {m.skeleton.codec:<8} {human_size(m.skeleton.stored):>10} "
        f"{m.skeleton.stored / max(1, m.skeleton_length):>6.3f} {0:>5}  {'':<6} {'':<16} (skeleton)",
    ]
    merged: dict[str, int] = {}
    for t in m.tensors:
        shape = "[" + ",".join(map(str, t.shape)) + "]"
        recipe = merge_recipe(t.obj.extra)
        if recipe:
            name = recipe.split(" ", 1)[0]
            merged[name] = merged.get(name, 0) + 1
        lines.append(
            f"  {t.obj.codec:<8} {human_size(t.obj.stored):>10} {t.obj.stored / max(1, t.length):>6.3f} "
            f"{parent_depth(t.obj):>5}  {t.dtype:<6} {shape:<16} {t.name}"
            + (f"  [merged: {recipe}]" if recipe else "")
        )
    if merged:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(merged.items()))
        lines.insert(1, f"  merge recipe: {sum(merged.values())} tensors merged ({counts})")
    return "\n".join(lines)


def merge_recipe(extra: tuple[tuple[str, str], ...]) -> str | None:
    """`ties density=0.2 lambda=1.0` from a tensor line's `merge=` / `merge-params=` fields (the
    merge driver records them on the tensors a strategy chose), else None."""
    fields = dict(extra)
    if "merge" not in fields:
        return None
    args = " ".join(p.replace(":", "=", 1) for p in fields.get("merge-params", "").split(",") if p)
    return f"{fields['merge']} {args}".strip()
