"""Measure git-theta-like against plain git-lfs on the same files, in one run.

    scripts/bench [--repeat N] [--sections foundation] [--out DIR]

Each section builds its workload, runs the same git commands in a fresh repository per tool and
repetition, and prints a Markdown table of medians with the ratio git-theta-like / git-lfs.
The filter processes of both tools run under a small wrapper that records their peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
MEMWRAP = HERE / "memwrap.py"
TOOLS = ("theta-like", "git-lfs")


# ------------------------------------------------------------------ workloads


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    pos = 0
    for name, a in tensors.items():
        n = a.nbytes
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [pos, pos + n]}
        pos += n
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in tensors.values():
            f.write(memoryview(np.ascontiguousarray(a)).cast("B"))


def bert_like(layers: int, seed: int = 0, vocab: int = 30522, d: int = 768) -> dict[str, np.ndarray]:
    """A BERT-base-shaped fp32 state dict (12 layers: ~110M parameters, largest tensor 94 MB)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    sd = {
        "embeddings.word_embeddings.weight": w(vocab, d),
        "embeddings.position_embeddings.weight": w(512, d),
        "embeddings.LayerNorm.weight": np.ones(d, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(d, np.float32),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for m in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            sd[p + m + ".weight"] = w(d, d)
            sd[p + m + ".bias"] = w(d)
        sd[p + "intermediate.dense.weight"] = w(4 * d, d)
        sd[p + "intermediate.dense.bias"] = w(4 * d)
        sd[p + "output.dense.weight"] = w(d, 4 * d)
        sd[p + "output.dense.bias"] = w(d)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            sd[p + ln + ".weight"] = np.ones(d, np.float32)
            sd[p + ln + ".bias"] = np.zeros(d, np.float32)
    return sd


def few_changed(sd: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    """A version where three tensors changed (a small fine-tune)."""
    rng = np.random.default_rng(seed)
    out = dict(sd)
    for name in (
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.output.dense.weight",
        "embeddings.LayerNorm.weight",
    ):
        a = out[name]
        out[name] = (a + rng.standard_normal(a.shape, dtype=np.float32) * 1e-3).astype(np.float32)
    return out


def to_bf16(sd: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, a in sd.items():
        bits = a.view(np.uint32)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even
        out[k] = rounded.astype(np.uint16)
    return out


# ------------------------------------------------------------------ running git


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    os.sync()  # start each timed command with no write-back of the previous one pending
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True)
    dt = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr.decode(errors='replace')}")
    return dt


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


class Repo:
    """A fresh repository configured for one tool, its filter wrapped to record peak RSS."""

    def __init__(self, root: Path, tool: str, pattern: str = "*.safetensors") -> None:
        self.root, self.tool = root, tool
        root.mkdir(parents=True)
        self.rss_log = root.parent / f"{root.name}.rss"
        self.git("init", "-q", "-b", "main")
        self.git("config", "user.email", "bench@example.invalid")
        self.git("config", "user.name", "bench")
        wrap = [sys.executable, str(MEMWRAP), str(self.rss_log)]
        if tool == "theta-like":
            self.git("theta-like", "install")
            self.git("theta-like", "track", pattern)
            self.git(
                "config", "filter.theta-like.process", " ".join(wrap + ["git-theta-like", "filter-process"])
            )
        else:
            self.git("lfs", "install", "--local")
            self.git("lfs", "track", pattern)
            self.git("config", "filter.lfs.process", " ".join(wrap + ["git-lfs", "filter-process"]))
        self.git("add", ".gitattributes")
        self.git("commit", "-qm", "attributes")

    def git(self, *args: str) -> float:
        return sh(["git", *args], self.root)

    def peak_rss(self) -> int:
        """Largest peak RSS (bytes) of any filter process so far; resets the log."""
        if not self.rss_log.exists():
            return 0
        vals = [int(x) for x in self.rss_log.read_text().split()]
        self.rss_log.unlink()
        return max(vals) * 1024 if vals else 0

    def git_size(self) -> int:
        return dir_size(self.root / ".git")


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def table(title: str, rows: list[tuple[str, float, float, Callable[[float], str]]]) -> str:
    out = [f"\n### {title}\n", "| measure | git-theta-like | git-lfs | ratio |", "|---|---:|---:|---:|"]
    for name, a, b, fmt in rows:
        ratio = f"{a / b:.2f}x" if b else "n/a"
        out.append(f"| {name} | {fmt(a)} | {fmt(b)} | {ratio} |")
    return "\n".join(out)


def secs(x: float) -> str:
    return f"{x:.2f} s"


def mib(x: float) -> str:
    return f"{x / 2**20:.0f} MiB"


# ------------------------------------------------------------------ sections


def foundation(work: Path, repeat: int, layers: int) -> str:
    """add / status-after-touch / add of a changed version / checkout, fp32 and bf16."""
    report = []
    base = bert_like(layers)
    variants = {
        "fp32": (base, few_changed(base), "F32"),
        "bf16": (to_bf16(base), to_bf16(few_changed(base)), "BF16"),
    }
    largest = max(a.nbytes for a in base.values())
    for label, (v1, v2, dtype) in variants.items():
        f1, f2 = work / f"{label}-v1.safetensors", work / f"{label}-v2.safetensors"
        write_safetensors(f1, v1, dtype)
        write_safetensors(f2, v2, dtype)
        size = f1.stat().st_size
        m: dict[str, dict[str, list[float]]] = {t: {} for t in TOOLS}
        for rep in range(repeat):
            for tool in TOOLS:
                r = Repo(work / f"{label}-{tool}-{rep}", tool)
                rec = m[tool]
                target = r.root / "model.safetensors"
                shutil.copyfile(f1, target)
                rec.setdefault("add", []).append(r.git("add", "model.safetensors"))
                rec.setdefault("add RSS", []).append(r.peak_rss())
                r.git("commit", "-qm", "v1")
                rec.setdefault(".git size after v1", []).append(r.git_size())
                os.utime(target)
                rec.setdefault("status after touch", []).append(r.git("status", "--porcelain"))
                shutil.copyfile(f2, target)
                rec.setdefault("add (3 tensors changed)", []).append(r.git("add", "model.safetensors"))
                r.git("commit", "-qm", "v2")
                rec.setdefault(".git size after v2", []).append(r.git_size())
                r.peak_rss()
                rec.setdefault("checkout previous version", []).append(
                    r.git("checkout", "HEAD~1", "--", "model.safetensors")
                )
                rec.setdefault("checkout RSS", []).append(r.peak_rss())
                assert target.read_bytes() == f1.read_bytes(), "checkout is not byte-identical"
                shutil.rmtree(r.root)
        rows = []
        for key in m["theta-like"]:
            a, b = med(m["theta-like"][key]), med(m["git-lfs"][key])
            rows.append((key, a, b, mib if "size" in key or "RSS" in key else secs))
        frac = med(m["theta-like"][".git size after v1"]) / size
        report.append(
            table(
                f"{label}: {size / 2**20:.0f} MiB checkpoint, "
                f"{sum(a.size for a in v1.values()) / 1e6:.0f}M parameters, "
                f"largest tensor {largest / 2**20:.0f} MiB (fp32), median of {repeat}",
                rows,
            )
        )
        report.append(f"\n.git after the first commit = {frac:.3f}x the checkpoint (git-theta-like)")
        f1.unlink()
        f2.unlink()
    return "\n".join(report)


def rss_scaling(work: Path, layers_small: int, layers_big: int) -> str:
    """Peak RSS of the filter for two checkpoint sizes with the same largest tensor."""
    rows = []
    for layers in (layers_small, layers_big):
        sd = bert_like(layers)
        f = work / f"rss-{layers}.safetensors"
        write_safetensors(f, sd)
        res = {}
        for tool in TOOLS:
            r = Repo(work / f"rss-{layers}-{tool}", tool)
            shutil.copyfile(f, r.root / "model.safetensors")
            r.git("add", "model.safetensors")
            add_rss = r.peak_rss()
            r.git("commit", "-qm", "v1")
            (r.root / "model.safetensors").unlink()
            r.git("checkout", "--", "model.safetensors")
            res[tool] = (add_rss, r.peak_rss())
            shutil.rmtree(r.root)
        largest = max(a.nbytes for a in sd.values())
        rows.append(
            f"| {f.stat().st_size / 2**20:.0f} MiB ({layers} layers) | {largest / 2**20:.0f} MiB "
            f"| {mib(res['theta-like'][0])} | {mib(res['theta-like'][1])} "
            f"| {mib(res['git-lfs'][0])} | {mib(res['git-lfs'][1])} |"
        )
        f.unlink()
    head = [
        "\n### Filter peak RSS by checkpoint size (same largest tensor)\n",
        "| checkpoint | largest tensor | theta-like add | theta-like checkout "
        "| git-lfs add | git-lfs checkout |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    return "\n".join(head + rows)


def deltas(work: Path, repeat: int) -> str:
    """Real fine-tunes of all-MiniLM-L6-v2, each committed on a branch from the base model."""
    import json as _json

    import minilm
    import torch

    base = minilm.load_base()
    base_file = work / "minilm-base.safetensors"
    minilm.save(base, base_file)
    size = base_file.stat().st_size
    versions: dict[str, Path] = {}
    adapter_dir = work / "adapter"
    for kind in ("full", "lora", "bitfit", "sparse"):
        sd, adapter = minilm.finetune(base, kind)
        versions[kind] = work / f"minilm-{kind}.safetensors"
        minilm.save(sd, versions[kind])
        if adapter:
            adapter_dir.mkdir()
            minilm.save(adapter["tensors"], adapter_dir / "adapter_model.safetensors")
            (adapter_dir / "adapter_config.json").write_text(_json.dumps(adapter["config"]))
    versions["bf16 cast"] = work / "minilm-bf16.safetensors"
    minilm.save(minilm.to_bf16(base), versions["bf16 cast"])
    del torch

    labels = {
        "full": "full fine-tune (AdamW, 20 steps)",
        "lora": "LoRA r=8 merged (automatic)",
        "lora --lora": "LoRA r=8 merged (add --lora adapter)",
        "bitfit": "BitFit (biases only)",
        "sparse": "sparse fine-tune (1% of entries trainable)",
        "bf16 cast": "bf16 cast",
    }
    stored: dict[str, list[float]] = {k: [] for k in labels}
    commit_t: dict[str, list[float]] = {k: [] for k in (*labels, "first commit")}
    for rep in range(repeat):
        r = Repo(work / f"deltas-{rep}", "theta-like")
        shutil.copyfile(base_file, r.root / "model.safetensors")
        t = r.git("add", "model.safetensors") + r.git("commit", "-qm", "base")
        commit_t["first commit"].append(t)
        for key in labels:
            src = versions["lora" if key == "lora --lora" else key]
            r.git("checkout", "-q", "-b", f"v-{key.replace(' ', '-')}", "main")
            before = dir_size(r.root / ".git")
            shutil.copyfile(src, r.root / "model.safetensors")
            if key == "lora --lora":
                t = r.git("theta-like", "add", "model.safetensors", "--lora", str(adapter_dir))
            else:
                t = r.git("add", "model.safetensors")
            t += r.git("commit", "-qm", key)
            commit_t[key].append(t)
            stored[key].append(dir_size(r.root / ".git") - before)
            r.git("checkout", "-q", "main")
        shutil.rmtree(r.root)
    out = [
        f"\n### Stored bytes per version: real fine-tunes of all-MiniLM-L6-v2 ({size / 2**20:.1f} MiB fp32), "
        f"median of {repeat}\n",
        "| version | file | git-lfs stores | git-theta-like stores | ratio | 1/ratio | add+commit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    first = med(commit_t["first commit"])
    out_rows = [("base (first commit)", size, None, first)]
    for key, label in labels.items():
        fsize = versions["lora" if key == "lora --lora" else key].stat().st_size
        out_rows.append((label, fsize, med(stored[key]), med(commit_t[key])))
    for label, fsize, st, t in out_rows:
        if st is None:
            out.append(f"| {label} | {mib(fsize)} | {mib(fsize)} | | | | {secs(t)} |")
        else:
            out.append(
                f"| {label} | {mib(fsize)} | {mib(fsize)} | {st / 2**20:.3f} MiB | {st / fsize:.4f}x "
                f"| 1/{fsize / max(st, 1):.0f} | {secs(t)} |"
            )
    out.append(f"\nfull fine-tune commit / first commit = {med(commit_t['full']) / first:.2f}x")
    return "\n".join(out)


def remote(work: Path, repeat: int, layers: int) -> str:
    """Push and clone through a real LFS server (giftless on loopback), both tools, same history:
    v1, then v2 and v3 (3 tensors changed each) pushed together, a fresh clone of v3, then v4
    pulled into that clone."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from lfs_server import GiftlessServer

    base = bert_like(layers)
    files = []
    sd = base
    for i in range(4):
        if i:
            sd = few_changed(sd, seed=i)
        f = work / f"remote-v{i + 1}.safetensors"
        write_safetensors(f, sd)
        files.append(f)
    size = files[0].stat().st_size
    sh(["git", "theta-like", "install", "--global", "--no-hooks"], work)
    sh(["git", "lfs", "install", "--skip-repo"], work)
    m: dict[str, dict[str, list[float]]] = {t: {} for t in TOOLS}
    for rep in range(repeat):
        for tool in TOOLS:
            root = work / f"remote-{tool}-{rep}"
            root.mkdir()
            rec = m[tool]
            with GiftlessServer(root / "server") as srv:
                bare = root / "remote.git"
                sh(["git", "init", "-q", "--bare", "-b", "main", str(bare)], root)
                r = Repo(root / "origin", tool)
                (r.root / ".lfsconfig").write_text(f'[lfs]\n\turl = "{srv.endpoint}"\n')
                r.git("add", ".lfsconfig")
                r.git("commit", "-qm", "lfsconfig")
                r.git("remote", "add", "origin", str(bare))
                storage = srv.object_path("0" * 64).parent

                def served() -> int:
                    return dir_size(storage) if storage.exists() else 0

                def push(tag: str) -> None:
                    before = served() + dir_size(bare)
                    rec.setdefault(f"push {tag}: time", []).append(r.git("push", "-q", "origin", "main"))
                    rec.setdefault(f"push {tag}: bytes sent", []).append(served() + dir_size(bare) - before)

                shutil.copyfile(files[0], r.root / "model.safetensors")
                r.git("add", "model.safetensors")
                r.git("commit", "-qm", "v1")
                push("v1")
                for i in (1, 2):
                    shutil.copyfile(files[i], r.root / "model.safetensors")
                    r.git("add", "model.safetensors")
                    r.git("commit", "-qm", f"v{i + 1}")
                push("v2+v3")
                clone = root / "clone"
                rec.setdefault("clone of v3: time", []).append(sh(["git", "clone", "-q", str(bare), str(clone)], root))
                rec.setdefault("clone of v3: bytes received", []).append(dir_size(clone / ".git"))
                assert (clone / "model.safetensors").read_bytes() == files[2].read_bytes()
                shutil.copyfile(files[3], r.root / "model.safetensors")
                r.git("add", "model.safetensors")
                r.git("commit", "-qm", "v4")
                r.git("push", "-q", "origin", "main")
                before = dir_size(clone / ".git")
                rec.setdefault("pull of v4: time", []).append(sh(["git", "pull", "-q", "origin", "main"], clone))
                rec.setdefault("pull of v4: bytes received", []).append(dir_size(clone / ".git") - before)
                assert (clone / "model.safetensors").read_bytes() == files[3].read_bytes()
            shutil.rmtree(root)
    rows = []
    for key in m["theta-like"]:
        a, b = med(m["theta-like"][key]), med(m["git-lfs"][key])
        rows.append((key, a, b, mib if "bytes" in key else secs))
    for f in files:
        f.unlink()
    return table(
        f"Push and clone through giftless on loopback: {size / 2**20:.0f} MiB fp32 checkpoint, "
        f"later versions change 3 tensors, median of {repeat}",
        rows,
    )


SECTIONS = {"foundation", "rss", "deltas", "remote"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--layers", type=int, default=12, help="encoder layers of the BERT-like model (12: ~110M)"
    )
    ap.add_argument("--sections", default=",".join(sorted(SECTIONS)))
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if unknown := sections - SECTIONS:
        ap.error(f"unknown sections {sorted(unknown)}; choose from {sorted(SECTIONS)}")
    for tool in ("git-lfs", "git-theta-like"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found on PATH: run scripts/setup")
    parts = [f"## scripts/bench ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)"]
    with tempfile.TemporaryDirectory(prefix="gtl-bench-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        os.environ.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
        if "foundation" in sections:
            parts.append(foundation(work, args.repeat, args.layers))
            print(parts[-1], flush=True)
        if "deltas" in sections:
            sys.path.insert(0, str(HERE))
            parts.append(deltas(work, args.repeat))
            print(parts[-1], flush=True)
        if "remote" in sections:
            parts.append(remote(work, args.repeat, args.layers))
            print(parts[-1], flush=True)
        if "rss" in sections:
            parts.append(rss_scaling(work, max(1, args.layers // 6), args.layers))
            print(parts[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
