"""Running strategies on tensors: bytes <-> torch, device choice, compute precision, cast back.

Tensors are computed one at a time in float32 (float64 for F64 tensors, or everywhere with
precision "float64"; every tensor in bfloat16 or float16 with those precisions, as mergekit's
`dtype`) on the chosen device, and cast back exactly to the stored dtype with torch's
round-to-nearest-even (float8 results saturate to the type's finite range).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from git_theta_like import dtypes
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import DeviceError, ThetaLikeError
from git_theta_like.extras import require
from git_theta_like.merge.strategies import base as strategy_base
from git_theta_like.merge.strategies import make_strategy, parse_value
from git_theta_like.merge.strategies.base import PRECISIONS, Blocks, Strategy, TensorContext, Value

if TYPE_CHECKING:
    import torch


# safetensors dtype name -> torch dtype attribute
TORCH_DTYPES = dtypes.TORCH_FLOAT_NAMES
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def mergeable_dtype(dtype: str) -> bool:
    """True for the float dtypes strategies can compute on (with this torch)."""
    if dtype not in TORCH_DTYPES:
        return False
    require("torch", "merge", "merging tensors")
    import torch

    return hasattr(torch, TORCH_DTYPES[dtype])


def check_device_spec(spec: str, where: str = "device") -> str:
    spec = spec.strip().lower()
    if not _DEVICE_RE.match(spec):
        raise DeviceError(f"{where}: {spec!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
    return spec


def resolve_device(spec: str | None) -> torch.device:
    """`auto` (or None): CUDA when available, else the CPU. An unavailable device is an error."""
    require("torch", "merge", "merging tensors")
    import torch

    spec = check_device_spec(spec or "auto")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec} was asked for, but torch sees no CUDA device "
                f"(torch {torch.__version__}); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device mps was asked for, but MPS is not available")
    return dev


def compute_dtype(dtype: str, precision: str = "float32") -> torch.dtype:
    import torch

    if precision not in PRECISIONS:
        raise ThetaLikeError(f"merge precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision in ("bfloat16", "float16"):  # every tensor, as mergekit's dtype converts them all
        half: torch.dtype = getattr(torch, precision)
        return half
    return torch.float64 if dtype == "F64" or precision == "float64" else torch.float32


def torch_dtype(dtype: str) -> torch.dtype:
    import torch

    if not mergeable_dtype(dtype):
        raise ThetaLikeError(f"{dtype} tensors cannot be merged arithmetically")
    dt: torch.dtype = getattr(torch, TORCH_DTYPES[dtype])
    return dt


def from_bytes(data: Buffer, dtype: str, shape: Sequence[int], device: torch.device) -> torch.Tensor:
    """A tensor over raw bytes (no copy on the CPU; inputs are never written to)."""
    import torch

    td = torch_dtype(dtype)
    if len(data) == 0:
        return torch.empty(tuple(shape), dtype=td, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only buffers: we only read them
        t = torch.frombuffer(data, dtype=torch.uint8)
    return t.view(td).reshape(tuple(shape)).to(device)


def cast_to(result: torch.Tensor, dtype: str) -> torch.Tensor:
    """The result in the stored dtype (round to nearest even; float8 saturates)."""
    import torch

    td = torch_dtype(dtype)
    if result.dtype == td:
        return result
    if td.itemsize == 1:
        fin = torch.finfo(td)
        result = torch.where(result.isnan(), result, result.clamp(fin.min, fin.max))
    return result.to(td)


def to_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes, C order, on the CPU (a view when it is already there)."""
    import torch

    flat = t.detach().contiguous().reshape(-1)
    if flat.device.type != "cpu":
        flat = flat.cpu()
    if flat.numel() == 0:
        return memoryview(b"")
    arr: Any = flat.view(torch.uint8).numpy()
    return memoryview(arr).cast("B")


