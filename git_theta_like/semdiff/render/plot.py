"""`git theta-like diff --plot FILE.png`: a per-layer heat map of relative change.

Rows are layers (the name up to its first integer component: `encoder.layer.3`), with the
tensors that belong to no layer (embeddings, heads) in a first row; columns are the rest of the
name (`attention.self.query.weight`). A cell's colour is log10 of the relative change; grey is
unchanged, magenta a tensor added, removed, reshaped or changed from all zeros, white no tensor.

Written with numpy, zlib and a 3x5 bitmap font: no plotting library needed.
"""

from __future__ import annotations

import math
import re
import struct
import zlib
from pathlib import Path

import numpy as np

from git_theta_like.semdiff.model import DiffResult, FileDiff

SCALE = 2  # pixels per font pixel
CELL = 14
PAD = 10
BLACK = (20, 20, 20)
GREY = (205, 205, 205)
MAGENTA = (214, 39, 160)
VIRIDIS = np.array(
    [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
     (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37)],
    dtype=np.float64,
)  # fmt: skip

_GLYPHS = {
    "0": "### #.# #.# #.# ###", "1": ".#. ##. .#. .#. ###", "2": "### ..# ### #.. ###",
    "3": "### ..# ### ..# ###", "4": "#.# #.# ### ..# ..#", "5": "### #.. ### ..# ###",
    "6": "### #.. ### #.# ###", "7": "### ..# ..# .#. .#.", "8": "### #.# ### #.# ###",
    "9": "### #.# ### ..# ###", "a": ".#. #.# ### #.# #.#", "b": "##. #.# ##. #.# ##.",
    "c": ".## #.. #.. #.. .##", "d": "##. #.# #.# #.# ##.", "e": "### #.. ##. #.. ###",
    "f": "### #.. ##. #.. #..", "g": ".## #.. #.# #.# .##", "h": "#.# #.# ### #.# #.#",
    "i": "### .#. .#. .#. ###", "j": "..# ..# ..# #.# .#.", "k": "#.# #.# ##. #.# #.#",
    "l": "#.. #.. #.. #.. ###", "m": "#.# ### ### #.# #.#", "n": "##. #.# #.# #.# #.#",
    "o": ".#. #.# #.# #.# .#.", "p": "##. #.# ##. #.. #..", "q": ".#. #.# #.# ##. .##",
    "r": "##. #.# ##. #.# #.#", "s": ".## #.. .#. ..# ##.", "t": "### .#. .#. .#. .#.",
    "u": "#.# #.# #.# #.# ###", "v": "#.# #.# #.# #.# .#.", "w": "#.# #.# ### ### #.#",
    "x": "#.# #.# .#. #.# #.#", "y": "#.# #.# .#. .#. .#.", "z": "### ..# .#. #.. ###",
    ".": "... ... ... ... .#.", ",": "... ... ... .#. #..", "_": "... ... ... ... ###",
    "-": "... ... ### ... ...", "+": "... .#. ### .#. ...", ":": "... .#. ... .#. ...",
    "/": "..# ..# .#. #.. #..", "(": ".#. #.. #.. #.. .#.", ")": ".#. ..# ..# ..# .#.",
    "[": "##. #.. #.. #.. ##.", "]": ".## ..# ..# ..# .##", "%": "#.# ..# .#. #.. #.#",
    "=": "... ### ... ### ...", ">": "#.. .#. ..# .#. #..", "<": "..# .#. #.. .#. ..#",
    "|": ".#. .#. .#. .#. .#.", "'": ".#. .#. ... ... ...", " ": "... ... ... ... ...",
    "?": "### ..# .## ... .#.", "~": "... ##. .## ... ...", "#": "#.# ### #.# ### #.#",
    "*": "... #.# .#. #.# ...", "^": ".#. #.# ... ... ...",
}  # fmt: skip
_FONT = {
    c: np.array([[ch == "#" for ch in row] for row in g.split()], dtype=bool) for c, g in _GLYPHS.items()
}
GLYPH_W, GLYPH_H = 4 * SCALE, 6 * SCALE  # with one pixel of spacing


def text_mask(text: str) -> np.ndarray:
    """A boolean bitmap of text (lower-cased), GLYPH_H high."""
    out = np.zeros((GLYPH_H, max(1, len(text)) * GLYPH_W), dtype=bool)
    for i, ch in enumerate(text.lower()):
        g = _FONT.get(ch, _FONT["?"])
        big = np.kron(g, np.ones((SCALE, SCALE), dtype=bool))
        out[: big.shape[0], i * GLYPH_W : i * GLYPH_W + big.shape[1]] = big
    return out


def colormap(t: np.ndarray) -> np.ndarray:
    """Viridis-like colours for t in [0, 1]."""
    x = np.clip(t, 0.0, 1.0) * (len(VIRIDIS) - 1)
    i = np.minimum(np.floor(x).astype(int), len(VIRIDIS) - 2)
    f = (x - i)[..., None]
    out: np.ndarray = (VIRIDIS[i] * (1 - f) + VIRIDIS[i + 1] * f).round().astype(np.uint8)
    return out


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """An 8-bit RGB PNG (filter 0 on every row)."""
    h, w, _ = rgb.shape
    raw = np.zeros((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw.tobytes(), 9))
    png += chunk(b"IEND", b"")
    Path(path).write_bytes(png)


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


