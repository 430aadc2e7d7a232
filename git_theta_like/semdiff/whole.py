"""Versions of a tracked path that are not manifests yet are a version of the file, shown as a file
stored whole: a git-lfs pointer (the path was plain git-lfs before `git theta-like track`; the
pointer gives the file's size and SHA-256) and the empty blob (clean stores an empty file as the
empty blob). `diff` and `log` then say that such a file changed, rather than that a checkpoint was
added or deleted. Only for paths our filter tracks now, as the working tree's attributes say."""

from __future__ import annotations

import hashlib
from typing import Any

from git_theta_like.gitio.attributes import DRIVER
from git_theta_like.lfs.pointer import LFS_VERSION, parse_pointer
from git_theta_like.manifest import Manifest, ObjectRef
from git_theta_like.semdiff.model import WHOLE

LFS_CODEC = "git-lfs"  # the "codec" of a git-lfs object: the file's bytes as they are
EMPTY_CODEC = "empty"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def whole_version(data: bytes) -> Manifest | None:
    """The manifest of a file stored whole that data (a blob) stands for, when it is a git-lfs
    pointer or empty; None otherwise."""
    if not data:
        return Manifest(WHOLE, 0, 0, ObjectRef(EMPTY_SHA256, EMPTY_SHA256, 0, EMPTY_CODEC))
    p = parse_pointer(data)
    if p is None or p.extensions:
        return None
    return Manifest(WHOLE, p.size, p.size, ObjectRef(p.oid, p.oid, p.size, LFS_CODEC))


def tracked_by_filter(repo: Any, path: str) -> bool:
    """Whether the attributes give path our filter (unreadable attributes: no)."""
    try:
        return bool(repo.git.get_attr(path, "filter") == DRIVER)
    except Exception:  # noqa: BLE001 - attributes unreadable: treat as not ours
        return False


def tracked_version(repo: Any, path: str, data: bytes) -> Manifest | None:
    """whole_version(data) for a path our filter tracks (cheap for any other blob)."""
    if data and not data.startswith(LFS_VERSION):
        return None
    version = whole_version(data)
    if version is None or not tracked_by_filter(repo, path):
        return None
    return version


def is_lfs_version(m: Manifest | None) -> bool:
    return m is not None and m.format == WHOLE and m.skeleton.codec == LFS_CODEC


def note(old: Manifest | None, new: Manifest | None) -> str | None:
    """What a diff should say about sides that are git-lfs files."""
    if is_lfs_version(old) and is_lfs_version(new):
        return "both versions are git-lfs files (from before `git theta-like track`)"
    if is_lfs_version(old):
        return "the old version is a git-lfs file (from before `git theta-like track`)"
    if is_lfs_version(new):
        return "the new version is a git-lfs file"
    return None
