"""`git theta-like diff --plot FILE.png`: a per-layer heat map of relative change, drawn with
matplotlib (the optional `plot` extra: `pip install 'git-theta-like[plot]'`).

Rows are layers (the name up to its first integer component: `encoder.layer.3`), with the
tensors that belong to no layer (embeddings, heads) in a first row; columns are the rest of the
name (`attention.self.query.weight`). A cell's colour is log10 of the relative change
||new-old||/||old||, its value written in it when the grid is small enough to read; grey is
unchanged, white no tensor. Tensors without a relative change are marked with a symbol on a pink
cell: `+` added, `−` removed, `↔` shape changed, `∞` changed from all zeros, `≠` changed with no
norm (integers, bytes); `→` a rename. A tensor whose dtype changed with the same shape (a cast,
F32 -> BF16) keeps its colour and value, outlined, so a whole-model cast reads as a heat map
of the rounding error.

matplotlib is imported only when a plot is drawn (through `extras.require`), never by the diff
itself.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from git_theta_like.extras import require
from git_theta_like.semdiff.model import DiffResult, FileDiff, TensorDiff

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FEATURE = "git theta-like diff --plot"
GREY = "#d9d9d9"  # unchanged
PINK = "#f7b6d2"  # no relative change: added, removed, reshaped, from zero
OUTLINE = "#d6279f"  # dtype changed (a cast): coloured by value, outlined
CMAP = "viridis"
DPI = 110
ANNOTATE_MAX_CELLS = 600  # above this many cells, values are left to the colour bar

# the mark of each kind of cell that has no relative change, and its legend text
MARKS = {
    "added": ("+", "added"),
    "removed": ("\u2212", "removed"),
    "reshaped": ("\u2194", "shape changed"),
    "from_zero": ("\u221e", "changed from all zeros"),
    "no_norm": ("\u2260", "changed (no norm: integers, bytes)"),
}
RENAMED = "\u2192"


def check_available() -> None:
    """Raise the missing-extra error now (before a diff is computed) when matplotlib is absent."""
    require("matplotlib", "plot", FEATURE)


_LAYER = re.compile(r"^(.*?(?:^|\.)(\d+))(?:\.(.*))?$")


def split_layer(name: str) -> tuple[str, str]:
    """`encoder.layer.3.attention.q.weight` -> (`encoder.layer.3`, `attention.q.weight`);
    a name without an integer component -> ("", name)."""
    m = _LAYER.match(name)
    if m is None:
        return "", name
    return m.group(1), m.group(3) or ""


def _row_key(row: str) -> tuple[int, str, int]:
    if not row:
        return (0, "", 0)
    head, _, num = row.rpartition(".")
    return (1, head, int(num) if num.isdigit() else 0)


def _natural(name: str) -> list[str | int]:
    """Sort key that puts `part2` before `part10` (strings at even places, numbers at odd)."""
    return [int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", name))]


@dataclass
class Cell:
    """What one cell shows: `kind` is "same", "value" (relative change `value`, 0 when only
    signs of zeros or NaN payloads changed) or a key of MARKS; `cast` outlines it; `renamed`
    adds the rename mark."""

    kind: str
    value: float = 0.0
    cast: bool = False
    renamed: bool = False


def _cell(e: TensorDiff) -> Cell:
    st = e.stats
    renamed = e.status == "renamed"
    if e.status in ("added", "removed"):
        return Cell(e.status)
    if st is not None and st.relative_change is not None:
        return Cell("value", max(st.relative_change, 0.0), cast=e.dtype_changed, renamed=renamed)
    if e.shape_changed or (e.dtype_changed and st is None):
        return Cell("reshaped")
    if st is not None and (st.l2_delta or 0) > 0:
        return Cell("from_zero", cast=e.dtype_changed, renamed=renamed)
    if st is not None and st.changed:
        if st.l2_delta is None:
            return Cell("no_norm", renamed=renamed)
        return Cell("value", 0.0, cast=e.dtype_changed, renamed=renamed)
    if e.content_changed and st is None:
        return Cell("no_norm", renamed=renamed)
    return Cell("same", cast=e.dtype_changed, renamed=renamed)


@dataclass
class Grid:
    """One checkpoint's heat map: rows (layers), columns (tensor kinds) and their cells."""

    title: str
    rows: list[str]
    cols: list[str]
    cells: dict[tuple[str, str], Cell]
    casts: Counter[str]  # "F32 -> BF16" -> tensors

    @property
    def values(self) -> list[float]:
        return [c.value for c in self.cells.values() if c.kind == "value" and c.value > 0]

    def log_range(self) -> tuple[int, int]:
        vals = self.values
        lo = math.floor(math.log10(min(vals))) if vals else -6
        hi = math.ceil(math.log10(max(vals))) if vals else 0
        return (lo, hi) if hi > lo else (lo, lo + 1)


def file_grid(f: FileDiff, title: str) -> Grid:
    cells: dict[tuple[str, str], Cell] = {split_layer(n): Cell("same") for n in f.unchanged_names}
    casts: Counter[str] = Counter()
    for e in f.tensors:
        cells[split_layer(e.name)] = _cell(e)
        if e.dtype_changed and e.old is not None and e.new is not None:
            casts[f"{e.old.dtype} \u2192 {e.new.dtype}"] += 1
    rows = sorted({r for r, _ in cells}, key=_row_key)
    in_layers = {c for r, c in cells if r}
    cols = sorted(in_layers, key=_natural) + sorted({c for r, c in cells if not r} - in_layers, key=_natural)
    return Grid(title, rows, cols, cells, casts)


def _fmt(v: float) -> str:
    """A relative change in 4 characters or so: 3.2e-3, 0.12, 1.5, 0."""
    if v == 0:
        return "0"
    if 0.01 <= v < 10:
        return f"{v:.2g}"
    m, e = f"{v:.1e}".split("e")
    return f"{m}e{int(e)}"