class _Canvas:
    def __init__(self, h: int, w: int) -> None:
        self.px = np.full((h, w, 3), 255, dtype=np.uint8)

    def text(
        self, y: int, x: int, s: str, color: tuple[int, int, int] = BLACK, vertical: bool = False
    ) -> None:
        m = text_mask(s)
        if vertical:
            m = np.rot90(m)  # reads bottom to top
        h = min(m.shape[0], self.px.shape[0] - y)
        w = min(m.shape[1], self.px.shape[1] - x)
        if h > 0 and w > 0:
            self.px[y : y + h, x : x + w][m[:h, :w]] = color

    def rect(self, y: int, x: int, h: int, w: int, color: tuple[int, int, int] | np.ndarray) -> None:
        self.px[y : y + h, x : x + w] = color


def _file_panel(f: FileDiff, title: str) -> np.ndarray:
    cells: dict[tuple[str, str], float | str] = {split_layer(n): "same" for n in f.unchanged_names}
    for e in f.tensors:
        row, col = split_layer(e.name)
        st = e.stats
        if e.group in ("added", "removed", "reshaped") or (
            st is not None and st.relative_change is None and (st.l2_delta or 0) > 0
        ):
            cells[(row, col)] = "special"
        elif st is not None and st.relative_change is not None and st.relative_change > 0:
            cells[(row, col)] = st.relative_change
        elif st is not None and st.changed:
            cells[(row, col)] = "special" if st.l2_delta is None else 0.0
        else:
            cells[(row, col)] = "special" if e.content_changed else "same"
    rows = sorted({r for r, _ in cells}, key=_row_key)
    in_layers = {c for r, c in cells if r}
    cols = sorted(in_layers) + sorted({c for r, c in cells if not r} - in_layers)
    values = [v for v in cells.values() if isinstance(v, float) and v > 0]
    lo = math.floor(math.log10(min(values))) if values else -6
    hi = math.ceil(math.log10(max(values))) if values else 0
    if hi <= lo:
        hi = lo + 1
    label_w = max((len(r or "(no layer)") for r in rows), default=8) * GLYPH_W + PAD
    col_h = max((len(c) for c in cols), default=4) * GLYPH_W + PAD
    grid_w, grid_h = len(cols) * CELL, max(1, len(rows)) * CELL
    bar_w = 16 * GLYPH_W
    title_h = 3 * GLYPH_H
    subtitle = "log10 relative change ||new-old||/||old|| per tensor"
    legend = "unchanged" + " " * 4 + "added, removed, reshaped or from zero"
    width = (
        PAD
        + max(label_w + grid_w + PAD + bar_w, (max(len(title), len(subtitle), len(legend)) + 4) * GLYPH_W)
        + PAD
    )
    height = PAD + title_h + grid_h + PAD + col_h + 3 * GLYPH_H + PAD
    cv = _Canvas(height, width)
    cv.text(PAD, PAD, title)
    cv.text(PAD + GLYPH_H + 4, PAD, subtitle)
    gy, gx = PAD + title_h, PAD + label_w
    for i, r in enumerate(rows):
        cv.text(gy + i * CELL + (CELL - GLYPH_H) // 2, PAD, r or "(no layer)")
        for j, c in enumerate(cols):
            v = cells.get((r, c))
            if v is None:
                continue
            if v == "same":
                color: tuple[int, int, int] | np.ndarray = GREY
            elif v == "special":
                color = MAGENTA
            else:
                assert isinstance(v, float)
                t = (math.log10(v) - lo) / (hi - lo) if v > 0 else 0.0
                color = colormap(np.array(t))
            cv.rect(gy + i * CELL + 1, gx + j * CELL + 1, CELL - 2, CELL - 2, color)
    for j, c in enumerate(cols):
        cv.text(gy + grid_h + 4, gx + j * CELL + (CELL - GLYPH_H) // 2, c, vertical=True)
    # colour bar with its range, and the legend
    bx = gx + grid_w + PAD
    bar = colormap(np.linspace(1, 0, grid_h))[:, None, :]
    cv.px[gy : gy + grid_h, bx : bx + 2 * CELL] = np.broadcast_to(bar, (grid_h, 2 * CELL, 3))
    cv.text(gy, bx + 2 * CELL + 4, f"1e{hi}")
    cv.text(gy + grid_h - GLYPH_H, bx + 2 * CELL + 4, f"1e{lo}")
    ly = gy + grid_h + col_h + 4
    cv.rect(ly, PAD, GLYPH_H, GLYPH_H, GREY)
    cv.text(ly, PAD + GLYPH_H + 4, "unchanged")
    x2 = PAD + GLYPH_H + 4 + 11 * GLYPH_W
    cv.rect(ly, x2, GLYPH_H, GLYPH_H, MAGENTA)
    cv.text(ly, x2 + GLYPH_H + 4, "added, removed, reshaped or from zero")
    return cv.px


def render_plot(r: DiffResult, path: str | Path) -> None:
    """One panel per changed checkpoint, stacked."""
    panels = [_file_panel(f, f"{f.path}: {r.old_label} -> {r.new_label}") for f in r.files if not f.whole]
    if not panels:
        cv = _Canvas(3 * GLYPH_H, 40 * GLYPH_W)
        cv.text(GLYPH_H, PAD, f"no tensor changed: {r.old_label} -> {r.new_label}")
        panels = [cv.px]
    width = max(p.shape[1] for p in panels)
    stacked = [np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    write_png(path, np.concatenate(stacked, axis=0))
