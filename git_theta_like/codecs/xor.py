"""`xor`: the bits of new XOR base, then byte-grouped planes + zstd. After a fine-tune the high
bytes of most floats are unchanged, so their planes are almost all zero."""

from __future__ import annotations

import numpy as np

from git_theta_like.codecs.bits import pack_section, unpack_section
from git_theta_like.codecs.container import ObjectHeader

NAME = "xor"
IS_DELTA = True


def encode(new: np.ndarray, base: np.ndarray) -> bytearray:
    return pack_section(new, new.itemsize, lambda part: np.bitwise_xor(new[part], base[part]))


def decode_elements(payload: memoryview, base: np.ndarray) -> bytearray:
    diff, end = unpack_section(payload, 0, base.nbytes)
    if end != len(payload) or len(diff) != base.nbytes:
        raise ValueError("xor payload does not match its base")
    d = np.frombuffer(diff, dtype=base.dtype)
    np.bitwise_xor(d, base, out=d)
    return diff


def decode(header: ObjectHeader, payload: memoryview, base: np.ndarray) -> bytearray:
    return decode_elements(payload, base)
