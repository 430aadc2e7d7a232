"""Which of the entries tied at the cut-off torch's CPU `argsort(w, descending=True)[:k]` picks,
found without sorting: mergekit's TIES keeps exactly the first k entries of that sort, and where
more entries than fit equal the k-th largest value t, the sort's order decides which of them.

torch sorts a CPU tensor with libstdc++'s `std::sort` (an introsort) of (value, index) pairs,
compared by value alone (`a > b`, NaN first). That algorithm is deterministic, so its choice can
be replayed: each partition step moves every element to the side it ends on, so only the side
holding position k needs following, and a step's outcome (which elements swap, where the cut
falls) follows from counting, per block, the elements that stop its two scans. Only the values
of the side followed are held (half the tensor after the first step, permuted in place after
that; 2 bytes an entry for the magnitudes of a 16-bit float tensor) and, of the original
indices, only those of the entries equal to t; time: a few passes over the tensor, where the
sort of a 23M-entry tensor takes seconds and 0.6 GB.

The replay gives up (None: the caller sorts) where the introsort would fall back to heapsort
(its depth limit, 2·log2 n partitions). The values must hold no NaN. A test holds it to
torch.argsort on many arrays with heavy ties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

THRESHOLD = 16  # libstdc++'s _S_threshold: ranges this small are left to the final insertion sort
BLOCK = 1 << 18  # elements scanned at a time (bounds scratch memory: 2 MiB index arrays)

# (lo, hi) -> the float32 values of elements lo..hi of the array sorted (a copy or a view)
Span = Callable[[int, int], np.ndarray]
# a chunk of positions where a scan stops, and their values
Stops = tuple[np.ndarray, np.ndarray]


class _Storage:
    """How a side's values are held: float32, or, where every value is a 16-bit float's
    (the magnitudes of a bfloat16 or float16 task vector), in 2 bytes each, exactly."""

    def __init__(self, dtype: str) -> None:
        self.dtype = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}[dtype]
        self.bf16 = dtype == "bfloat16"

    def encode(self, v: np.ndarray) -> np.ndarray:
        if self.bf16:
            return (v.view(np.uint32) >> 16).astype(np.uint16)
        return v.astype(self.dtype, copy=False)

    def decode(self, h: np.ndarray) -> np.ndarray:
        if self.bf16:
            return (h.astype(np.uint32) << 16).view(np.float32)
        return h.astype(np.float32, copy=False)


class _Range:
    """The part of the array that the followed partition holds (positions 0..size of it), and
    where in it the entries equal to t are: tpos (sorted positions), tid (their original indices)."""

    size: int
    tpos: np.ndarray
    tid: np.ndarray

    def values(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError

    def _swap_values(self, x: int) -> None:
        raise NotImplementedError

    def side(self, lo: int, hi: int) -> _Held:
        """Positions lo..hi as a range of their own (sharing memory where it can); its ties are
        the caller's to set (ties_in), once the partition's swaps are known."""
        raise NotImplementedError

    def point(self, i: int) -> np.float32:
        return np.float32(self.values(i, i + 1)[0])

    def swap_first(self, x: int) -> None:
        """Swap positions 0 and x (the median moved to the front)."""
        self._swap_values(x)
        j0, jx = np.searchsorted(self.tpos, (0, x))
        at0 = j0 < len(self.tpos) and self.tpos[j0] == 0
        atx = jx < len(self.tpos) and self.tpos[jx] == x
        if at0 and atx:
            self.tid[j0], self.tid[jx] = self.tid[jx], self.tid[j0]
        elif at0 or atx:
            self.tpos[j0 if at0 else jx] = x if at0 else 0
            order = np.argsort(self.tpos, kind="stable")
            self.tpos, self.tid = self.tpos[order], self.tid[order]

    def id_at(self, pos: np.ndarray) -> np.ndarray:
        """The original indices of the entries equal to t at positions pos."""
        found: np.ndarray = self.tid[np.searchsorted(self.tpos, pos)]
        return found

    def ties_in(
        self, lo: int, hi: int, leave: list[np.ndarray], come: list[tuple[np.ndarray, np.ndarray]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ties of positions lo..hi after the swaps, relative to lo: those there, less the
        `leave` positions swapped out, and the (position, index) pairs that `come` in."""
        a, b = np.searchsorted(self.tpos, (lo, hi))
        pos, ids = self.tpos[a:b], self.tid[a:b]
        if leave:
            stay = ~np.isin(pos, np.concatenate(leave))
            pos, ids = pos[stay], ids[stay]
        if come:
            pos = np.concatenate([pos, *(c[0] for c in come)])
            ids = np.concatenate([ids, *(c[1] for c in come)])
            order = np.argsort(pos, kind="stable")
            pos, ids = pos[order], ids[order]
        return (pos - lo).astype(self.tpos.dtype), ids


