"""Which of the entries tied at the cut-off torch's CPU `argsort(w, descending=True)[:k]` picks,
found without sorting: mergekit's TIES keeps exactly the first k entries of that sort, and where
more entries than fit equal the k-th largest value t, the sort's order decides which of them.

torch sorts a CPU tensor with libstdc++'s `std::sort` (an introsort) of (value, index) pairs,
compared by value alone (`a > b`, NaN first). That algorithm is deterministic, so its choice can
be replayed: each partition step moves every element to the side it ends on, so only the side
holding position k needs following, and a step's outcome (which elements swap, where the cut
falls) follows from counting, per block, the elements that stop its two scans. The first sides
followed are not held either (_Side): a side's value at a position the step swapped is the i-th
stop of the other scan's, found from the step's per-block counts, so a block of it is computed
from a block or two of the range it was cut from. Once a side has at most n / HOLD entries (or
after MAX_STREAMED such steps) its values are held, permuted in place from then on (2 bytes an
entry for the magnitudes of a 16-bit float tensor), and of the original indices only those of
the entries equal to t; time: a few passes over the tensor, where the sort of a 23M-entry
tensor takes seconds and 0.6 GB.

The replay gives up (None: the caller sorts) where the introsort would fall back to heapsort
(its depth limit, 2·log2 n partitions). The values must hold no NaN. A test holds it to
torch.argsort on many arrays with heavy ties.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

THRESHOLD = 16  # libstdc++'s _S_threshold: ranges this small are left to the final insertion sort
BLOCK = 1 << 18  # elements scanned at a time (bounds scratch memory: 2 MiB index arrays)
# A side followed is held (its values in an array) once it has at most n / HOLD entries or
# HOLD_ANYWAY, or after MAX_STREAMED steps that streamed theirs (each streamed level reads its
# parent's blocks once more, about 1 + 2m / size of them per pass, and a replay takes about
# twice as long): on a BERT embedding's task vector (23.4M entries, sides of 20.4M, 17.6M, 9.2M,
# 5.1M ...) the largest array held goes from 78 to 19 MiB. A tensor whose sides are small is
# never streamed: the peak is the largest tensor's.
HOLD = 4
HOLD_ANYWAY = 1 << 22  # entries (16 MiB of float32)
MAX_STREAMED = 4

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


class _Streamed(_Range):
    """A range whose values are computed a block at a time (_read), never held whole: the array
    as given, or a side of a streamed range (_Side). The median's swap into position 0 is kept as
    two values on top."""

    held: _Storage
    x = 0  # position swapped with 0 (0: none)
    v0 = vx = np.float32(0)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        raise NotImplementedError

    def _swap_values(self, x: int) -> None:
        self.v0, self.vx = np.float32(self._read(0, 1)[0]), np.float32(self._read(x, x + 1)[0])
        self.x = x

    def values(self, lo: int, hi: int) -> np.ndarray:
        v = self._read(lo, hi)
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


class _Original(_Streamed):
    """The array as given (the first step)."""

    def __init__(self, span: Span, n: int, t: np.float32, idx: type, held: _Storage) -> None:
        self.span, self.size, self.held = span, n, held
        hits = [np.flatnonzero(span(lo, min(n, lo + BLOCK)) == t) + lo for lo in range(0, n, BLOCK)]
        self.tpos = np.concatenate(hits).astype(idx)
        self.tid = self.tpos.copy()

    def _read(self, lo: int, hi: int) -> np.ndarray:
        return self.span(lo, hi)


class _Step:
    """A partition step of the range r with pivot p: m swaps, the cut, and per block of r (those
    the scans count, starting at 1) how many of its elements stop the left scan (value <= p) and
    the right one (value >= p). The left scan's i-th stop A[i] (ascending) swapped with the right
    scan's i-th B[i] (descending), for i < m. Made by _partition, which sets m and cut."""

    m = cut = 0

    def __init__(self, r: _Range, p: np.float32, ca: np.ndarray, cb: np.ndarray) -> None:
        self.r, self.p = r, p
        self.cum = {False: np.concatenate([[0], np.cumsum(ca)]), True: np.concatenate([[0], np.cumsum(cb)])}
        self._blocks: dict[tuple[bool, int], np.ndarray] = {}  # the last few blocks' stops

    def is_stop(self, v: np.ndarray, right: bool) -> np.ndarray:
        return v >= self.p if right else v <= self.p

    def before(self, x: int, right: bool) -> int:
        """How many stops of a scan (right: B, else A) lie at positions 1..x-1 of r."""
        if x <= 1:
            return 0
        if x >= self.r.size:
            return int(self.cum[right][-1])
        j = (x - 1) // BLOCK
        lo = 1 + j * BLOCK
        n = int(self.cum[right][j])
        return n + int(np.count_nonzero(self.is_stop(self.r.values(lo, x), right))) if x > lo else n

    def _stops_of(self, j: int, right: bool) -> np.ndarray:
        key = (right, j)
        if key not in self._blocks:
            if len(self._blocks) >= 4:
                del self._blocks[next(iter(self._blocks))]
            lo = 1 + j * BLOCK
            v = self.r.values(lo, min(self.r.size, lo + BLOCK))
            self._blocks[key] = v[self.is_stop(v, right)]  # a copy
        return self._blocks[key]

    def stop_position(self, q: int, right: bool) -> int:
        """The position of a scan's stop q, counted by ascending position."""
        cum = self.cum[right]
        j = int(np.searchsorted(cum, q, side="right")) - 1
        lo = 1 + j * BLOCK
        v = self.r.values(lo, min(self.r.size, lo + BLOCK))
        return lo + int(np.flatnonzero(self.is_stop(v, right))[q - int(cum[j])])

    def swapped_ties(
        self, pos: np.ndarray, t: np.float32
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Of the entries equal to t at positions pos (sorted), those the swaps move, and where
        to: (left ones, their new positions), (right ones, theirs). A swapped A stop lies before
        the cut and goes to the B stop of its rank, a swapped B stop at or after it goes to the A
        stop of its rank; found from ranks, a block or two per entry, without the scan."""
        nb = int(self.cum[True][-1])
        empty = pos[:0]
        a_from = a_to = b_from = b_to = empty
        if t <= self.p:
            xs = pos[(pos >= 1) & (pos < self.cut)]
            ranks = np.array([self.before(int(x), False) for x in xs], np.int64)
            xs = xs[ranks < self.m]
            a_from = xs
            a_to = np.array(
                [self.stop_position(nb - 1 - int(q), True) for q in ranks[ranks < self.m]], pos.dtype
            )
        if t >= self.p:
            xs = pos[pos >= self.cut]
            ranks = np.array([nb - self.before(int(x) + 1, True) for x in xs], np.int64)
            xs = xs[ranks < self.m]
            b_from = xs
            b_to = np.array([self.stop_position(int(q), False) for q in ranks[ranks < self.m]], pos.dtype)
        return a_from, a_to, b_from, b_to

    def stop_values(self, q0: int, q1: int, right: bool) -> np.ndarray:
        """The values of a scan's stops q0..q1-1, counted by ascending position."""
        cum = self.cum[right]
        j = int(np.searchsorted(cum, q0, side="right")) - 1
        parts = []
        while q0 < q1:
            assert j + 1 < len(cum), "stops asked for past the range's last block"
            s = self._stops_of(j, right)
            a, b = q0 - int(cum[j]), min(len(s), q1 - int(cum[j]))
            if b > a:
                parts.append(s[a:b])
                q0 += b - a
            j += 1
        return np.concatenate(parts)


class _Side(_Streamed):
    """One side of a streamed range after its partition step, not held: a block of it is read
    from the same positions of the range, with the values the step's swaps brought in taken from
    where they came from (the left side's A[i] holds B[i]'s value, the right side's B[i] A[i]'s)."""

    def __init__(self, step: _Step, left: bool) -> None:
        self.step, self.left = step, left
        parent = step.r
        assert isinstance(parent, _Streamed), "only a streamed range's sides are streamed"
        self.off = 0 if left else step.cut
        self.size = step.cut if left else parent.size - step.cut
        self.held = parent.held
        self.tpos, self.tid = parent.tpos[:0], parent.tid[:0]
        self._rank: dict[int, int] = {}  # parent position -> stops of the scan swapped here before it

    def _read(self, lo: int, hi: int) -> np.ndarray:
        st = self.step
        x0, x1 = self.off + lo, self.off + hi
        v = st.r.values(x0, x1)  # the parent's, maybe a view of the caller's array: copied if changed
        right = not self.left  # the left side's swapped positions are A stops, the right's B
        first = 1 if x0 == 0 else 0  # position 0, the pivot, stops no scan
        idx = np.flatnonzero(st.is_stop(v[first:], right)) + first
        if len(self._rank) > 64:
            self._rank.clear()
        if self.left:  # stops counted from the left: ranks r0, r0 + 1, ... ascending
            r0 = self._rank.get(x0)
            if r0 is None:
                r0 = self._rank[x1] - len(idx) if x1 in self._rank else st.before(x0, False)
            self._rank[x0], self._rank[x1] = r0, r0 + len(idx)
            cnt = max(0, min(len(idx), st.m - r0))
            if cnt:  # A[r0 + q] holds B[r0 + q]'s value: B's ranks run down from the top
                nb = int(st.cum[True][-1])
                v = v.copy()
                v[idx[:cnt]] = st.stop_values(nb - r0 - cnt, nb - r0, True)[::-1]
        else:  # B stops: the highest position has the lowest rank, j_hi
            total = int(st.cum[True][-1])
            j_hi = self._rank.get(x1)
            if j_hi is None:
                j_hi = self._rank[x0] - len(idx) if x0 in self._rank else total - st.before(x1, True)
            self._rank[x1], self._rank[x0] = j_hi, j_hi + len(idx)
            cnt = max(0, min(len(idx), st.m - j_hi))
            if cnt:  # B[j_hi + q] (the q-th from the top here) holds A[j_hi + q]'s value
                v = v.copy()
                v[idx[len(idx) - cnt :]] = st.stop_values(j_hi, j_hi + cnt, False)[::-1]
        return v


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


def _partition(r: _Range, p: np.float32) -> _Step:
    """The step (M, cut) of std::__unguarded_partition(first + 1, last, first) with pivot value p at
    position 0. With A the positions its left scan stops at (value <= p, ascending) and B its
    right scan's (value >= p, descending), swap m pairs A[m] and B[m] while A[m] < B[m]; that
    count M is the largest min(#A below x, #B at or above x) over positions x, found from
    per-block counts and then within the block where the two counts cross. The left scan ends,
    and the cut falls, at A[M] or at B[M-1] (which holds an A-value since the swap). The step
    keeps the per-block counts of A and B (blocks of BLOCK from position 1)."""
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

    st = _Step(r, p, ca, cb)
    st.m = m
    if m == 0:
        st.cut = st.stop_position(0, False)
        return st
    st.cut = st.stop_position(int(cb.sum()) - m, True)  # B[m - 1], counted from the top
    if m < ca.sum():
        st.cut = min(st.cut, st.stop_position(m, False))
    return st


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
    streamed = 0
    kept: list[np.ndarray] = []
    while r.size > THRESHOLD:  # std::__introsort_loop, following the side that holds position k
        if not len(r.tpos):
            return _sorted(kept)  # no entry equal to t is left to place
        if depth == 0:
            return None  # heapsort from here: not replayed
        depth -= 1
        r.swap_first(_median_position(r))
        p = r.point(0)
        st = _partition(r, p)
        m, cut = st.m, st.cut
        # The side followed (None: the first k end at the cut): streamed while it is large, else
        # held and written as the swaps come (a _Held's side shares its values, and every
        # position is read before it is written).
        lo, hi = (0, cut) if k < cut else (cut, r.size)
        side: _Range | None = None
        if k == cut:
            pass
        elif isinstance(r, _Streamed) and hi - lo > max(n // HOLD, HOLD_ANYWAY) and streamed < MAX_STREAMED:
            side = _Side(st, left=k < cut)
            streamed += 1
        else:
            side = r.side(lo, hi)
        write = side.write if isinstance(side, _Held) else None
        # the entries equal to t that the swaps take out of each side, and bring in (with ids)
        left_out: list[np.ndarray] = []
        right_out: list[np.ndarray] = []
        left_in: list[tuple[np.ndarray, np.ndarray]] = []
        right_in: list[tuple[np.ndarray, np.ndarray]] = []
        # nothing to write and few such entries: track them by rank rather than scan the swaps
        by_rank = write is None and 2 * len(r.tpos) < r.size // BLOCK
        if by_rank:
            a_from, a_to, b_from, b_to = st.swapped_ties(r.tpos, t)
            if len(a_from):
                left_out.append(a_from)
                right_in.append((a_to, r.id_at(a_from)))
            if len(b_from):
                right_out.append(b_from)
                left_in.append((b_to, r.id_at(b_from)))
        for (a_pos, a_val), (b_pos, b_val) in () if by_rank else _pairs(r, p, m):
            if write is not None and k < cut:
                write(a_pos, b_val)
            elif write is not None:
                write(b_pos - cut, a_val)
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
