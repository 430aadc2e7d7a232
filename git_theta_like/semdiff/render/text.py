"""Plain-text diffs and logs for the terminal (and git's diff driver)."""

from __future__ import annotations

import time
from collections import Counter

from git_theta_like.display import counted, human_count, human_size, printable
from git_theta_like.semdiff.model import (
    DiffResult,
    FileDiff,
    FileSide,
    LogEntry,
    TensorDiff,
    TensorSide,
    TensorStats,
)

GROUP_TITLES = {
    "modified": "modified",
    "reshaped": "shape or dtype changed",
    "renamed": "renamed",
    "moved": "moved between shards",
    "added": "added",
    "removed": "removed",
}


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
    name = printable(f"{e.old_name} -> {e.name}" if e.old_name else e.name)
    return f"{name}  (moved {printable(shard_move(e))})" if e.shard_moved else name


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
        tensors = counted(s.tensors, "tensor")
        return f"{s.format}, {shards}{tensors}, {human_count(s.params)} params, {human_size(s.size)}"

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


def shows_moved(f: FileDiff) -> bool:
    """A `moved` count is shown for sharded models (and wherever a tensor moved)."""
    return f.sharded or f.count("moved") > 0


def file_total(f: FileDiff) -> str:
    parts = [
        f"{f.count('modified')} modified",
        f"{f.count('reshaped')} reshaped",
        f"{f.count('renamed')} renamed",
        *([f"{f.count('moved')} moved"] if shows_moved(f) else []),
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
        return [printable(f" {f.path} | {file_total(f)}")]
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
            f"  below threshold (relative change < {f.threshold:g}): {counted(f.below_threshold, 'tensor')}, "
            f"largest {sci(biggest)}; not listed"
        )
    structural = any(g in groups for g in ("reshaped", "renamed", "added", "removed"))
    if f.header_changed and not f.whole and f.old is not None and f.new is not None:
        if f.sharded:  # compared on their own (diff.diff_sharded): always worth saying
            lines.append("  header/metadata changed (the index's metadata or a shard's header)")
        elif not structural:
            lines.append("  header/metadata changed")
    lines.append(f"  total: {file_total(f)}")
    return [printable(line) for line in lines]  # names, paths and notes come from repositories


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
    if not any(shows_moved(f) for f in r.files):
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
        lines.append(printable(f"git-theta-like diff {r.old_label} -> {r.new_label}"))
    for f in r.files:
        lines += render_file_text(f, stat)
    if stat:
        lines.append(" " + grand_total(r))
    elif len(r.files) != 1:
        lines.append(grand_total(r))
    return "\n".join(lines) + "\n"


def kind_counts(f: FileDiff) -> Counter[str]:
    """sparse / dense / rank R -> tensors of that kind."""
    c: Counter[str] = Counter()
    for e in f.tensors:
        if e.kind is not None and e.kind.kind != "none":
            c["sparse" if e.kind.kind == "sparse" else e.kind.label] += 1
    return c


def kinds_text(f: FileDiff) -> str:
    c = kind_counts(f)
    if not c:  # no statistics (log --fast): say how the changed tensors were stored
        codecs = Counter(e.new.codec for e in f.tensors if e.new is not None and e.content_changed)
        return "stored as " + ", ".join(f"{k} x{n}" for k, n in sorted(codecs.items())) if codecs else ""
    return ", ".join(f"{k} x{n}" for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def log_file_line(f: FileDiff) -> str:
    changed = f.count("modified") + f.count("reshaped") + f.count("renamed")
    parts = [f"{changed} tensor{'s' if changed != 1 else ''} changed"]
    if f.old is None:
        parts = [f"new checkpoint ({counted(f.new.tensors if f.new else 0, 'tensor')})"]
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
    kinds = kinds_text(f)
    if kinds and f.old is not None:
        parts.append(kinds)
    return f"{f.path}: " + "; ".join(parts)


def render_log_text(entries: list[LogEntry]) -> str:
    lines = []
    for e in entries:
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.date))
        merge = " (merge, vs first parent)" if len(e.parents) > 1 else ""
        lines.append(printable(f"{e.commit[:12]} {date} {e.author}: {e.subject}{merge}"))
        for f in e.files:
            lines.append(printable("    " + log_file_line(f)))
    return "\n".join(lines) + ("\n" if lines else "")
