"""`patch`: the answer git's history replays need (cherry-pick, rebase, revert, am): the change
from base to theirs applied to ours, ours + (theirs - base), element by element.

It works on the tensors' bits, in numpy, without torch: an entry only one side changed keeps that
side's bits exactly (so disjoint edits - sparse updates, BitFit, LoRA on different layers -
replay exactly, like non-overlapping hunks of text); an entry both sides changed to the same bits
keeps them; an entry both changed differently is ours + (theirs - base) computed in float64 and
rounded once to the dtype (F64, F32, F16, BF16), or in exact integer arithmetic for integer
dtypes (a result out of the dtype's range is a conflict). Other dtypes (8-bit floats, bool,
opaque bytes) replay disjoint changes and conflict on overlapping ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from git_theta_like import dtypes
from git_theta_like.codecs import bits
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import MergeConflictError
from git_theta_like.merge.strategies import base as strategy_base
from git_theta_like.merge.strategies.base import Strategy, TensorContext

if TYPE_CHECKING:
    from torch import Tensor

ARITHMETIC_FLOATS = frozenset({"F64", "F32", "F16", "BF16"})
INTEGERS: dict[str, type[np.integer[Any]]] = {
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "U8": np.uint8,
    "U16": np.uint16,
    "U32": np.uint32,
    "U64": np.uint64,
}


class Patch(Strategy):
    name = "patch"
    summary = "ours + (theirs - base), entry by entry, exact where only one side changed (history replays)"
    needs_base = True
    bitwise: ClassVar[bool] = True

    def merge_bits(self, base: Buffer, ours: Buffer, theirs: Buffer, dtype: str, name: str = "") -> Buffer:
        b, o, t = (bits.elements(x, dtype) for x in (base, ours, theirs))
        if not (b.shape == o.shape == t.shape):
            raise MergeConflictError(f"tensor {name!r}: base, ours and theirs differ in size")
        out = o.copy()
        # entry by entry, so block by block: masks and float64 values for one block at a time
        step = strategy_base.BLOCK_ELEMENTS
        unreplayable = 0  # entries both sides changed, in a dtype without arithmetic
        for s in range(0, len(o), step):
            unreplayable += _patch_block(
                b[s : s + step], o[s : s + step], t[s : s + step], out[s : s + step], dtype, name
            )
        if unreplayable:
            raise MergeConflictError(
                f"tensor {name!r}: {unreplayable} {dtype} entries changed on both sides to different "
                f"values ({dtypes.itemsize(dtype)}-byte elements have no arithmetic to replay a change "
                "onto another)"
            )
        return out.data.cast("B")

    def merge(self, base: Tensor | None, ours: Tensor, theirs: Tensor, ctx: TensorContext) -> Tensor:
        raise AssertionError("patch merges bits (merge_bits), never torch tensors")


def _patch_block(b: np.ndarray, o: np.ndarray, t: np.ndarray, out: np.ndarray, dtype: str, name: str) -> int:
    """One block of merge_bits, into out (ours's bits on entry); returns how many entries both
    sides changed differently where the dtype has no arithmetic (a conflict, counted whole)."""
    ours_changed = o != b
    theirs_changed = t != b
    only_theirs = theirs_changed & ~ours_changed
    out[only_theirs] = t[only_theirs]
    both = ours_changed & theirs_changed & (o != t)
    if not both.any():
        return 0
    if dtype not in ARITHMETIC_FLOATS and dtype not in INTEGERS:
        return int(both.sum())
    out[both] = _combine(b[both], o[both], t[both], dtype, name)
    return 0


def _combine(b: np.ndarray, o: np.ndarray, t: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """ours + (theirs - base) for the entries both sides changed differently (as element bits)."""
    if dtype in ARITHMETIC_FLOATS:
        x = bits.to_float64(o, dtype) + (bits.to_float64(t, dtype) - bits.to_float64(b, dtype))
        return bits.from_float64(x, dtype)
    if dtype in INTEGERS:
        kind = INTEGERS[dtype]
        info = np.iinfo(kind)
        vals = [
            int(oo) + (int(tt) - int(bb))
            for bb, oo, tt in zip(
                b.view(kind).tolist(), o.view(kind).tolist(), t.view(kind).tolist(), strict=True
            )
        ]
        if any(v < info.min or v > info.max for v in vals):
            raise MergeConflictError(
                f"tensor {name!r}: ours + (theirs - base) leaves the range of {dtype} for some entries"
            )
        return np.array(vals, dtype=kind).view(o.dtype)
    raise AssertionError(dtype)  # merge_bits counts these as conflicts
