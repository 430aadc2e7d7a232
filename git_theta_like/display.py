"""How numbers and names are shown to people: sizes, counts, percentages. Bottom layer: imports
nothing of the package."""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls, line/paragraph separators, bidirectional overrides and isolates,
# and lone surrogates (undecodable bytes): what can move the cursor, recolour, reorder or break
# a line of terminal output.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """text with every control character escaped (`\\x1b`, `\\n`-as-`\\x0a`, `\\u202e`), as git
    quotes paths: a tensor name or path from a repository cannot forge or colour output lines.
    Everything else (other Unicode included) is kept; JSON output does not need this."""
    return _UNPRINTABLE.sub(_escape, text)


# rows of a Markdown table meant for a PR comment (diffs, merge previews): a GitHub comment holds
# 65536 characters; the JSON output has every tensor
MARKDOWN_MAX_ROWS = 200


def human_size(n: float) -> str:
    """1536 -> `1.5 KiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def counted(n: int, noun: str) -> str:
    """(1, "tensor") -> `1 tensor`, (3, "tensor") -> `3 tensors`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def human_count(n: float) -> str:
    """1234567 -> 1.23M (parameter counts)."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))
