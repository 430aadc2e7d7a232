"""`git theta-like diff --plot`: the matplotlib heat map (the `plot` extra), what it marks, a
whole-model cast, two checkpoints in one figure, and the message when matplotlib is missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes
from import_blocker import attempts, blocker_dir

from git_theta_like.codecs import bits
from git_theta_like.gitio.repo import Repo
from git_theta_like.semdiff import sides
from git_theta_like.semdiff.model import Side
from git_theta_like.semdiff.render import plot

RNG = np.random.default_rng(21)
BASE = {
    **{
        f"encoder.layer.{i}.{m}.weight": (RNG.standard_normal((8, 8)) * 0.05).astype(np.float32)
        for i in range(3)
        for m in ("query", "key")
    },
    "embeddings.weight": (RNG.standard_normal((10, 8)) * 0.05).astype(np.float32),
    "head.gone": RNG.standard_normal(4).astype(np.float32),
    "head.shape": RNG.standard_normal((4, 6)).astype(np.float32),
    "head.cast": RNG.standard_normal(16).astype(np.float32),
    "head.zero": np.zeros(8, np.float32),
}
# relative change of each modified tensor: 10^-1 .. 10^-4
SCALES = {"encoder.layer.0.query.weight": 1e-1, "encoder.layer.1.key.weight": 1e-2,
          "encoder.layer.2.query.weight": 1e-4}  # fmt: skip


def _st(tensors: dict[str, np.ndarray], dtypes: dict[str, str] | None = None) -> bytes:
    out = {}
    for k, a in tensors.items():
        dt = (dtypes or {}).get(k, "F32")
        raw = bits.from_float64(a.astype(np.float64), dt).tobytes() if dt != "F32" else a.tobytes()
        out[k] = (dt, a.shape, raw)
    return safetensors_bytes(out)


def _commit(repo: Path, files: dict[str, bytes], msg: str) -> None:
    for name, data in files.items():
        (repo / name).write_bytes(data)
    git(repo, "add", *files)
    git(repo, "commit", "-qm", msg)


@pytest.fixture
def history(repo: Path) -> Path:
    """HEAD~1: m and c are BASE. HEAD: in m three tensors nudged, one removed, one added, one
    reshaped, one cast to F16, one changed from zeros; c is BASE cast to BF16 as a whole."""
    _commit(repo, {"m.safetensors": _st(BASE), "c.safetensors": _st(BASE)}, "base")
    v2 = dict(BASE)
    for k, s in SCALES.items():
        d = RNG.standard_normal(BASE[k].shape)
        v2[k] = (BASE[k] + d / np.linalg.norm(d) * np.linalg.norm(BASE[k]) * s).astype(np.float32)
    del v2["head.gone"]
    v2["head.new"] = np.ones(3, np.float32)
    v2["head.shape"] = BASE["head.shape"].reshape(6, 4)
    v2["head.zero"] = np.ones(8, np.float32)
    cast = _st(BASE, dict.fromkeys(BASE, "BF16"))
    _commit(repo, {"m.safetensors": _st(v2, {"head.cast": "F16"}), "c.safetensors": cast}, "v2")
    return repo


def _panels(repo: Path) -> dict[str, tuple[Any, Any]]:
    """HEAD~1 -> HEAD's figure: file name -> (heat map axes, colour bar axes)."""
    result = sides.diff_sides(Repo(str(repo)), Side("rev", "HEAD~1"), Side("rev", "HEAD"))
    axes = plot.build_figure(result).axes
    assert len(axes) == 4
    return {
        ax.get_title(loc="left").split(":")[0]: (ax, cax)
        for ax, cax in zip(axes[::2], axes[1::2], strict=True)
    }


def _rgb(path: Path) -> np.ndarray:
    import matplotlib.image

    px = matplotlib.image.imread(str(path))
    return np.asarray(np.round(px[..., :3] * 255), np.uint8)


def _has(px: np.ndarray, hex_color: str) -> int:
    rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], np.uint8)
    return int(np.all(px == rgb, axis=-1).sum())