class _Original(_Range):
    """The array as given (the first step): values read a block at a time, never held whole."""

    def __init__(self, span: Span, n: int, t: np.float32, idx: type, held: _Storage) -> None:
        self.span, self.size, self.held = span, n, held
        self.x = 0  # position swapped with 0 (0: none)
        self.v0 = self.vx = np.float32(0)
        hits = [np.flatnonzero(span(lo, min(n, lo + BLOCK)) == t) + lo for lo in range(0, n, BLOCK)]
        self.tpos = np.concatenate(hits).astype(idx)
        self.tid = self.tpos.copy()

    def _swap_values(self, x: int) -> None:
        self.v0, self.vx = np.float32(self.span(0, 1)[0]), np.float32(self.span(x, x + 1)[0])
        self.x = x

    def values(self, lo: int, hi: int) -> np.ndarray:
        v = self.span(lo, hi)
        if self.x and (lo == 0 or lo <= self.x < hi):
            v = v.copy()
            if lo == 0:
                v[0] = self.vx
            if lo <= self.x < hi:
                v[self.x - lo] = self.v0
        return v

    def side(self, lo: int, hi: int) -> _Held:
        vals = np.empty(hi - lo, self.held.dtype)
        for a in range(lo, hi, BLOCK):
            b = min(hi, a + BLOCK)
            vals[a - lo : b - lo] = self.held.encode(self.values(a, b))
        return _Held(vals, self.tpos[:0], self.tid[:0], self.held)


class _Held(_Range):
    """A range held as an array of its values (as `held` keeps them), permuted in place."""

    def __init__(self, vals: np.ndarray, tpos: np.ndarray, tid: np.ndarray, held: _Storage) -> None:
        self.vals, self.size, self.tpos, self.tid, self.held = vals, len(vals), tpos, tid, held

    def _swap_values(self, x: int) -> None:
        v = self.vals
        v[0], v[x] = v[x], v[0]

    def values(self, lo: int, hi: int) -> np.ndarray:
        return self.held.decode(self.vals[lo:hi])

    def write(self, pos: np.ndarray, v: np.ndarray) -> None:
        self.vals[pos] = self.held.encode(v)

    def side(self, lo: int, hi: int) -> _Held:
        return _Held(self.vals[lo:hi], self.tpos[:0], self.tid[:0], self.held)


def _median_position(r: _Range) -> int:
    """std::__move_median_to_first(first, first + 1, mid, last - 1): the position whose element
    it moves to the front, by its exact chain of comparisons (comp(a, b): a > b)."""
    a, b, c = 1, r.size // 2, r.size - 1
    va, vb, vc = r.point(a), r.point(b), r.point(c)
    if va > vb:
        if vb > vc:
            return b
        return c if va > vc else a
    if va > vc:
        return a
    return c if vb > vc else b


def _stops(r: _Range, p: np.float32, count: int, from_right: bool) -> Iterator[Stops]:
    """The first `count` positions in 1..size where the partition's left scan stops (value <= p,
    ascending) or, from_right, where its right scan stops (value >= p, descending), a block at a
    time, with their values (copies)."""
    starts = range(1, r.size, BLOCK)
    for lo in reversed(starts) if from_right else starts:
        if count <= 0:
            return
        v = r.values(lo, min(r.size, lo + BLOCK))
        hit = np.flatnonzero(v >= p if from_right else v <= p)
        hit = hit[::-1][:count] if from_right else hit[:count]
        if len(hit):
            count -= len(hit)
            yield hit + lo, v[hit]


def _pairs(r: _Range, p: np.float32, m: int) -> Iterator[tuple[Stops, Stops]]:
    """The m swaps of the partition, as chunks of (left positions, values), (right ones)."""
    lefts, rights = _stops(r, p, m, False), _stops(r, p, m, True)
    empty = (np.empty(0, np.int64), np.empty(0, np.float32))
    a, b = empty, empty
    while True:
        if not len(a[0]):
            a = next(lefts, empty)
        if not len(b[0]):
            b = next(rights, empty)
        n = min(len(a[0]), len(b[0]))
        if n == 0:
            return
        yield (a[0][:n], a[1][:n]), (b[0][:n], b[1][:n])
        a, b = (a[0][n:], a[1][n:]), (b[0][n:], b[1][n:])