def run(
    strategy: Strategy,
    dtype: str,
    shape: Sequence[int],
    base: Buffer | None,
    ours: Buffer,
    theirs: Buffer,
    *,
    name: str = "",
    fisher: tuple[tuple[Buffer, str], tuple[Buffer, str]] | None = None,
    device: torch.device | None,
    precision: str = "float32",
    into: bytearray | None = None,
) -> memoryview:
    """Merge one tensor given as raw bytes; returns the merged raw bytes in `dtype`.

    `into`: a buffer the result may be written into, block by block, when it is merged in blocks
    and has the result's size: an input's own bytes that nothing else reads (the merge producer
    hands over theirs), saving a tensor-sized allocation. Safe because each block is written
    after it is computed and a block reads only its own elements of the inputs (element-wise
    strategies; prepare_many decides on whole tensors before the first block)."""
    if strategy.bitwise:
        assert base is not None
        return memoryview(strategy.merge_bits(base, ours, theirs, dtype, name))
    assert device is not None, "a torch strategy needs a device"
    cd = compute_dtype(dtype, precision)
    used = _base_used(strategy, base)
    n = dtypes.numel(list(shape))
    if strategy.elementwise and fisher is None:
        ctx = TensorContext(name=name)
        merge = _elementwise(
            lambda b, ms: strategy.merge(b, ms[0], ms[1], ctx), dtype, used, [ours, theirs], device, cd
        )
        return _in_blocks(n, dtype, merge, into)

    def load(buf: Buffer, dt: str = dtype) -> torch.Tensor:
        return from_bytes(buf, dt, shape, device).to(cd)

    b = load(used) if used is not None else None
    o, t = load(ours), load(theirs)
    if fisher is None and (prepared := strategy.prepare_many(b, [o, t], TensorContext(name=name))):
        return _in_blocks(n, dtype, prepared, into)
    f = (load(fisher[0][0], fisher[0][1]), load(fisher[1][0], fisher[1][1])) if fisher else None
    out = strategy.merge(b, o, t, TensorContext(name=name, fisher=f))
    del b, o, t, f
    return to_bytes(cast_to(out, dtype))


def run_many(
    strategy: Strategy,
    dtype: str,
    shape: Sequence[int],
    base: Buffer | None,
    models: Sequence[Buffer],
    *,
    name: str = "",
    per_model: Sequence[Mapping[str, Value]] = (),
    device: torch.device | None,
    precision: str = "float32",
    into: bytearray | None = None,
) -> memoryview:
    """Merge one tensor of N >= 2 models (raw bytes, models[0] is ours) with
    `strategy.merge_many`; returns the merged raw bytes in `dtype` (`into`: as for run)."""
    if len(models) == 2 and not any(per_model):
        return run(
            strategy,
            dtype,
            shape,
            base,
            models[0],
            models[1],
            name=name,
            device=device,
            precision=precision,
            into=into,
        )
    if strategy.bitwise or strategy.needs_fisher:
        raise ThetaLikeError(f"strategy {strategy.name} merges two versions, not {len(models)}")
    assert device is not None, "a torch strategy needs a device"
    cd = compute_dtype(dtype, precision)
    used = _base_used(strategy, base)
    ctx = TensorContext(name=name, per_model=tuple(per_model))
    n = dtypes.numel(list(shape))
    if strategy.elementwise:
        merge = _elementwise(lambda b, ms: strategy.merge_many(b, ms, ctx), dtype, used, models, device, cd)
        return _in_blocks(n, dtype, merge, into)

    def load(buf: Buffer) -> torch.Tensor:
        return from_bytes(buf, dtype, shape, device).to(cd)

    b = load(used) if used is not None else None
    ms = [load(m) for m in models]
    if prepared := strategy.prepare_many(b, ms, ctx):
        return _in_blocks(n, dtype, prepared, into)
    out = strategy.merge_many(b, ms, ctx)
    del b, ms
    return to_bytes(cast_to(out, dtype))


def _base_used(strategy: Strategy, base: Buffer | None) -> Buffer | None:
    """The base, for a strategy that computes with it (or picks it); else None, never loaded."""
    return base if base is not None and (strategy.needs_base or strategy.selects == "base") else None


def _elementwise(
    merge: Callable[[torch.Tensor | None, list[torch.Tensor]], torch.Tensor],
    dtype: str,
    base: Buffer | None,
    models: Sequence[Buffer],
    device: torch.device,
    cd: torch.dtype,
) -> Blocks:
    """An element-wise strategy's merge of elements lo..hi, its inputs read from the raw bytes
    block by block (flat: an element-wise strategy does not look at shapes)."""
    size = dtypes.itemsize(dtype)
    base_v = memoryview(base).cast("B") if base is not None else None
    model_v = [memoryview(m).cast("B") for m in models]

    def block(lo: int, hi: int) -> torch.Tensor:
        def load(v: memoryview) -> torch.Tensor:
            return from_bytes(v[lo * size : hi * size], dtype, (hi - lo,), device).to(cd)

        return merge(load(base_v) if base_v is not None else None, [load(v) for v in model_v])

    return block


