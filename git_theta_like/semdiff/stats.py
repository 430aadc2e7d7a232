"""Per-tensor statistics of a change, computed in float64 chunk by chunk: fraction of entries
changed, delta norms, relative change, cosine, and the inferred update kind (sparse k%, rank r
by a randomized range finder, dense)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np

from git_theta_like.codecs import bits, lowrank
from git_theta_like.dtypes import Buffer
from git_theta_like.semdiff.model import SPARSE_MAX, TensorSide, TensorStats, UpdateKind

MAX_RANK = 64  # ranks above this are reported as dense


CHUNK = 1 << 22  # elements compared at a time (bounds the float64 working set)

F8 = {  # 8-bit floats: exponent bits, bias, kind of special values
    "F8_E4M3": (4, 7, "fn"),  # no infinities; S.1111.111 is NaN
    "F8_E5M2": (5, 15, "ieee"),
    "F8_E4M3FNUZ": (4, 8, "fnuz"),  # only 0x80 is NaN; no negative zero
    "F8_E5M2FNUZ": (5, 16, "fnuz"),
    "F8_E8M0": (8, 127, "e8m0"),  # exponent only; 0xFF is NaN
}
F8_TABLES: dict[str, np.ndarray] = {}


def float_view(elems: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values of a dtype's bit patterns (F64/F32/F16/BF16 and the 8-bit floats)."""
    if dtype in F8:
        return _f8_table(dtype)[elems.view(np.uint8)]
    return bits.to_float64(elems, dtype)


def is_float(dtype: str) -> bool:
    return dtype in ("F64", "F32", "F16", "BF16") or dtype in F8


def _f8_table(dtype: str) -> np.ndarray:
    table = F8_TABLES.get(dtype)
    if table is not None:
        return table
    ebits, bias, kind = F8[dtype]
    mbits = 8 - 1 - ebits if kind != "e8m0" else 0
    out = np.empty(256, np.float64)
    for b in range(256):
        if kind == "e8m0":
            out[b] = math.nan if b == 0xFF else math.ldexp(1.0, b - bias)
            continue
        sign = -1.0 if b & 0x80 else 1.0
        e = (b >> mbits) & ((1 << ebits) - 1)
        m = b & ((1 << mbits) - 1)
        if kind == "fnuz" and b == 0x80:
            out[b] = math.nan
            continue
        if kind == "fn" and e == (1 << ebits) - 1 and m == (1 << mbits) - 1:
            out[b] = math.nan
            continue
        if kind == "ieee" and e == (1 << ebits) - 1:
            out[b] = sign * math.inf if m == 0 else math.nan
            continue
        if e == 0:
            out[b] = sign * math.ldexp(m, 1 - bias - mbits)
        else:
            out[b] = sign * math.ldexp((1 << mbits) + m, e - bias - mbits)
    F8_TABLES[dtype] = out
    return out


def tensor_stats(old_raw: Buffer, old_dtype: str, new_raw: Buffer, new_dtype: str) -> TensorStats | None:
    """Statistics of new against old (same number of entries), or None when they are not
    comparable (different sizes; different non-float dtypes)."""
    old = bits.elements(old_raw, old_dtype)
    new = bits.elements(new_raw, new_dtype)
    if old.size != new.size:
        return None
    n = int(old.size)
    floats = is_float(old_dtype) and is_float(new_dtype)
    if not floats:
        if old_dtype != new_dtype:
            return None
        changed = sum(
            int(np.count_nonzero(old[s : s + CHUNK] != new[s : s + CHUNK])) for s in range(0, n, CHUNK)
        )
        return TensorStats(n, changed, changed / n if n else 0.0)
    same_dtype = old_dtype == new_dtype
    changed = nonfinite = 0
    d2 = a2 = b2 = ab = 0.0
    dmax = 0.0
    for s in range(0, n, CHUNK):
        ob, nb = old[s : s + CHUNK], new[s : s + CHUNK]
        a, b = float_view(ob, old_dtype), float_view(nb, new_dtype)
        if same_dtype:
            diff = ob != nb
        else:
            with np.errstate(invalid="ignore"):
                diff = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        changed += int(np.count_nonzero(diff))
        finite = np.isfinite(a) & np.isfinite(b)
        if not finite.all():
            nonfinite += int(finite.size - np.count_nonzero(finite))
            a, b = a[finite], b[finite]
        d = b - a
        d2 += float(d @ d)
        a2 += float(a @ a)
        b2 += float(b @ b)
        ab += float(a @ b)
        if d.size:
            dmax = max(dmax, float(np.max(np.abs(d))))
    l2d, l2a, l2b = math.sqrt(d2), math.sqrt(a2), math.sqrt(b2)
    rel = l2d / l2a if l2a > 0 else None
    cos = max(-1.0, min(1.0, ab / (l2a * l2b))) if l2a > 0 and l2b > 0 else None
    return TensorStats(n, changed, changed / n if n else 0.0, l2d, l2a, l2b, rel, dmax, cos, nonfinite)


