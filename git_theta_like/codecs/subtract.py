"""`sub`: the arithmetic difference of new and base, as integers of the element's width
(wrapping), zigzag-coded (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...), then byte-grouped planes + zstd.

After a fine-tune a weight moves by a few units in the last place: its bits then differ by a
small integer, whose zigzag code has zero high bytes, where the XOR of the bits scatters a carry
over the low bytes (0x3F7FFFFF -> 0x3F800001 differs by 2, its XOR is 0x00FFFFFE). Measured on
real fine-tunes of all-MiniLM-L6-v2: 0.80x of the xor delta for a full fine-tune (fp32), 0.89x
in bf16, smaller in every case measured (docs/objects.md); the chooser still probes both. Exact
for every dtype: the arithmetic is modulo 2^bits.
"""

from __future__ import annotations

import numpy as np

from git_theta_like.codecs.bits import pack_section, unpack_section
from git_theta_like.codecs.container import ObjectHeader

NAME = "sub"
IS_DELTA = True

_SIGNED = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def encode(new: np.ndarray, base: np.ndarray) -> bytearray:
    """new and base: unsigned integer elements of one width (codecs.bits.elements)."""
    return pack_section(new, new.itemsize, lambda part: _zigzag(new[part], base[part]))


def _zigzag(new: np.ndarray, base: np.ndarray) -> np.ndarray:
    d: np.ndarray = np.subtract(new, base)  # modulo 2^bits
    s = d.view(_SIGNED[d.itemsize])
    sign = np.right_shift(s, 8 * d.itemsize - 1)  # 0 or -1
    np.left_shift(s, 1, out=s)
    np.bitwise_xor(s, sign, out=s)
    return d


BLOCK = 1 << 20  # elements decoded at a time (the sign's temporary stays small)


def decode_elements(payload: memoryview, base: np.ndarray) -> bytearray:
    raw, end = unpack_section(payload, 0, base.nbytes)
    if end != len(payload) or len(raw) != base.nbytes:
        raise ValueError("sub payload does not match its base")
    zz = np.frombuffer(raw, dtype=base.dtype)
    for s in range(0, zz.size, BLOCK):
        z, b = zz[s : s + BLOCK], base[s : s + BLOCK]
        sign = np.bitwise_and(z, 1)
        np.negative(sign, out=sign)  # 0 or all ones (modulo 2^bits)
        np.right_shift(z, 1, out=z)
        np.bitwise_xor(z, sign, out=z)
        np.add(z, b, out=z)
    return raw


def decode(header: ObjectHeader, payload: memoryview, base: np.ndarray) -> bytearray:
    return decode_elements(payload, base)