def _draw(fig: Figure, spec: Any, g: Grid) -> None:
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    ax = fig.add_subplot(spec[0])
    cax = fig.add_subplot(spec[1])
    import matplotlib as mpl

    cm = mpl.colormaps[CMAP]
    lo, hi = g.log_range()
    norm = Normalize(vmin=lo, vmax=hi)
    nr, nc = max(1, len(g.rows)), max(1, len(g.cols))
    annotate = nr * nc <= ANNOTATE_MAX_CELLS
    for i, r in enumerate(g.rows):
        for j, c in enumerate(g.cols):
            cell = g.cells.get((r, c))
            if cell is None:
                continue
            text, face = "", GREY
            if cell.kind == "value":
                x = math.log10(cell.value) if cell.value > 0 else lo
                rgba = cm(norm(min(max(x, lo), hi)))
                face = mpl.colors.to_hex(rgba)
                if annotate:
                    text = _fmt(cell.value)
                dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.55
                color = "white" if dark else "black"
            elif cell.kind in MARKS:
                face, text, color = PINK, MARKS[cell.kind][0], "black"
            else:
                color = "black"
            if cell.renamed:
                text = f"{RENAMED}{text}"
            ax.add_patch(
                Rectangle(
                    (j - 0.5, i - 0.5),
                    1,
                    1,
                    facecolor=face,
                    edgecolor=OUTLINE if cell.cast else "white",
                    linewidth=1.6 if cell.cast else 0.8,
                    gid=f"cell:{cell.kind}{':cast' if cell.cast else ''}",
                )
            )
            if text:
                big = cell.kind in MARKS
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    color=color,
                    fontsize=10 if big else 6.5,
                    fontweight="bold" if big else "normal",
                )
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(nr - 0.5, -0.5)
    ax.set_xticks(range(len(g.cols)), g.cols, rotation=50, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(len(g.rows)), [r or "(no layer)" for r in g.rows], fontsize=8)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    ax.set_aspect("auto")
    title = g.title
    if g.casts:
        title += "\n" + ", ".join(f"dtype {k}: {n} tensor{'s' if n > 1 else ''}" for k, n in g.casts.items())
    legend_rows = _legend(ax, g)
    ax.set_title(title, fontsize=10, loc="left", pad=8 + 15 * legend_rows)
    if not g.values:  # nothing to put on a scale
        cax.axis("off")
        return
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cm)
    bar = fig.colorbar(sm, cax=cax)
    ticks = list(range(lo, hi + 1))
    bar.set_ticks(ticks, labels=[f"$10^{{{t}}}$" for t in ticks])
    bar.set_label("relative change \u2016new \u2212 old\u2016 / \u2016old\u2016 (log scale)", fontsize=8)
    bar.ax.tick_params(labelsize=8)


def _legend(ax: Any, g: Grid) -> int:
    """The legend of the marks used, between the title and the grid; returns its rows."""
    from matplotlib.patches import Patch

    kinds = {c.kind for c in g.cells.values()}
    handles: list[Any] = [Patch(facecolor=GREY, label="unchanged")]
    for kind, (mark, label) in MARKS.items():
        if kind in kinds:
            handles.append(Patch(facecolor=PINK, label=f"{mark}  {label}"))
    if any(c.cast for c in g.cells.values()):
        handles.append(Patch(facecolor="white", edgecolor=OUTLINE, linewidth=1.6, label="dtype changed"))
    if any(c.renamed for c in g.cells.values()):
        handles.append(Patch(facecolor="white", label=f"{RENAMED}  renamed"))
    ncol = min(len(handles), 4)
    leg = ax.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.0),
        ncol=ncol,
        fontsize=8,
        frameon=False,
        borderaxespad=0.2,
        handlelength=1.2,
    )
    leg.set_gid("legend")
    return -(-len(handles) // ncol)


def build_figure(r: DiffResult) -> Figure:
    """The heat map as a matplotlib Figure: one panel per changed checkpoint, stacked."""
    require("matplotlib", "plot", FEATURE)
    from matplotlib.figure import Figure

    grids = [file_grid(f, f"{f.path}: {r.old_label} \u2192 {r.new_label}") for f in r.files if not f.whole]
    grids = [g for g in grids if g.rows]
    if not grids:
        fig = Figure(figsize=(5, 1), dpi=DPI)
        fig.text(0.5, 0.5, f"no tensor changed: {r.old_label} \u2192 {r.new_label}", ha="center", va="center")
        return fig
    ncols = max(len(g.cols) for g in grids)
    label_w = max(len(r or "(no layer)") for g in grids for r in g.rows) * 0.07
    col_h = max(len(c) for g in grids for c in g.cols) * 0.055
    cell_w = 0.55 if ncols <= 40 else 0.2
    heights = [max(1, len(g.rows)) * (0.3 if len(g.rows) <= 60 else 0.12) + col_h + 1.4 for g in grids]
    width = label_w + ncols * cell_w + 1.6
    fig = Figure(figsize=(max(width, 6.0), sum(heights)), dpi=DPI, layout="constrained")
    outer = fig.add_gridspec(len(grids), 1, height_ratios=heights)
    for k, g in enumerate(grids):
        spec = outer[k].subgridspec(1, 2, width_ratios=[max(1, len(g.cols)) * cell_w, 0.18])
        _draw(fig, (spec[0, 0], spec[0, 1]), g)
    return fig


def render_plot(r: DiffResult, path: str | Path) -> None:
    """Write the heat map as a PNG."""
    fig = build_figure(r)
    fig.savefig(str(path), format="png", dpi=DPI, facecolor="white")  # constrained layout: no clipping