def _in_blocks(n: int, dtype: str, merge: Blocks, into: bytearray | None = None) -> memoryview:
    """The n merged elements, BLOCK_ELEMENTS at a time, each block cast back into its place in
    the result (`into` when it has the result's size, see run): the same bits as one merge of
    the whole tensor, the compute's intermediates bounded by a few blocks."""
    block = strategy_base.BLOCK_ELEMENTS
    if n <= block:
        return to_bytes(cast_to(merge(0, n), dtype))
    size = dtypes.itemsize(dtype)
    result = into if into is not None and len(into) == n * size else bytearray(n * size)
    view = memoryview(result)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        view[lo * size : hi * size] = to_bytes(cast_to(merge(lo, hi), dtype))
    return view


def merge_tensors(
    base: Any,
    ours: Any,
    theirs: Any,
    /,
    strategy: str | Strategy = "average",
    *,
    fisher: tuple[Any, Any] | None = None,
    name: str = "",
    device: str | None = None,
    precision: str = "float32",
    **params: object,
) -> Any:
    """Merge one tensor in-process, exactly as `git merge` does.

    base, ours, theirs: torch tensors or numpy arrays of one shape and float dtype (base may be
    None for strategies that do not use it), positional. `strategy` is a name (parameters as
    keywords, e.g. `merge_tensors(b, o, t, "ties", density=0.2)` or
    `merge_tensors(b, o, t, "linear", ours=0.7, theirs=0.3)`) or a Strategy. `fisher`: the diagonal
    Fisher tensors of ours and theirs (strategy "fisher"). `name` seeds DARE's masks. Returns
    the merged tensor in ours's dtype: a numpy array for numpy input, else a torch tensor on
    ours's device.
    """
    import numpy as np

    require("torch", "merge", "merging tensors")
    import torch

    strat = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, params)
    if isinstance(strategy, Strategy) and params:
        raise TypeError("pass parameters either in the Strategy or as keywords, not both")
    as_numpy = isinstance(ours, np.ndarray)

    def tt(x: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x

    o, t = tt(ours), tt(theirs)
    b = tt(base) if base is not None else None
    if (
        o.shape != t.shape
        or o.dtype != t.dtype
        or (b is not None and (b.shape, b.dtype) != (o.shape, o.dtype))
    ):
        raise ThetaLikeError("merge_tensors: base, ours and theirs must have one shape and dtype")
    if strat.selects is not None:
        picked = {"ours": o, "theirs": t, "base": b}[strat.selects]
        if picked is None:
            raise ThetaLikeError("merge_tensors: strategy base needs a base tensor")
        return picked.numpy() if as_numpy else picked
    if strat.needs_base and b is None:
        raise ThetaLikeError(f"merge_tensors: strategy {strat.name} needs the base tensor")
    if strat.bitwise:
        assert b is not None
        names = {getattr(torch, v): k for k, v in dtypes.TORCH_FLOAT_NAMES.items() if hasattr(torch, v)}
        names.update({torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8"})
        names[torch.uint8] = "U8"
        if o.dtype not in names:
            raise ThetaLikeError(f"merge_tensors: {o.dtype} tensors are not supported by {strat.name}")
        raw = strat.merge_bits(to_bytes(b), to_bytes(o), to_bytes(t), names[o.dtype], name)
        res = from_bytes(raw, names[o.dtype], tuple(o.shape), torch.device("cpu")).clone().to(o.device)
        return res.numpy() if as_numpy else res
    if not o.is_floating_point():
        raise ThetaLikeError(f"merge_tensors: {o.dtype} tensors cannot be merged arithmetically")
    dev = resolve_device(device) if device else o.device
    cd = compute_dtype("F64" if o.dtype == torch.float64 else "F32", precision)
    f = None
    if fisher is not None:
        f = (tt(fisher[0]).to(dev, cd), tt(fisher[1]).to(dev, cd))
    elif strat.needs_fisher:
        raise ThetaLikeError("merge_tensors: strategy fisher needs fisher=(fisher_ours, fisher_theirs)")
    out = strat.merge(
        b.to(dev, cd) if b is not None else None,
        o.to(dev, cd),
        t.to(dev, cd),
        TensorContext(name=name, fisher=f),
    )
    res = _cast_like(out, o)
    return res.numpy() if as_numpy else res


def _cast_like(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The result in `like`'s dtype (round to nearest even; float8 saturates) and device."""
    import torch

    if like.dtype.itemsize == 1:
        fin = torch.finfo(like.dtype)
        out = torch.where(out.isnan(), out, out.clamp(fin.min, fin.max))
    return out.to(like.dtype).to(like.device)


def merge_many_tensors(
    base: Any,
    models: Sequence[Any],
    /,
    strategy: str | Strategy = "average",
    *,
    per_model: Sequence[Mapping[str, object]] = (),
    name: str = "",
    device: str | None = None,
    precision: str = "float32",
    **params: object,
) -> Any:
    """Merge one tensor of N >= 2 models in-process, exactly as an N-way (octopus) merge does.

    base: the merge base θ₀ (None for strategies that do not use it); models: the models'
    versions (torch tensors or numpy arrays of one shape and float dtype; models[0] is ours).
    `strategy` and its parameters as for merge_tensors; `per_model`: per model, its values of
    the strategy's `per_model_params` (e.g. `[{"weight": 0.7, "density": 0.3}, {"weight": 0.3}]`;
    a missing key takes the strategy's value). `name` seeds DARE's and DELLA's masks. Returns
    the merged tensor in models[0]'s dtype (numpy for numpy input). Two models and no
    per-model values: merge_tensors(base, *models, ...), the same bits.
    """
    import numpy as np

    require("torch", "merge", "merging tensors")
    import torch

    strat = strategy if isinstance(strategy, Strategy) else make_strategy(strategy, params)
    if isinstance(strategy, Strategy) and params:
        raise TypeError("pass parameters either in the Strategy or as keywords, not both")
    if len(models) < 2:
        raise ThetaLikeError(f"merge_many_tensors: needs at least two models, not {len(models)}")
    if per_model and len(per_model) != len(models):
        raise ThetaLikeError(
            f"merge_many_tensors: {len(per_model)} per-model entries for {len(models)} models"
        )
    if len(models) == 2 and not any(per_model):
        return merge_tensors(base, models[0], models[1], strat, name=name, device=device, precision=precision)
    if strat.max_models is not None and len(models) > strat.max_models:
        raise ThetaLikeError(
            f"merge_many_tensors: strategy {strat.name} merges two versions, not {len(models)}"
        )
    if strat.selects is not None or strat.bitwise or strat.needs_fisher:
        raise ThetaLikeError(f"merge_many_tensors: strategy {strat.name} merges two versions")
    as_numpy = isinstance(models[0], np.ndarray)

    def tt(x: Any) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x

    ms = [tt(m) for m in models]
    b = tt(base) if base is not None else None
    first = ms[0]
    if any((m.shape, m.dtype) != (first.shape, first.dtype) for m in [*ms, *([b] if b is not None else [])]):
        raise ThetaLikeError("merge_many_tensors: base and models must have one shape and dtype")
    if strat.needs_base and b is None:
        raise ThetaLikeError(f"merge_many_tensors: strategy {strat.name} needs the base tensor")
    if not first.is_floating_point():
        raise ThetaLikeError(f"merge_many_tensors: {first.dtype} tensors cannot be merged arithmetically")
    dev = resolve_device(device) if device else first.device
    cd = compute_dtype("F64" if first.dtype == torch.float64 else "F32", precision)
    values = tuple(
        {k: parse_value(type(strat), k, v, f"merge_many_tensors: model {i + 1}") for k, v in d.items()}
        for i, d in enumerate(per_model)
    )
    out = strat.merge_many(
        b.to(dev, cd) if b is not None else None,
        [m.to(dev, cd) for m in ms],
        TensorContext(name=name, per_model=values),
    )
    res = _cast_like(out, first)
    return res.numpy() if as_numpy else res
