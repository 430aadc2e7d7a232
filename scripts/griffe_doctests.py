"""A griffe extension for the documentation site (mkdocs.yml, mkdocstrings `extensions`): doctest
blocks in docstrings become Python console code blocks.

A docstring example written the Python way (a line starting with `>>>`, continuation lines with
`...`, output up to the next blank line; reStructuredText's "doctest block") would otherwise reach
Markdown as text, where each `>` opens a blockquote: three nested quotes instead of code. Doctest
lines already inside a ``` fence are left alone.
"""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """`text` with each doctest block put in a ```pycon fence (at the block's indentation)."""
    out: list[str] = []
    in_fence = in_doctest = False
    indent = ""
    for line in text.split("\n"):
        stripped = line.lstrip()
        if in_doctest and not stripped:
            out.append(f"{indent}```")
            in_doctest = False
        if stripped.startswith(("```", "~~~")) and not in_doctest:
            in_fence = not in_fence
        elif not in_fence and not in_doctest and (stripped == ">>>" or stripped.startswith(">>> ")):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            in_doctest = True
        out.append(line)
    if in_doctest:
        out.append(f"{indent}```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Rewrites every object's docstring with `fence_doctests` as griffe loads it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
