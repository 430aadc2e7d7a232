"""`raw`: the bytes as they are, for tensors that no codec makes smaller."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.codecs.planes import CHUNK

NAME = "raw"
IS_DELTA = False


def max_raw(payload_len: int) -> int:
    """The most raw bytes a raw payload of payload_len bytes can decode to."""
    return payload_len


def decode(header: ObjectHeader, payload: memoryview, base: object = None) -> memoryview:
    if len(payload) != header.size:
        raise ValueError(f"raw payload has {len(payload)} bytes, expected {header.size}")
    return payload


def iter_decode(header: ObjectHeader, read: Callable[[int], bytes]) -> Iterator[bytes]:
    left = header.size
    while left:
        data = read(min(left, CHUNK))
        if not data:
            raise ValueError("payload ends early")
        left -= len(data)
        yield data