def _delta_rows(
    old: np.ndarray, old_dtype: str, new: np.ndarray, new_dtype: str, n: int, r0: int, r1: int
) -> np.ndarray:
    a = float_view(old[r0 * n : r1 * n], old_dtype)
    b = float_view(new[r0 * n : r1 * n], new_dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        d = b - a
    d[~np.isfinite(d)] = 0.0
    rows: np.ndarray = d.reshape(r1 - r0, n)
    return rows


def probe_rank(
    old_raw: Buffer,
    old_dtype: str,
    new_raw: Buffer,
    new_dtype: str,
    shape2d: tuple[int, int],
    max_rank: int = MAX_RANK,
    seed: int = 0,
) -> int | None:
    """The rank of the delta when it is clearly low (a gap of 8x in its spectrum), else None.

    A randomized range finder with one power iteration (as codecs/lowrank.lowrank_probe), computed
    over row blocks so that memory stays O((m + n) k) beside one block of the delta.
    """
    m, n = shape2d
    old = bits.elements(old_raw, old_dtype)
    new = bits.elements(new_raw, new_dtype)
    k = min(max_rank + 8, m, n)
    if k < 4:
        return None
    step = max(1, CHUNK // n)
    blocks = [(r, min(m, r + step)) for r in range(0, m, step)]

    def rows(r0: int, r1: int) -> np.ndarray:
        return _delta_rows(old, old_dtype, new, new_dtype, n, r0, r1)

    omega = np.random.default_rng(seed).standard_normal((n, k))
    y = np.vstack([rows(r0, r1) @ omega for r0, r1 in blocks])
    q, _ = np.linalg.qr(y)
    z = np.zeros((n, k))
    for r0, r1 in blocks:
        z += rows(r0, r1).T @ q[r0:r1]
    y = np.vstack([rows(r0, r1) @ z for r0, r1 in blocks])
    q, _ = np.linalg.qr(y)
    small = np.zeros((q.shape[1], n))
    for r0, r1 in blocks:
        small += q[r0:r1].T @ rows(r0, r1)
    s = np.linalg.svd(small, compute_uv=False)
    if not np.all(np.isfinite(s)):
        return None
    r = lowrank.gap_rank(s, max_rank)
    return r if r is not None and r < min(m, n) / 2 else None


def infer_kind(
    stats: TensorStats,
    old_raw: Buffer,
    old: TensorSide,
    new_raw: Buffer,
    new: TensorSide,
    codec_rank: int | None = None,
) -> UpdateKind:
    """sparse k% / rank r / dense (see the module docstring)."""
    if stats.changed == 0:
        return UpdateKind("none")
    if stats.fraction_changed <= SPARSE_MAX:
        return UpdateKind("sparse", percent=100.0 * stats.fraction_changed)
    shape2d = lowrank.shape_2d(new.shape) if old.shape == new.shape else None
    if stats.is_float and shape2d is not None:
        if codec_rank is not None and codec_rank < min(shape2d) / 2:
            return UpdateKind("lowrank", rank=codec_rank)
        plausible = True
        if old.dtype == new.dtype and old.dtype in lowrank.DTYPES:
            plausible = lowrank.lowrank_plausible(
                bits.elements(new_raw, new.dtype),
                bits.elements(old_raw, old.dtype),
                new.dtype,
                shape2d,
                MAX_RANK,
            )
        if plausible:
            r = probe_rank(old_raw, old.dtype, new_raw, new.dtype, shape2d)
            if r is not None:
                return UpdateKind("lowrank", rank=r)
    return UpdateKind("dense")


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS on one thread: the products here are small or memory-bound, and a threaded BLAS
    on a busy machine turns a 2 ms SVD into a 300 ms one (threads spinning for cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # not installed: BLAS keeps its threads (see OPENBLAS_NUM_THREADS)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
