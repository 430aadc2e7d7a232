"""Generated checkpoints: every safetensors dtype and shape edge case, written by hand so that
tests control every byte (header padding, metadata, gaps)."""

from __future__ import annotations

import json
import struct

import numpy as np

from git_theta_like import dtypes

NUMPY = {name: np.dtype(t).type for name, t in dtypes.NUMPY_NAMES.items()}


def tensor_bytes(rng: np.random.Generator, dtype: str, shape: tuple[int, ...]) -> bytes:
    """Plausible content for a dtype: floats with special values, else random bits."""
    n = dtypes.numel(shape)
    if dtype in ("F64", "F32", "F16"):
        a = (rng.standard_normal(n) * 0.02).astype(NUMPY[dtype])
        specials = np.array([np.nan, -0.0, np.inf, -np.inf, np.finfo(NUMPY[dtype]).tiny / 4], NUMPY[dtype])
        a[: min(n, len(specials))] = specials[: min(n, len(specials))]
        return a.tobytes()
    if dtype == "BOOL":
        return (rng.random(n) > 0.5).astype(np.bool_).tobytes()
    return rng.bytes(n * dtypes.ITEMSIZE[dtype])


def safetensors_bytes(
    tensors: dict[str, tuple[str, tuple[int, ...], bytes]],
    metadata: dict[str, str] | None = None,
    pad_to: int = 8,
    gap: int = 0,
    trailing: bytes = b"",
) -> bytes:
    """A safetensors file; `gap` puts that many filler bytes between tensors."""
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    pos = 0
    blobs = []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        blobs.append(data + b"\xab" * gap)
        pos += len(data) + gap
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % pad_to)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs) + trailing


def every_dtype_file(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    tensors = {}
    shapes = [(3, 5), (), (0,), (7,), (2, 0, 3), (4, 4, 4)]
    for dtype in dtypes.ITEMSIZE:
        for i, shape in enumerate(shapes):
            tensors[f"{dtype.lower()}.t{i}"] = (dtype, shape, tensor_bytes(rng, dtype, shape))
    return safetensors_bytes(tensors, metadata={"format": "pt", "note": "every dtype"})


def small_model(seed: int = 0, scale: int = 1) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """A small transformer-like state dict in float32."""
    rng = np.random.default_rng(seed)
    d = 64 * scale
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    out["embed.weight"] = ("F32", (100, d), tensor_bytes(rng, "F32", (100, d)))
    for layer in range(3):
        for name, shape in (("attn.weight", (d, d)), ("attn.bias", (d,)), ("mlp.weight", (4 * d, d))):
            out[f"layers.{layer}.{name}"] = ("F32", shape, tensor_bytes(rng, "F32", shape))
        out[f"layers.{layer}.norm.weight"] = ("F32", (d,), np.ones(d, np.float32).tobytes())
        out[f"layers.{layer}.norm.bias"] = ("F32", (d,), np.zeros(d, np.float32).tobytes())
    return out


def finetuned(seed: int, changed: tuple[str, ...] = ()) -> bytes:
    """small_model(scale=2) as safetensors, with the named tensors nudged (a fine-tune of one
    element in 32, always the same ones: versions are small deltas of each other, whose chains
    stay within the chain-cost bound, docs/objects.md)."""
    sd = small_model(seed=0, scale=2)
    rng = np.random.default_rng(seed)
    for name in changed:
        dtype, shape, data = sd[name]
        a = np.frombuffer(data, np.float32).copy()
        a[::32] += rng.standard_normal(a[::32].size).astype(np.float32) * 1e-3
        sd[name] = (dtype, shape, a.astype(np.float32).tobytes())
    return safetensors_bytes(sd)