def _partition(r: _Range, p: np.float32) -> tuple[int, int]:
    """(M, cut) of std::__unguarded_partition(first + 1, last, first) with pivot value p at
    position 0. With A the positions its left scan stops at (value <= p, ascending) and B its
    right scan's (value >= p, descending), swap m pairs A[m] and B[m] while A[m] < B[m]; that
    count M is the largest min(#A below x, #B at or above x) over positions x, found from
    per-block counts and then within the block where the two counts cross. The left scan ends,
    and the cut falls, at A[M] or at B[M-1] (which holds an A-value since the swap)."""
    starts = list(range(1, r.size, BLOCK))
    ca = np.zeros(len(starts), np.int64)
    cb = np.zeros(len(starts), np.int64)
    for j, lo in enumerate(starts):
        v = r.values(lo, min(r.size, lo + BLOCK))
        ca[j], cb[j] = np.count_nonzero(v <= p), np.count_nonzero(v >= p)
    a_at = np.concatenate([[0], np.cumsum(ca)])  # #A below each block's start (and the end)
    b_at = cb.sum() - np.concatenate([[0], np.cumsum(cb)])  # #B at or above it
    j = int(np.flatnonzero(a_at >= b_at)[0])  # a_at[0] = 0 < b_at[0]: the median is in B
    lo = starts[j - 1]
    v = r.values(lo, min(r.size, lo + BLOCK))
    a = np.cumsum(v <= p, dtype=np.int32)  # after each position of the block (before it: the
    b = np.cumsum(v >= p, dtype=np.int32)  # block's start, counted in a_at, b_at already)
    m = max(
        int(min(a_at[j - 1], b_at[j - 1])),
        int(np.minimum(a_at[j - 1] + a, b_at[j - 1] - b).max()),
    )

    def nth(counts: np.ndarray, i: int, right: bool) -> int:  # the i-th stop of a scan
        if right:
            i = int(counts.sum()) - 1 - i  # counted from the left
        j = int(np.searchsorted(np.cumsum(counts), i, side="right"))
        lo = starts[j]
        v = r.values(lo, min(r.size, lo + BLOCK))
        hits = np.flatnonzero(v >= p if right else v <= p)
        return lo + int(hits[i - int(counts[:j].sum())])

    if m == 0:
        return 0, nth(ca, 0, False)
    cut = nth(cb, m - 1, True)
    if m < ca.sum():
        cut = min(cut, nth(ca, m, False))
    return m, cut


def depth_limit(n: int) -> int:
    """std::sort's depth limit: 2 * floor(log2 n) partition steps, then heapsort."""
    return 2 * (n.bit_length() - 1)


def tied_in_top_k(span: Span, n: int, k: int, t: np.floating, held: str = "float32") -> np.ndarray | None:
    """The indices (sorted, int64) of the entries equal to t among the first k of
    torch.argsort(w, descending=True) on the CPU, w the n float32 values (no NaN) that span
    gives, t their k-th largest, 0 < k < n. Every entry above t is among those k, none below it.
    `held`: "bfloat16" or "float16" where every value is one (the side followed then takes 2
    bytes an entry). None where the sort would switch to heapsort (the caller sorts)."""
    if not 0 < k < n:
        raise ValueError(f"k = {k} outside 1..{n - 1}")
    t = np.float32(t)
    r: _Range = _Original(span, n, t, np.int32 if n < 2**31 else np.int64, _Storage(held))
    depth = depth_limit(n)
    kept: list[np.ndarray] = []
    while r.size > THRESHOLD:  # std::__introsort_loop, following the side that holds position k
        if not len(r.tpos):
            return _sorted(kept)  # no entry equal to t is left to place
        if depth == 0:
            return None  # heapsort from here: not replayed
        depth -= 1
        r.swap_first(_median_position(r))
        p = r.point(0)
        m, cut = _partition(r, p)
        # The side followed (None: the first k end at the cut) is written as the swaps come: a
        # _Held's side shares its values, and every position is read before it is written.
        if k < cut:
            side: _Held | None = r.side(0, cut)
        else:
            side = r.side(cut, r.size) if k > cut else None
        # the entries equal to t that the swaps take out of each side, and bring in (with ids)
        left_out: list[np.ndarray] = []
        right_out: list[np.ndarray] = []
        left_in: list[tuple[np.ndarray, np.ndarray]] = []
        right_in: list[tuple[np.ndarray, np.ndarray]] = []
        for (a_pos, a_val), (b_pos, b_val) in _pairs(r, p, m):
            if side is not None and k < cut:
                side.write(a_pos, b_val)
            elif side is not None:
                side.write(b_pos - cut, a_val)
            ta, tb = a_val == t, b_val == t
            if ta.any():
                left_out.append(a_pos[ta])
                right_in.append((b_pos[ta], r.id_at(a_pos[ta])))
            if tb.any():
                right_out.append(b_pos[tb])
                left_in.append((a_pos[tb], r.id_at(b_pos[tb])))
        left = r.ties_in(0, cut, left_out, left_in)
        if k < cut:
            assert side is not None
            side.tpos, side.tid = left
            r = side
            continue
        kept.append(left[1])  # the left side is among the first k, its entries equal to t too
        if side is None:
            return _sorted(kept)
        side.tpos, side.tid = r.ties_in(cut, r.size, right_out, right_in)
        r, k = side, k - cut
    # the final insertion sort: a range this small ends sorted stably, as the steps left it
    vals = r.values(0, r.size)
    first = np.argsort(-vals, kind="stable")[:k]
    kept.append(r.id_at(first[vals[first] == t]))
    return _sorted(kept)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    out = np.concatenate([np.asarray(p, np.int64) for p in parts]) if parts else np.empty(0, np.int64)
    out.sort()
    return out
