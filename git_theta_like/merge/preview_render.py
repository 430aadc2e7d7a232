"""Merge previews as text (the terminal), JSON (docs/merge-preview-schema.json) and Markdown
(a pull-request comment): the output of `git theta-like diff A...B --merge-preview`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from git_theta_like.display import MARKDOWN_MAX_ROWS, human_count, printable
from git_theta_like.merge.preview import (
    ACTIONS,
    BOTH,
    CONFLICT,
    OURS,
    SAME,
    SCHEMA,
    SCHEMA_VERSION,
    THEIRS,
    FilePreview,
    Interference,
    MergePreview,
    TensorPreview,
    shape_str,
)
from git_theta_like.merge.strategies.base import format_value

MARKDOWN_MARKER = "<!-- git-theta-like merge preview -->"
_ORDER = {a: i for i, a in enumerate((CONFLICT, BOTH, OURS, THEIRS, SAME))}
_ACTION_TEXT = {
    OURS: "from ours",
    THEIRS: "from theirs",
    SAME: "changed alike",
    BOTH: "changed on both sides",
    CONFLICT: "conflict",
}


# ============================================================================ shared wording


def ordered(tensors: list[TensorPreview]) -> list[TensorPreview]:
    """Conflicts, then tensors changed on both sides (largest sign disagreement first), then
    the one-sided ones, in file order within a group."""

    def key(i_t: tuple[int, TensorPreview]) -> tuple[int, float, int]:
        i, t = i_t
        sd = t.stats.sign_disagreement if t.stats is not None else None
        return (_ORDER[t.action], -(sd if sd is not None else -1.0), i)

    return [t for _, t in sorted(enumerate(tensors), key=key)]


def pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if x == 0 or x >= 0.001 else f"{100 * x:.1e}%"


def cos(x: float | None) -> str:
    return "-" if x is None else f"{x:.6f}"


def strategy_text(t: TensorPreview) -> str:
    if t.strategy is None:
        return "-"
    params = " ".join(f"{k}={format_value(v)}" for k, v in t.params.items())
    picks = f" -> {t.result}" if t.result not in (None, "merged") else ""
    return f"{t.strategy} {params}".strip() + picks


def counts_text(f: FilePreview) -> str:
    parts = []
    for action in (BOTH, OURS, THEIRS, SAME, CONFLICT):
        n = f.count(action)
        if not n:
            continue
        text = f"{n} {_ACTION_TEXT[action]}"
        if action == BOTH:
            text += " (" + ", ".join(f"{k} {v}" for k, v in f.strategies().items()) + ")"
        elif action == CONFLICT:
            text = f"{n} conflict{'s' if n != 1 else ''}"
        parts.append(text)
    parts.append(f"{f.unchanged} unchanged")
    return ", ".join(parts)


def file_headline(f: FilePreview) -> str:
    """What the merge does with the file as a whole."""
    if f.action == OURS:
        return f"ours ({f.ours} in ours only) is kept"
    if f.action == THEIRS:
        return f"theirs ({f.theirs} in theirs only) is taken"
    if f.action == SAME:
        return f"{f.ours} alike on both sides"
    if f.action == CONFLICT:
        if f.reason:
            return f"conflict: {f.reason}"
        n = len(f.conflicts)
        return f"conflict: {n} tensor{'s' if n != 1 else ''} cannot be merged automatically"
    return "changed on both sides: merged per tensor"


def interference_text(st: Interference | None, what: str) -> str | None:
    if st is None:
        return None
    tensors = f"{st.tensors} tensor{'s' if st.tensors != 1 else ''}"
    return (
        f"{what} over {tensors} changed on both sides: sign disagreement {pct(st.sign_disagreement)} "
        f"of {human_count(st.changed_both)} entries both changed, cosine {cos(st.cosine)}"
    )


def total_text(r: MergePreview) -> str:
    c: Counter[str] = Counter()
    for f in r.files:
        for a in ACTIONS:
            c[a] += f.count(a)
    conflicted = sum(1 for f in r.files if f.action == CONFLICT)
    n = len(r.files)
    out = f"{n} checkpoint{'s' if n != 1 else ''} changed"
    out += f" ({conflicted} with conflicts)" if conflicted else ""
    out += ": " + ", ".join(f"{c[a]} {_ACTION_TEXT[a]}" for a in (BOTH, OURS, THEIRS, SAME))
    out += f", {c[CONFLICT]} conflict{'s' if c[CONFLICT] != 1 else ''}"
    return out + (" -- the merge would stop" if r.conflicts else " -- the merge would succeed")


# ============================================================================ text


def render_text(r: MergePreview, stat: bool = False) -> str:
    lines = [
        printable(
            f"git-theta-like merge preview: {r.theirs_label} into {r.ours_label} "
            f"(merge base {r.base_commit[:12]})"
        )
    ]
    for f in r.files:
        lines.append(printable(f"{f.path}: {file_headline(f)}"))
        if not f.tensors and f.reason is None:
            continue
        lines.append(f"  {counts_text(f)}")
        if stat:
            continue
        rows = [("action", "sign-dis.", "cosine", "strategy", "dtype shape", "tensor")]
        for t in ordered(f.tensors):
            st = t.stats
            rows.append(
                (
                    t.action,
                    pct(st.sign_disagreement) if st else "-",
                    cos(st.cosine) if st else "-",
                    strategy_text(t),
                    f"{t.dtype} {shape_str(t.shape)}",
                    t.name,
                )
            )
        cells = [[printable(x) for x in row] for row in rows]
        widths = [max(len(row[i]) for row in cells) for i in range(5)]
        for row in cells:
            padded = [
                c.rjust(w) if i in (1, 2) else c.ljust(w)
                for i, (c, w) in enumerate(zip(row[:5], widths, strict=True))
            ]
            lines.append("    " + "  ".join([*padded, row[5]]))
        if text := interference_text(f.interference(), "interference"):
            lines.append(f"  {text}")
        for t in f.tensors:
            if t.action == BOTH and t.stats is None and t.stats_note:
                lines.append(printable(f"  no statistics for {t.name}: {t.stats_note}"))
        for note in f.notes:
            lines.append(printable(f"  note: {note}"))
        if f.conflicts:
            lines.append(f"  the merge would stop: {len(f.conflicts)} cannot be merged automatically:")
            lines += [printable(f"    {c}") for c in f.conflicts]
    if not r.files:
        lines.append("no checkpoint changed on either side")
    else:
        lines.append(f"total: {total_text(r)}")
        if text := interference_text(r.interference(), "interference"):
            lines.append(f"total {text}")
    return "\n".join(lines) + "\n"


# ============================================================================ JSON


def _num(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def interference_json(st: Interference | None, tensors: bool = False) -> dict[str, Any] | None:
    if st is None:
        return None
    out: dict[str, Any] = {
        "numel": st.numel,
        "changed_ours": st.changed_ours,
        "changed_theirs": st.changed_theirs,
        "changed_both": st.changed_both,
        "disagree": st.disagree,
        "sign_disagreement": _num(st.sign_disagreement),
        "cosine": _num(st.cosine),
        "norm_ours": _num(st.norm_ours),
        "norm_theirs": _num(st.norm_theirs),
        "nonfinite": st.nonfinite,
    }
    if tensors:
        out = {"tensors": st.tensors, **out}
    return out


def tensor_json(t: TensorPreview) -> dict[str, Any]:
    return {
        "name": t.name,
        "action": t.action,
        "ours": t.ours,
        "theirs": t.theirs,
        "dtype": t.dtype,
        "shape": list(t.shape) if t.shape is not None else None,
        "strategy": None
        if t.strategy is None
        else {"name": t.strategy, "params": dict(t.params), "source": t.source, "result": t.result},
        "reason": t.reason,
        "stats": interference_json(t.stats),
        "stats_note": t.stats_note,
    }


def counts_json(files: list[FilePreview]) -> dict[str, int]:
    return {
        **{a: sum(f.count(a) for f in files) for a in ACTIONS},
        "unchanged": sum(f.unchanged for f in files),
    }


def strategies_json(files: list[FilePreview]) -> dict[str, int]:
    c: Counter[str] = Counter()
    for f in files:
        c.update(f.strategies())
    return dict(sorted(c.items()))


def file_json(f: FilePreview, stat: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": f.path,
        "action": f.action,
        "ours": f.ours,
        "theirs": f.theirs,
        "reason": f.reason,
        "conflicts": f.conflicts,
        "notes": f.notes,
        "stats_computed": f.stats_computed,
        "summary": {
            **counts_json([f]),
            "strategies": f.strategies(),
            "interference": interference_json(f.interference(), tensors=True),
        },
    }
    if not stat:
        out["tensors"] = [tensor_json(t) for t in f.tensors]
    return out


def to_json(r: MergePreview, stat: bool = False) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "ours": r.ours_label,
        "theirs": r.theirs_label,
        "ours_commit": r.ours_commit,
        "theirs_commit": r.theirs_commit,
        "base_commit": r.base_commit,
        "conflicts": r.conflicts,
        "stats_computed": r.stats_computed,
        "files": [file_json(f, stat) for f in r.files],
        "summary": {
            "files": len(r.files),
            "files_conflicted": sum(1 for f in r.files if f.action == CONFLICT),
            **counts_json(r.files),
            "strategies": strategies_json(r.files),
            "interference": interference_json(r.interference(), tensors=True),
        },
    }


def render_json(r: MergePreview, stat: bool = False) -> str:
    return json.dumps(to_json(r, stat), indent=2, allow_nan=False) + "\n"


# ============================================================================ Markdown


def _md(text: str) -> str:
    return printable(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return "`" + printable(text).replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(r: MergePreview, stat: bool = False) -> str:
    out = [
        MARKDOWN_MARKER,
        f"### Merge preview: {_code(r.theirs_label)} into {_code(r.ours_label)} "
        f"(merge base `{r.base_commit[:12]}`)",
        "",
    ]
    if not r.files:
        out.append("No checkpoint changed on either side.")
        return "\n".join(out) + "\n"
    rows_left = MARKDOWN_MAX_ROWS
    for f in r.files:
        out.append(f"#### {_code(f.path)}: {_md(file_headline(f))}")
        out.append("")
        if f.tensors:
            out.append(_md(counts_text(f)))
            out.append("")
        shown = [t for t in ordered(f.tensors) if t.action in (CONFLICT, BOTH)]
        if shown and not stat:
            out += [
                "| tensor | dtype shape | action | strategy | sign disagreement | cosine |",
                "|---|---|---|---|---:|---:|",
            ]
            for t in shown[:rows_left]:
                st = t.stats
                what = t.action if t.reason is None else f"conflict: {t.reason}"
                out.append(
                    f"| {_code(t.name)} | {_md(f'{t.dtype} {shape_str(t.shape)}')} | {_md(what)} "
                    f"| {_md(strategy_text(t))} | {pct(st.sign_disagreement) if st else '-'} "
                    f"| {cos(st.cosine) if st else '-'} |"
                )
            if len(shown) > rows_left:
                out.append(f"\n… and {len(shown) - rows_left} more (see `--format json`)")
            rows_left = max(0, rows_left - len(shown))
            out.append("")
        if text := interference_text(f.interference(), "Interference"):
            out += [_md(text), ""]
        if f.conflicts:
            out.append(f"**The merge would stop:** {len(f.conflicts)} cannot be merged automatically.")
            out.append("")
    out.append(f"**{_md(total_text(r))}**")
    if text := interference_text(r.interference(), "Interference"):
        out += ["", _md(text)]
    return "\n".join(out) + "\n"


RENDERERS: dict[str, Callable[[MergePreview, bool], str]] = {
    "text": render_text,
    "json": render_json,
    "markdown": render_markdown,
}
