"""Side-loaded LoRA adapters: exact low-rank factors for `git theta-like add --lora`.

A PEFT adapter (`adapter_model.safetensors` + `adapter_config.json`) holds, per adapted module,
`<module>.lora_A.weight` (r x in) and `<module>.lora_B.weight` (out x r); merging it changes the
module's weight by `scaling * B @ A` with `scaling = lora_alpha / r` (`/ sqrt(r)` with rsLoRA).
Given these factors the delta codec skips the SVD and uses them directly.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from git_theta_like.codecs import bits
from git_theta_like.errors import ThetaLikeError
from git_theta_like.formats import ByteReader, Tensor
from git_theta_like.formats.safetensors import SafetensorsFormat

Factors = dict[str, tuple[np.ndarray, np.ndarray]]


def _tensors(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for ev in SafetensorsFormat().split(ByteReader(io.BytesIO(path.read_bytes()))):
        if isinstance(ev, Tensor):
            elems = bits.elements(ev.data, ev.info.dtype)
            out[ev.info.name] = bits.to_float64(elems, ev.info.dtype).reshape(ev.info.shape)
    return out


def load_adapter(path: str | Path) -> Factors:
    """Factors (u, v), delta = u @ v, keyed by the adapted weight's name (`<module>.weight`)."""
    p = Path(path)
    weights = p / "adapter_model.safetensors" if p.is_dir() else p
    config_path = weights.parent / "adapter_config.json"
    if not weights.is_file():
        raise ThetaLikeError(f"LoRA adapter {weights} not found")
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    tensors = _tensors(weights)
    factors: Factors = {}
    for name, a in tensors.items():
        if ".lora_A." not in name:
            continue
        module = name.split(".lora_A.")[0]
        b = tensors.get(name.replace(".lora_A.", ".lora_B."))
        if b is None or a.ndim != 2 or b.ndim != 2:
            continue
        r = a.shape[0]
        alpha = float(config.get("lora_alpha") or r)
        rank_pattern = config.get("rank_pattern") or {}
        alpha_pattern = config.get("alpha_pattern") or {}
        for key, val in alpha_pattern.items():
            if module.endswith(key):
                alpha = float(val)
        for key, val in rank_pattern.items():
            if module.endswith(key):
                r = int(val)
        scaling = alpha / (math.sqrt(r) if config.get("use_rslora") else r)
        u, v = b * scaling, a
        if config.get("fan_in_fan_out"):
            u, v = v.T, u.T
        for prefix in ("base_model.model.", "base_model."):
            if module.startswith(prefix):
                module = module[len(prefix) :]
                break
        factors[module + ".weight"] = (u, v)
    if not factors:
        raise ThetaLikeError(f"{weights} holds no lora_A/lora_B pairs")
    return factors


def match(factors: Factors, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The factors for a checkpoint tensor name, allowing a prefix on either side."""
    if name in factors:
        return factors[name]
    found = [f for k, f in factors.items() if name.endswith("." + k) or k.endswith("." + name)]
    return found[0] if len(found) == 1 else None
