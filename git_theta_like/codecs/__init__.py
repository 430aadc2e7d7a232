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

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from git_theta_like.codecs.chooser import DeltaOptions, encode, encode_delta
    from git_theta_like.codecs.container import Encoded, ObjectHeader, split_object
    from git_theta_like.codecs.registry import check_payload, decode, is_delta, iter_decode

# name -> the module that defines it. Loaded on first use (PEP 562), so that what only reads
# object headers (the store's writer, install, pre-push, ls-files) never imports numpy.
_EXPORTS = {
    "DeltaOptions": "chooser",
    "encode": "chooser",
    "encode_delta": "chooser",
    "Encoded": "container",
    "ObjectHeader": "container",
    "split_object": "container",
    "check_payload": "registry",
    "decode": "registry",
    "is_delta": "registry",
    "iter_decode": "registry",
}
__all__ = [
    "DeltaOptions",
    "Encoded",
    "ObjectHeader",
    "check_payload",
    "decode",
    "encode",
    "encode_delta",
    "is_delta",
    "iter_decode",
    "split_object",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
