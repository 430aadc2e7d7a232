"""`lowrank`: factors of the delta (a merged LoRA, say) and an XOR residual against a
reconstruction that is deterministic on every machine.

The factors are stored as integers with one power-of-two scale each (|entries| < 2**20, rank <=
2048), so every product and every partial sum of `U @ V` is an integer below 2**53: float64
matrix multiplication gives exactly the same result in any summation order, on any BLAS, CPU or
GPU. The reconstruction `base + U @ V * 2**-(su+sv)` is then rounded once to the tensor's dtype,
and the residual makes the result exact whatever the rounding left over. `lowrank_plausible` and
`lowrank_probe` find the factors when none are given (a randomized range finder)."""

from __future__ import annotations

import numpy as np

from git_theta_like import dtypes
from git_theta_like.codecs.bits import from_float64, pack_section, to_float64, unpack_section
from git_theta_like.codecs.container import ObjectHeader

NAME = "lowrank"
IS_DELTA = True
DTYPES = {"F64", "F32", "F16", "BF16"}
MAX_RANK = 2048


def factor_bits(rank: int) -> int:
    """Bits per integer factor entry such that rank * 2**(2*bits) <= 2**53 (exact float64 sums)."""
    return min(24, (53 - max(1, rank - 1).bit_length()) // 2)


def quantize_factors(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Integer factors with power-of-two scales: u ~= iu * 2**-su, v ~= iv * 2**-sv."""
    bits = factor_bits(u.shape[1])

    def q(a: np.ndarray) -> tuple[np.ndarray, int]:
        peak = float(np.max(np.abs(a))) if a.size else 0.0
        if peak == 0.0 or not np.isfinite(peak):
            return np.zeros(a.shape, np.int32), 0
        s = bits - 1 - int(np.floor(np.log2(peak)))
        ia = np.clip(np.rint(np.ldexp(a, s)), -(2**bits - 1), 2**bits - 1)
        return ia.astype(np.int32), s

    iu, su = q(u)
    iv, sv = q(v)
    return iu, su, iv, sv


def reconstruct(
    base_bits: np.ndarray,
    dtype: str,
    shape2d: tuple[int, int],
    iu: np.ndarray,
    su: int,
    iv: np.ndarray,
    sv: int,
) -> np.ndarray:
    """base + iu @ iv * 2**-(su+sv), rounded to dtype: the same bits on every machine."""
    m, n = shape2d
    bound = 2 ** factor_bits(iu.shape[1])
    if iu.shape[1] > MAX_RANK or np.abs(iu).max(initial=0) >= bound or np.abs(iv).max(initial=0) >= bound:
        raise ValueError("lowrank factors exceed the exactness bounds")
    base = to_float64(base_bits, dtype).reshape(m, n)
    delta = np.ldexp(iu.astype(np.float64) @ iv.astype(np.float64), -(su + sv))
    rec = base + delta
    finite = np.isfinite(base)
    rec = np.where(finite, rec, 0.0)
    bits = from_float64(rec.reshape(-1), dtype)
    bits[~finite.reshape(-1)] = base_bits[~finite.reshape(-1)]  # non-finite bases pass through
    return bits


def zigzag_sub(new: np.ndarray, rec: np.ndarray) -> np.ndarray:
    """(new - rec) as a signed integer, zigzag-coded: a one-ulp miss is 1 or 2, not a carry chain."""
    bits = new.dtype.itemsize * 8
    d = (new - rec).view(np.dtype(f"i{new.itemsize}"))  # modular difference, read as signed
    return np.asarray(((d << 1) ^ (d >> (bits - 1))).view(new.dtype))


def zigzag_add(rec: np.ndarray, zz: np.ndarray) -> np.ndarray:
    one = zz.dtype.type(1)
    d = (zz >> one) ^ (zz.dtype.type(0) - (zz & one))  # back to the modular difference
    return np.asarray(rec + d)


def encode(
    new: np.ndarray, base: np.ndarray, dtype: str, shape2d: tuple[int, int], u: np.ndarray, v: np.ndarray
) -> tuple[bytearray, dict[str, int]]:
    iu, su, iv, sv = quantize_factors(u, v)
    rec = reconstruct(base, dtype, shape2d, iu, su, iv, sv)
    residual = zigzag_sub(new, rec)
    payload = pack_section(iu, 4)
    payload += pack_section(iv, 4)
    payload += pack_section(residual, new.itemsize)
    m, n = shape2d
    return payload, {"rank": int(iu.shape[1]), "m": m, "n": n, "su": su, "sv": sv}


def decode_elements(payload: memoryview, base: np.ndarray, dtype: str, params: dict[str, int]) -> bytearray:
    m, n, r = int(params["m"]), int(params["n"]), int(params["rank"])
    su, sv = int(params["su"]), int(params["sv"])
    if m * n != base.size or not 0 < r <= MAX_RANK or abs(su) > 2000 or abs(sv) > 2000:
        raise ValueError("lowrank parameters do not match its base")
    iu_b, pos = unpack_section(payload, 0, m * r * 4)
    iv_b, pos = unpack_section(payload, pos, r * n * 4)
    res_b, end = unpack_section(payload, pos, base.nbytes)
    if end != len(payload) or len(iu_b) != m * r * 4 or len(iv_b) != r * n * 4:
        raise ValueError("lowrank payload sections have the wrong sizes")
    iu = np.frombuffer(iu_b, dtype=np.int32).reshape(m, r)
    iv = np.frombuffer(iv_b, dtype=np.int32).reshape(r, n)
    rec = reconstruct(base, dtype, (m, n), iu, su, iv, sv)
    res = np.frombuffer(res_b, dtype=base.dtype)
    return bytearray(zigzag_add(rec, res).tobytes())


def shape_2d(shape: tuple[int, ...]) -> tuple[int, int] | None:
    if len(shape) < 2:
        return None
    m = shape[0]
    n = dtypes.numel(shape[1:])
    return (m, n) if m and n else None


def gap_rank(s: np.ndarray, max_rank: int) -> int | None:
    """The rank at the largest gap of a spectrum, if that gap is a clear one (a ratio >= 8)."""
    if len(s) < 2 or s[0] == 0:
        return None
    limit = min(max_rank, len(s) - 1)
    ratios = s[:limit] / np.maximum(s[1 : limit + 1], s[0] * 1e-300)
    r = int(np.argmax(ratios)) + 1
    return r if ratios[r - 1] >= 8 else None


def lowrank_plausible(
    new: np.ndarray, base: np.ndarray, dtype: str, shape2d: tuple[int, int], max_rank: int = 64, seed: int = 0
) -> bool:
    """A cheap test before the SVD: a rank-r matrix has rank <= r on every sub-block, so the
    spectrum of a random (2*max_rank+16)-square block of the delta shows the same gap."""
    m, n = shape2d
    k = 2 * max_rank + 16
    if m <= k or n <= k:
        return True  # small enough to probe directly
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(m, k, replace=False))
    cols = np.sort(rng.choice(n, k, replace=False))
    a = to_float64(new.reshape(m, n)[np.ix_(rows, cols)].reshape(-1), dtype)
    b = to_float64(base.reshape(m, n)[np.ix_(rows, cols)].reshape(-1), dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        d = (a - b).reshape(k, k)
    if not np.all(np.isfinite(d)):
        return False
    return gap_rank(np.linalg.svd(d, compute_uv=False), max_rank) is not None


def lowrank_probe(
    new: np.ndarray, base: np.ndarray, dtype: str, shape2d: tuple[int, int], max_rank: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Factors (u, v) of the delta when it looks low-rank (a clear gap in the spectrum), else None.

    Randomized range finder on the float64 delta: O(m n k) with k = max_rank + 8.
    """
    m, n = shape2d
    a = to_float64(new, dtype).reshape(m, n)
    b = to_float64(base, dtype).reshape(m, n)
    with np.errstate(invalid="ignore", over="ignore"):
        delta = a - b
    if not np.all(np.isfinite(delta)):
        return None
    k = min(max_rank + 8, m, n)
    if k < 4:
        return None
    rng = np.random.default_rng(seed)
    omega = rng.standard_normal((n, k))
    q, _ = np.linalg.qr(delta @ omega)
    q, _ = np.linalg.qr(delta @ (delta.T @ q))  # one power iteration sharpens the subspace
    small = q.T @ delta
    ub, s, vt = np.linalg.svd(small, full_matrices=False)
    r = gap_rank(s, max_rank)
    if r is None:
        return None
    root = np.sqrt(s[:r])
    u = (q @ ub[:, :r]) * root
    v = root[:, None] * vt[:r]
    return u, v


def decode(header: ObjectHeader, payload: memoryview, base: np.ndarray) -> bytearray:
    return decode_elements(payload, base, header.dtype, header.params)
