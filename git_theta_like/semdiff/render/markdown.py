"""Markdown tables of diffs and logs, sized for a pull-request comment."""

from __future__ import annotations

import time

from git_theta_like.display import MARKDOWN_MAX_ROWS, human_count, human_size, printable
from git_theta_like.semdiff.model import DiffResult, LogEntry
from git_theta_like.semdiff.render.text import (
    GROUP_TITLES,
    cos,
    file_headline,
    file_total,
    grand_total,
    kind_col,
    kinds_text,
    pct,
    rel,
    sci,
    shows_moved,
    side_str,
    type_col,
)

MARKDOWN_MARKER = "<!-- git-theta-like diff -->"


def _md(text: str) -> str:
    return printable(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return "`" + printable(text).replace("`", "'").replace("|", "\\|") + "`"


def render_markdown(r: DiffResult, stat: bool = False) -> str:
    out = [MARKDOWN_MARKER, f"### Checkpoint diff: {_code(r.old_label)} → {_code(r.new_label)}", ""]
    if not r.files:
        out.append("No checkpoint changed.")
        return "\n".join(out) + "\n"
    if stat or len(r.files) > 1:
        moved = any(shows_moved(f) for f in r.files)  # a column for sharded models only
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
                f"| {human_size(f.stored_bytes)} | {_md(kinds_text(f))} |"
            )
    return "\n".join(out) + "\n"