def test_heat_map_marks_each_kind_of_change_and_a_cast(history: Path, tmp_path: Path) -> None:
    out = tmp_path / "heat.png"
    gtl(history, "diff", "HEAD~1", "HEAD", "--plot", str(out))
    px = _rgb(out)
    h, w = px.shape[:2]
    assert 300 < w < 3000 and 400 < h < 3000, (w, h)  # two panels
    assert _has(px, plot.GREY) > 500  # unchanged cells
    assert _has(px, plot.PINK) > 500  # added / removed / reshaped / from zero
    assert _has(px, plot.OUTLINE) > 20  # the F16 cast's outline
    # the colour bar and the cells: many shades of viridis
    assert len({tuple(c) for c in px.reshape(-1, 3)[::7]}) > 50

    # the same diff's figure: what each cell shows
    panels = _panels(history)
    assert sorted(panels) == ["c.safetensors", "m.safetensors"]
    ax, cax = panels["m.safetensors"]
    texts = [t.get_text() for t in ax.texts]
    for mark in ("+", "\u2212", "\u2194", "\u221e"):
        assert texts.count(mark) == 1, (mark, texts)
    # each nudged tensor's value is written in its cell (its relative change, 2 digits)
    for want in ("0.1", "0.01", "1.0e-4"):
        assert want in texts, (want, texts)
    gids = [p.get_gid() for p in ax.patches]
    assert gids.count("cell:value:cast") == 1  # head.cast: F32 -> F16 keeps its value, outlined
    assert gids.count("cell:same") == 3 + 1  # 3 untouched layer tensors + embeddings
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "(no layer)", "encoder.layer.0", "encoder.layer.1", "encoder.layer.2",
    ]  # fmt: skip
    assert "relative change" in cax.get_ylabel()
    ticks = [t.get_text() for t in cax.get_yticklabels()]
    powers = [int(t.removeprefix("$10^{").removesuffix("}$")) for t in ticks]
    assert powers == list(range(powers[0], powers[-1] + 1)) and powers[0] <= -4 and powers[-1] >= -1
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "unchanged" and "dtype changed" in legend and "+  added" in legend
    assert "dtype F32 \u2192 F16: 1 tensor" in ax.get_title(loc="left")

    # a whole-model cast reads as a heat map of the rounding error, not as a wall of marks
    ax, cax = panels["c.safetensors"]
    gids = [p.get_gid() for p in ax.patches]
    assert gids.count("cell:value:cast") == len(BASE) - 1  # every tensor but the zeros
    assert gids.count("cell:same:cast") == 1  # head.zero: zeros stay zeros
    assert not [t for t in ax.texts if t.get_text() in "+\u2212\u2194\u221e"]
    # bf16 rounding (8 bits of mantissa): a relative change of a few 1e-3 everywhere, on a colour
    # bar of that one decade, so the differences between tensors show
    vals = [float(t.get_text()) for t in ax.texts]
    assert len(vals) == len(BASE) - 1 and all(1e-3 < v < 1e-2 for v in vals), vals
    assert [t.get_text() for t in cax.get_yticklabels()] == ["$10^{-3}$", "$10^{-2}$"]
    assert f"dtype F32 \u2192 BF16: {len(BASE)} tensors" in ax.get_title(loc="left")


def test_without_matplotlib_the_extra_is_named_before_any_work(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """(That diffs without --plot never import matplotlib: tests/test_deps.py, whose import
    blocker has matplotlib too.)"""
    block = blocker_dir(tmp_path, "matplotlib")
    monkeypatch.setenv("PYTHONPATH", f"{block}:{Path(__file__).resolve().parents[1]}")
    out = tmp_path / "heat.png"
    p = gtl(repo, "diff", "HEAD", "--plot", str(out), check=False)
    assert p.returncode == 1
    assert "git theta-like diff --plot needs matplotlib, which is not installed" in p.stderr
    assert "pip install 'git-theta-like[plot]'" in p.stderr
    assert not out.exists() and p.stdout == ""  # said before any work
    assert "import matplotlib" in attempts(block)
