"""git-lfs pointer files (spec v1): `version https://git-lfs.github.com/spec/v1`, `oid
sha256:<hex>`, `size <n>`, each on a line, keys sorted, smaller than 1024 bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass

from git_theta_like.manifest import parse_count

LFS_VERSION = b"version https://git-lfs.github.com/spec/v1"


POINTER_MAX = 1024  # git-lfs pointers are smaller than this (spec)


@dataclass(frozen=True)
class LfsPointer:
    oid: str
    size: int
    extensions: bool = False  # pointers written through git-lfs extensions (not supported)


def format_pointer(oid: str, size: int) -> bytes:
    """The pointer git-lfs writes for an object (spec v1), byte for byte as `git lfs clean` does."""
    return LFS_VERSION + f"\noid sha256:{oid}\nsize {size}\n".encode()


_OID = re.compile(r"sha256:([0-9a-f]{64})")


def parse_pointer(data: bytes) -> LfsPointer | None:
    """The git-lfs pointer `data` holds (spec v1), or None when it is not one."""
    if len(data) >= POINTER_MAX or not data.startswith(LFS_VERSION):
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n"):
        if not line:
            continue
        key, sep, value = line.partition(" ")
        if not sep or key in fields:
            return None
        fields[key] = value
    oid = _OID.fullmatch(fields.get("oid", ""))
    size = parse_count(fields.get("size", ""))
    if oid is None or size is None:
        return None
    return LfsPointer(oid.group(1), size, any(k.startswith("ext-") for k in fields))
