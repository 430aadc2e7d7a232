"""Renderers of semantic diffs and logs: text (people), JSON (CI; docs/diff-schema.json,
docs/log-schema.json) and Markdown (pull-request comments)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from git_theta_like.diff import (
    LOG_SCHEMA,
    SCHEMA,
    SCHEMA_VERSION,
    DiffResult,
    FileDiff,
    FileSide,
    LogEntry,
    TensorDiff,
    TensorSide,
    TensorStats,
    human_count,
)
from git_theta_like.tracked import human_size

MARKDOWN_MARKER = "<!-- git-theta-like diff -->"
MARKDOWN_MAX_ROWS = 200  # a GitHub comment holds 65536 characters; JSON has every tensor

GROUP_TITLES = {
    "modified": "modified",
    "reshaped": "shape or dtype changed",
    "renamed": "renamed",
    "moved": "moved between shards",
    "added": "added",
    "removed": "removed",
}


# ============================================================================ formatting


def sci(x: float | None) -> str:
    if x is None:
        return "-"
    if x == float("inf"):
        return "inf"
    return f"{x:.2e}"


def rel(st: TensorStats | None) -> str:
    if st is None:
        return "-"
    if st.relative_change is None:
        return "from 0" if st.l2_delta else "-"
    return sci(st.relative_change)


def cos(st: TensorStats | None) -> str:
    return f"{st.cosine:.6f}" if st is not None and st.cosine is not None else "-"


def pct(fraction: float) -> str:
    p = 100 * fraction
    if p == 0 or p >= 10:
        return f"{p:.1f}%"
    if p >= 0.01:
        return f"{p:.2f}%"
    return f"{p:.1e}%"


def shape_str(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def side_str(s: TensorSide) -> str:
    return f"{s.dtype} {shape_str(s.shape)}"


def type_col(e: TensorDiff) -> str:
    """dtype + shape, `old -> new` when they changed."""
    if e.old is not None and e.new is not None and (e.shape_changed or e.dtype_changed):
        return f"{side_str(e.old)} -> {side_str(e.new)}"
    side = e.new or e.old
    assert side is not None
    return side_str(side)


def name_col(e: TensorDiff) -> str:
    """The name (`old -> new` when renamed), and where a tensor of a sharded model moved to."""
    name = f"{e.old_name} -> {e.name}" if e.old_name else e.name
    return f"{name}  (moved {shard_move(e)})" if e.shard_moved else name


def shard_move(e: TensorDiff) -> str:
    """`old shard -> new shard` (sharded models)."""
    return f"{e.old_shard} -> {e.new_shard}"


def kind_col(e: TensorDiff) -> str:
    if e.kind is not None:
        return e.kind.label
    if e.status in ("modified", "renamed") and not e.content_changed:
        return "same content"
    return "-"


def file_headline(f: FileDiff) -> str:
    def side(s: FileSide | None) -> str:
        if s is None:
            return "(none)"
        if s.format == "opaque":
            return f"stored whole, {human_size(s.size)}"
        shards = f"{s.shards} shards, " if s.shards is not None else ""
        return (
            f"{s.format}, {shards}{s.tensors} tensors, {human_count(s.params)} params, {human_size(s.size)}"
        )

    if f.old is None:
        return f"new checkpoint: {side(f.new)}"
    if f.new is None:
        return f"deleted checkpoint: {side(f.old)}"
    if (f.old.format, f.old.shards, f.old.tensors, f.old.params, f.old.size) == (
        f.new.format,
        f.new.shards,
        f.new.tensors,
        f.new.params,
        f.new.size,
    ):
        return side(f.new)
    return f"{side(f.old)} -> {side(f.new)}"


def _shows_moved(f: FileDiff) -> bool:
    """A `moved` count is shown for sharded models (and wherever a tensor moved)."""
    return f.sharded or f.count("moved") > 0


def file_total(f: FileDiff) -> str:
    parts = [
        f"{f.count('modified')} modified",
        f"{f.count('reshaped')} reshaped",
        f"{f.count('renamed')} renamed",
        *([f"{f.count('moved')} moved"] if _shows_moved(f) else []),
        f"{f.count('added')} added",
        f"{f.count('removed')} removed",
        f"{f.unchanged} unchanged",
    ]
    if f.below_threshold:
        parts.append(f"{f.below_threshold} below threshold")
    out = ", ".join(parts)
    changed = f.params_changed
    if changed is not None and f.old is not None:
        out += f"; {human_count(changed)} of {human_count(f.old.params)} params changed"
        if f.old.params:
            out += f" ({pct(changed / f.old.params)})"
    l2 = f.l2_delta
    if l2 is not None:
        out += f"; ||Δ|| {sci(l2)}"
    out += f"; new objects {human_size(f.stored_bytes)}"
    return out


# ============================================================================ text


def _table(entries: list[TensorDiff], indent: str = "    ") -> list[str]:
    rows = [("rel.change", "changed", "||Δ||", "max|Δ|", "cosine", "kind", "dtype shape", "tensor")]
    for e in entries:
        st = e.stats
        rows.append(
            (
                rel(st),
                pct(st.fraction_changed) if st else "-",
                sci(st.l2_delta) if st else "-",
                sci(st.max_abs_delta) if st else "-",
                cos(st),
                kind_col(e),
                type_col(e),
                name_col(e),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i < 5 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=False))]
        out.append(indent + "  ".join(cells) + "  " + r[-1])
    return out


def render_file_text(f: FileDiff, stat: bool = False) -> list[str]:
    if stat:
        return [f" {f.path} | {file_total(f)}"]
    lines = [f"{f.path}: {file_headline(f)}"]
    if f.note:
        lines.append(f"  ({f.note})")
    if f.whole and f.old is not None and f.new is not None and f.header_changed:
        lines.append("  stored whole (not split into tensors): the file's content changed")
    groups: dict[str, list[TensorDiff]] = {}
    for e in f.tensors:
        if not e.below_threshold:
            groups.setdefault(e.group, []).append(e)
    for g in ("modified", "reshaped", "renamed"):
        es = groups.get(g)
        if es:
            what = ", biggest relative change first" if g == "modified" and f.stats_computed else ""
            lines.append(f"  {GROUP_TITLES[g]}: {len(es)}{what}")
            if f.stats_computed:
                lines += _table(es)
            else:
                lines += [f"    ~ {name_col(e)}  {type_col(e)}" for e in es]
    es = groups.get("moved")
    if es:
        lines.append(f"  {GROUP_TITLES['moved']}: {len(es)}")
        lines += [f"    > {e.name}  {type_col(e)}  {shard_move(e)}" for e in es]
    for g, sign in (("added", "+"), ("removed", "-")):
        es = groups.get(g)
        if es:
            lines.append(f"  {GROUP_TITLES[g]}: {len(es)}")
            for e in es:
                side = e.new or e.old
                assert side is not None
                lines.append(f"    {sign} {e.name}  {side_str(side)}  ({human_count(side.numel)} params)")
    if f.below_threshold:
        biggest = max(e.stats.relative_change or 0.0 for e in f.tensors if e.below_threshold and e.stats)
        lines.append(
            f"  below threshold (relative change < {f.threshold:g}): {f.below_threshold} tensors, "
            f"largest {sci(biggest)}; not listed"
        )
    structural = any(g in groups for g in ("reshaped", "renamed", "added", "removed"))
    if f.header_changed and not f.whole and f.old is not None and f.new is not None:
        if f.sharded:  # compared on their own (diff.diff_sharded): always worth saying
            lines.append("  header/metadata changed (the index's metadata or a shard's header)")
        elif not structural:
            lines.append("  header/metadata changed")
    lines.append(f"  total: {file_total(f)}")
    return lines


def grand_total(r: DiffResult) -> str:
    fs = [f for f in r.files if f.differs]
    c: Counter[str] = Counter()
    for f in fs:
        for g in ("modified", "reshaped", "renamed", "moved", "added", "removed"):
            c[g] += f.count(g)
    added = sum(1 for f in fs if f.old is None)
    removed = sum(1 for f in fs if f.new is None)
    out = f"{len(fs)} checkpoint{'s' if len(fs) != 1 else ''} changed"
    if added or removed:
        out += f" ({added} new, {removed} deleted)"
    groups = ["modified", "reshaped", "renamed", "moved", "added", "removed"]
    if not any(_shows_moved(f) for f in r.files):
        groups.remove("moved")
    out += ": " + ", ".join(f"{c[g]} {g}" for g in groups)
    below = sum(f.below_threshold for f in r.files)
    if below:
        out += f", {below} below threshold"
    out += f"; new objects {human_size(sum(f.stored_bytes for f in r.files))}"
    return out


def render_text(r: DiffResult, stat: bool = False, header: bool = True) -> str:
    lines: list[str] = []
    if header and not stat:
        lines.append(f"git-theta-like diff {r.old_label} -> {r.new_label}")
    for f in r.files:
        lines += render_file_text(f, stat)
    if stat:
        lines.append(" " + grand_total(r))
    elif len(r.files) != 1:
        lines.append(grand_total(r))
    return "\n".join(lines) + "\n"


# ============================================================================ JSON


def _num(x: float | None) -> float | None:
    if x is None or x != x or x in (float("inf"), float("-inf")):
        return None
    return x


def _side_json(s: TensorSide | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {
        "dtype": s.dtype,
        "shape": list(s.shape),
        "numel": s.numel,
        "sha256": s.raw,
        "oid": s.oid,
        "stored": s.stored,
        "codec": s.codec,
    }


def _stats_json(st: TensorStats | None) -> dict[str, Any] | None:
    if st is None:
        return None
    return {
        "numel": st.numel,
        "changed": st.changed,
        "fraction_changed": st.fraction_changed,
        "l2_delta": _num(st.l2_delta),
        "l2_old": _num(st.l2_old),
        "l2_new": _num(st.l2_new),
        "relative_change": _num(st.relative_change),
        "max_abs_delta": _num(st.max_abs_delta),
        "cosine": _num(st.cosine),
        "nonfinite": st.nonfinite,
    }


def tensor_json(e: TensorDiff) -> dict[str, Any]:
    return {
        "name": e.name,
        "status": e.status,
        "group": e.group,
        "old_name": e.old_name,
        "old": _side_json(e.old),
        "new": _side_json(e.new),
        "content_changed": e.content_changed,
        "shape_changed": e.shape_changed,
        "dtype_changed": e.dtype_changed,
        "stats": _stats_json(e.stats),
        "kind": None
        if e.kind is None
        else {"kind": e.kind.kind, "label": e.kind.label, "rank": e.kind.rank, "percent": e.kind.percent},
        "below_threshold": e.below_threshold,
        "old_shard": e.old_shard,
        "new_shard": e.new_shard,
    }


def _file_side_json(s: FileSide | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"format": s.format, "size": s.size, "tensors": s.tensors, "params": s.params, "shards": s.shards}


def file_summary_json(f: FileDiff) -> dict[str, Any]:
    return {
        "modified": f.count("modified"),
        "reshaped": f.count("reshaped"),
        "renamed": f.count("renamed"),
        "moved": f.count("moved"),
        "added": f.count("added"),
        "removed": f.count("removed"),
        "unchanged": f.unchanged,
        "below_threshold": f.below_threshold,
        "params_changed": f.params_changed,
        "l2_delta": _num(f.l2_delta),
        "stored_bytes": f.stored_bytes,
    }


def file_json(f: FileDiff, stat: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": f.path,
        "status": f.status,
        "old": _file_side_json(f.old),
        "new": _file_side_json(f.new),
        "shards": {"old": f.old_shards, "new": f.new_shards},
        "whole_file": f.whole,
        "header_changed": f.header_changed,
        "stats_computed": f.stats_computed,
        "summary": file_summary_json(f),
    }
    if f.note:
        out["note"] = f.note
    if not stat:
        out["tensors"] = [tensor_json(e) for e in f.tensors]
    return out


def to_json(r: DiffResult, stat: bool = False) -> dict[str, Any]:
    fs = [f for f in r.files if f.differs]
    totals = Counter[str]()
    for f in r.files:
        for k, v in file_summary_json(f).items():
            if isinstance(v, int) and k not in ("params_changed",):
                totals[k] += v
    pcs = [f.params_changed for f in r.files]
    return {
        "schema": SCHEMA,
        "version": SCHEMA_VERSION,
        "old": r.old_label,
        "new": r.new_label,
        "threshold": r.threshold,
        "differs": r.differs,
        "files": [file_json(f, stat) for f in r.files],
        "summary": {
            "files_changed": len(fs),
            "files_added": sum(1 for f in fs if f.old is None),
            "files_removed": sum(1 for f in fs if f.new is None),
            **{
                k: totals[k]
                for k in (
                    "modified",
                    "reshaped",
                    "renamed",
                    "moved",
                    "added",
                    "removed",
                    "unchanged",
                    "below_threshold",
                    "stored_bytes",
                )
            },
            "params_changed": None if any(p is None for p in pcs) else sum(p for p in pcs if p is not None),
        },
    }


def render_json(r: DiffResult, stat: bool = False) -> str:
    return json.dumps(to_json(r, stat), indent=2, allow_nan=False) + "\n"


# ============================================================================ Markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return "`" + text.replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(r: DiffResult, stat: bool = False) -> str:
    out = [MARKDOWN_MARKER, f"### Checkpoint diff: {_code(r.old_label)} → {_code(r.new_label)}", ""]
    if not r.files:
        out.append("No checkpoint changed.")
        return "\n".join(out) + "\n"
    if stat or len(r.files) > 1:
        moved = any(_shows_moved(f) for f in r.files)  # a column for sharded models only
        out += [
            "| checkpoint | modified | reshaped | renamed | "
            + ("moved | " if moved else "")
            + "added | removed | params changed | new objects |"
        ]
        out += ["|---|---:|---:|---:|" + ("---:|" if moved else "") + "---:|---:|---:|---:|"]
        for f in r.files:
            pc = f.params_changed
            out.append(
                f"| {_code(f.path)} ({f.status}) | {f.count('modified')} | {f.count('reshaped')} "
                f"| {f.count('renamed')} | "
                + (f"{f.count('moved')} | " if moved else "")
                + f"{f.count('added')} "
                f"| {f.count('removed')} "
                f"| {'-' if pc is None else human_count(pc)} | {human_size(f.stored_bytes)} |"
            )
        out.append("")
    if not stat:
        rows_left = MARKDOWN_MAX_ROWS
        for f in r.files:
            out.append(f"#### {_code(f.path)}: {_md(file_headline(f))}")
            out.append("")
            listed = [e for e in f.tensors if not e.below_threshold]
            changed = [e for e in listed if e.group in ("modified", "reshaped", "renamed")]
            if changed:
                out += [
                    "| tensor | dtype shape | rel. change | changed | ‖Δ‖ | max \\|Δ\\| | cosine | kind |",
                    "|---|---|---:|---:|---:|---:|---:|---|",
                ]
                for e in changed[:rows_left]:
                    st = e.stats
                    name = _code(f"{e.old_name} -> {e.name}" if e.old_name else e.name)
                    if e.shard_moved:
                        name += f" (moved {_code(e.old_shard or '')} → {_code(e.new_shard or '')})"
                    out.append(
                        f"| {name} | {_md(type_col(e))} | {rel(st)} "
                        f"| {pct(st.fraction_changed) if st else '-'} | {sci(st.l2_delta) if st else '-'} "
                        f"| {sci(st.max_abs_delta) if st else '-'} "
                        f"| {cos(st)} | {_md(kind_col(e))} |"
                    )
                if len(changed) > rows_left:
                    out.append(f"\n… and {len(changed) - rows_left} more (see `--format json`)")
                rows_left = max(0, rows_left - len(changed))
                out.append("")
            moved_es = [e for e in listed if e.group == "moved"]
            if moved_es:
                shown = ", ".join(
                    f"{_code(e.name)} ({_code(e.old_shard or '')} → {_code(e.new_shard or '')})"
                    for e in moved_es[:50]
                )
                more = f" … and {len(moved_es) - 50} more" if len(moved_es) > 50 else ""
                out.append(f"**{GROUP_TITLES['moved']} ({len(moved_es)}):** {shown}{more}")
                out.append("")
            for g, sign in (("added", "+"), ("removed", "−")):
                es = [e for e in listed if e.group == g]
                if es:
                    shown = ", ".join(
                        f"{_code(e.name)} {_md(side_str(e.new or e.old))}"  # type: ignore[arg-type]
                        for e in es[:50]
                    )
                    more = f" … and {len(es) - 50} more" if len(es) > 50 else ""
                    out.append(f"**{sign} {GROUP_TITLES[g]} ({len(es)}):** {shown}{more}")
                    out.append("")
            if f.below_threshold:
                out.append(
                    f"_{f.below_threshold} tensors changed by less than {f.threshold:g} (relative change); "
                    "not listed._"
                )
                out.append("")
            if f.header_changed and f.whole:
                out.append("_Stored whole (not split into tensors): the file's content changed._")
                out.append("")
            out.append(f"**Total:** {_md(file_total(f))}")
            out.append("")
    out.append(f"**{_md(grand_total(r))}**")
    return "\n".join(out) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown}


# ============================================================================ log


def _kind_counts(f: FileDiff) -> Counter[str]:
    """sparse / dense / rank R -> tensors of that kind."""
    c: Counter[str] = Counter()
    for e in f.tensors:
        if e.kind is not None and e.kind.kind != "none":
            c["sparse" if e.kind.kind == "sparse" else e.kind.label] += 1
    return c


def _kinds(f: FileDiff) -> str:
    c = _kind_counts(f)
    if not c:  # no statistics (log --fast): say how the changed tensors were stored
        codecs = Counter(e.new.codec for e in f.tensors if e.new is not None and e.content_changed)
        return "stored as " + ", ".join(f"{k} x{n}" for k, n in sorted(codecs.items())) if codecs else ""
    return ", ".join(f"{k} x{n}" for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def log_file_line(f: FileDiff) -> str:
    changed = f.count("modified") + f.count("reshaped") + f.count("renamed")
    parts = [f"{changed} tensor{'s' if changed != 1 else ''} changed"]
    if f.old is None:
        parts = [f"new checkpoint ({f.new.tensors if f.new else 0} tensors)"]
    elif f.new is None:
        parts = ["deleted"]
    else:
        pc = f.params_changed
        if pc is not None:
            parts[0] += f" ({human_count(pc)} params)"
        if f.count("moved"):
            parts.append(f"{f.count('moved')} moved between shards")
        for g in ("added", "removed"):
            if f.count(g):
                parts.append(f"{f.count(g)} {g}")
    parts.append(f"stored {human_size(f.stored_bytes)}")
    kinds = _kinds(f)
    if kinds and f.old is not None:
        parts.append(kinds)
    return f"{f.path}: " + "; ".join(parts)


def render_log_text(entries: list[LogEntry]) -> str:
    lines = []
    for e in entries:
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.date))
        merge = " (merge, vs first parent)" if len(e.parents) > 1 else ""
        lines.append(f"{e.commit[:12]} {date} {e.author}: {e.subject}{merge}")
        for f in e.files:
            lines.append("    " + log_file_line(f))
    return "\n".join(lines) + ("\n" if lines else "")


def log_json(entries: list[LogEntry]) -> dict[str, Any]:
    commits = []
    for e in entries:
        commits.append(
            {
                "commit": e.commit,
                "parents": e.parents,
                "author": e.author,
                "date": e.date,
                "subject": e.subject,
                "stored_bytes": e.stored_bytes,
                "files": [
                    {
                        "path": f.path,
                        "status": f.status,
                        "summary": file_summary_json(f),
                        "kinds": dict(_kind_counts(f)),
                    }
                    for f in e.files
                ],
            }
        )
    return {"schema": LOG_SCHEMA, "version": SCHEMA_VERSION, "commits": commits}


def render_log_json(entries: list[LogEntry]) -> str:
    return json.dumps(log_json(entries), indent=2, allow_nan=False) + "\n"


def render_log_markdown(entries: list[LogEntry]) -> str:
    out = [
        "| commit | date | subject | checkpoint | changed | stored | update kinds |",
        "|---|---|---|---|---|---:|---|",
    ]
    for e in entries:
        date = time.strftime("%Y-%m-%d", time.localtime(e.date))
        for f in e.files:
            changed = f.count("modified") + f.count("reshaped") + f.count("renamed")
            moved = f" (+{f.count('moved')} moved between shards)" if f.count("moved") else ""
            out.append(
                f"| `{e.commit[:12]}` | {date} | {_md(e.subject)} | {_code(f.path)} ({f.status}) "
                f"| {changed}{moved} "
                f"| {human_size(f.stored_bytes)} | {_md(_kinds(f))} |"
            )
    return "\n".join(out) + "\n"


LOG_RENDERERS = {"text": render_log_text, "json": render_log_json, "markdown": render_log_markdown}
