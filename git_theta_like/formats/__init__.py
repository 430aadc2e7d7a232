"""Checkpoint formats. Each splits a file into skeleton + tensor regions, exactly.

`detect(head)` picks the parser from the file's first bytes (never from its name, so a renamed
file still splits); a file no parser recognises is stored whole as one object.
"""

from __future__ import annotations

from collections.abc import Iterator

from git_theta_like.errors import FormatError, TruncatedError
from git_theta_like.formats.base import (
    ByteReader,
    Event,
    FormatParser,
    HashingSource,
    Skeleton,
    Tensor,
    TensorInfo,
)

SNIFF_BYTES = 64

_registry: dict[str, FormatParser] | None = None


def registry() -> dict[str, FormatParser]:
    """The one registry of formats: name -> parser, tried in this order by detect(). The parsers
    load when first asked for: a filter that only smudges never does (some 16 ms of its
    start-up)."""
    global _registry
    if _registry is None:
        from git_theta_like.formats.gguf import GgufFormat
        from git_theta_like.formats.pytorch import PyTorchZipFormat
        from git_theta_like.formats.safetensors import SafetensorsFormat

        _registry = {p.name: p for p in (SafetensorsFormat(), PyTorchZipFormat(), GgufFormat())}
    return _registry


def detect(head: bytes) -> FormatParser | None:
    """The parser for a file starting with `head` (its first SNIFF_BYTES bytes), if any."""
    for parser in registry().values():
        if parser.sniff(head):
            return parser
    return None


def split(parser: FormatParser, reader: ByteReader) -> Iterator[Event]:
    """parser.split(reader), with a hostile file's exhaustion of the interpreter (a header
    nested too deeply for json: RecursionError; a claim this machine cannot hold: MemoryError)
    raised as FormatError like any other file the parser refuses, so it is stored whole."""
    try:
        yield from parser.split(reader)
    except RecursionError:
        raise FormatError(f"{parser.name} structure nests too deeply") from None
    except MemoryError:
        raise FormatError(f"{parser.name} file claims more memory than this machine has") from None


__all__ = [
    "ByteReader",
    "Event",
    "FormatParser",
    "HashingSource",
    "SNIFF_BYTES",
    "Skeleton",
    "Tensor",
    "TensorInfo",
    "TruncatedError",
    "detect",
    "registry",
    "split",
]
