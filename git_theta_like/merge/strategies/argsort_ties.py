"""Which of the entries tied at the cut-off torch's CPU `argsort(w, descending=True)[:k]` picks,
found without sorting: mergekit's TIES keeps exactly the first k entries of that sort, and where
more entries than fit equal the k-th largest value t, the sort's order decides which of them.

torch sorts a CPU tensor with libstdc++'s `std::sort` (an introsort) of (value, index) pairs,
compared by value alone (`a > b`, NaN first). That algorithm is deterministic, so its choice can
be replayed: each partition step moves every element to the side it ends on, so only the side
holding position k needs following, and a step's outcome (which elements swap, where the cut
falls) follows from counting, per block, the elements that stop its two scans. Memory: the side
followed, as indices and values (half the tensor after the first step, then in place); time:
a few passes over the tensor, where the sort of a 23M-entry tensor takes seconds and 0.6 GB.

The replay gives up (None: the caller sorts) where the introsort would fall back to heapsort
(its depth limit, 2·log2 n partitions). The values must hold no NaN. A test holds it to
torch.argsort on many arrays with heavy ties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

THRESHOLD = 16  # libstdc++'s _S_threshold: ranges this small are left to the final insertion sort
BLOCK = 1 << 20  # elements scanned at a time (bounds scratch memory)

# (lo, hi) -> the float32 values of elements lo..hi of the array sorted (a copy or a view)
Span = Callable[[int, int], np.ndarray]
# original indices -> their float32 values
Gather = Callable[[np.ndarray], np.ndarray]
# a chunk of positions where a scan stops, and their values
Stops = tuple[np.ndarray, np.ndarray]


class _Range:
    """The part of the array that the followed partition holds: positions 0..size of it."""

    size: int

    def values(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError

    def point(self, i: int) -> np.float32:
        return np.float32(self.values(i, i + 1)[0])

    def swap_first(self, x: int) -> None:
        """Swap positions 0 and x (the median moved to the front)."""
        raise NotImplementedError

    def ids(self, pos: np.ndarray) -> np.ndarray:
        """The original indices of the elements at positions pos."""
        raise NotImplementedError

    def side(self, lo: int, hi: int) -> _Held:
        """Positions lo..hi as a range of their own (sharing memory where it can)."""
        raise NotImplementedError


class _Original(_Range):
    """The array as given (the first step): values read a block at a time, never held whole."""

    def __init__(self, span: Span, gather: Gather, n: int, idx: type) -> None:
        self.span, self.gather, self.size, self.idx = span, gather, n, idx
        self.x = 0  # position swapped with 0 (0: none)
        self.v0 = self.vx = np.float32(0)

    def swap_first(self, x: int) -> None:
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

    def ids(self, pos: np.ndarray) -> np.ndarray:
        out: np.ndarray = pos.astype(self.idx)
        out[pos == 0], out[pos == self.x] = self.x, 0
        return out

    def side(self, lo: int, hi: int) -> _Held:
        ids: np.ndarray = np.arange(lo, hi, dtype=self.idx)
        for a, b in ((0, self.x), (self.x, 0)):
            if lo <= a < hi:
                ids[a - lo] = b
        return _Held(ids, self.gather)


class _Held(_Range):
    """A range held as an array of original indices, permuted in place; values gathered."""

    def __init__(self, ids: np.ndarray, gather: Gather) -> None:
        self.id_of, self.gather, self.size = ids, gather, len(ids)

    def swap_first(self, x: int) -> None:
        a = self.id_of
        a[0], a[x] = a[x], a[0]

    def values(self, lo: int, hi: int) -> np.ndarray:
        return self.gather(self.id_of[lo:hi])

    def ids(self, pos: np.ndarray) -> np.ndarray:
        out: np.ndarray = self.id_of[pos]
        return out

    def side(self, lo: int, hi: int) -> _Held:
        return _Held(self.id_of[lo:hi], self.gather)


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
    time, with their values."""
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
    a = a_at[j - 1] + np.concatenate([[0], np.cumsum(v <= p)])
    b = b_at[j - 1] - np.concatenate([[0], np.cumsum(v >= p)])
    m = int(np.minimum(a, b).max())

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


def tied_in_top_k(span: Span, gather: Gather, n: int, k: int, t: np.floating) -> np.ndarray | None:
    """The indices (sorted, int64) of the entries equal to t among the first k of
    torch.argsort(w, descending=True) on the CPU, w the n float32 values (no NaN) that span
    gives by position and gather by index, t their k-th largest, 0 < k < n. Every entry above
    t is among those k, none below it. None where the sort would switch to heapsort (the caller
    sorts)."""
    if not 0 < k < n:
        raise ValueError(f"k = {k} outside 1..{n - 1}")
    t = np.float32(t)
    idx = np.int32 if n < 2**31 else np.int64
    r: _Range = _Original(span, gather, n, idx)
    depth = 2 * (n.bit_length() - 1)  # std::sort's depth limit, 2 * floor(log2 n)
    kept: list[np.ndarray] = []
    while r.size > THRESHOLD:  # std::__introsort_loop, following the side that holds position k
        if depth == 0:
            return None  # heapsort from here: not replayed
        depth -= 1
        r.swap_first(_median_position(r))
        p = r.point(0)
        m, cut = _partition(r, p)
        if k < cut:  # the first k are on the left: follow it
            side = r.side(0, cut)
            for (a_pos, _), (b_pos, _) in _pairs(r, p, m):
                side.id_of[a_pos] = r.ids(b_pos)
            r = side
            continue
        # The left side is among the first k: its entries equal to t are kept. t <= p (the
        # left side's smallest value is the pivot's); left in place there are the pivot and
        # values > p (every value <= p was swapped out, for one >= p).
        if t == p:
            kept.append(r.ids(np.zeros(1, np.int64)))
        if k == cut:
            for _, (b_pos, b_val) in _pairs(r, p, m):
                kept.append(r.ids(b_pos[b_val == t]))
            return _sorted(kept)
        side = r.side(cut, r.size)
        for (a_pos, _), (b_pos, b_val) in _pairs(r, p, m):
            kept.append(r.ids(b_pos[b_val == t]))  # those the swaps brought in
            side.id_of[b_pos - cut] = r.ids(a_pos)
        r, k = side, k - cut
    # the final insertion sort: a range this small ends sorted stably, as the steps left it
    ids, vals = r.side(0, r.size).id_of, r.values(0, r.size)
    first = np.argsort(-vals, kind="stable")[:k]
    kept.append(ids[first][vals[first] == t])
    return _sorted(kept)


def _sorted(parts: list[np.ndarray]) -> np.ndarray:
    out = np.concatenate([np.asarray(p, np.int64) for p in parts]) if parts else np.empty(0, np.int64)
    out.sort()
    return out
