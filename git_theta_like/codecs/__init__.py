"""Lossless tensor encodings, one module per codec: `planes` (byte-grouped + zstd), `raw`, and
the deltas `xor`, `sparse`, `lowrank`; `registry` names them all (decode dispatches through it),
`chooser` picks the smallest for each tensor, `container` is the self-describing object format
and `bits` what the codecs share. Sibling of formats/ (neither imports the other); imports only
the bottom layer.

`encode` turns a tensor's raw bytes into an object (header + payload parts); `encode_delta` does
the same against a base (the tensor's previous version); `decode` turns an object back into the
exact raw bytes.
"""

from __future__ import annotations

from git_theta_like.codecs.chooser import DeltaOptions, encode, encode_delta
from git_theta_like.codecs.container import Encoded, ObjectHeader, split_object
from git_theta_like.codecs.registry import check_payload, decode, is_delta, iter_decode

__all__ = [
    "DeltaOptions",
    "Encoded",
    "check_payload",
    "ObjectHeader",
    "decode",
    "encode",
    "encode_delta",
    "is_delta",
    "iter_decode",
    "split_object",
]
