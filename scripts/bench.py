"""Measure git-theta-like against plain git-lfs on the same files, in one run.

    scripts/bench [--repeat N] [--sections foundation,network,scale] [--net-mb N] [--out DIR]

Each section builds its workload, runs the same git commands in a fresh repository per tool and
repetition, and prints a Markdown table of medians with the ratio git-theta-like / git-lfs.
The filter processes of both tools run under a small wrapper that records their peak RSS.
"""

from __future__ import annotations

import argparse
import collections
import filecmp
import json
import math
import os
import re
import resource
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


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a command and every process it waited for (the filter)."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dt, cpu


def dir_size(p: Path) -> int:
    """Bytes of the files under p, each inode once (objects have a second hard link)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for f in p.rglob("*"):
        if f.is_file():
            st = f.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


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

    def timed(self, *args: str) -> tuple[float, float]:
        return timed(["git", *args], self.root)

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


def table(
    title: str,
    rows: list[tuple[str, float, float, Callable[[float], str]]],
    targets: dict[str, float] | None = None,
) -> str:
    """A Markdown table of medians and ratios; with `targets` (measure -> highest ratio allowed),
    a column saying whether each target is met."""
    head, rule = "| measure | git-theta-like | git-lfs | ratio |", "|---|---:|---:|---:|"
    if targets is not None:
        head, rule = head + " target |", rule + "---|"
    out = [f"\n### {title}\n", head, rule]
    for name, a, b, fmt in rows:
        ratio = f"{a / b:.2f}x" if b and math.isfinite(a / b) else "n/a"
        line = f"| {name} | {fmt(a)} | {fmt(b)} | {ratio} |"
        if targets is not None:
            t = targets.get(name)
            if t is None:
                line += " |"
            else:
                line += f" <= {t:g}x: {'met' if b and a / b <= t else 'NOT met'} |"
        out.append(line)
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


def _origin(root: Path, tool: str, lfs_url: str) -> tuple[Repo, Path]:
    """A repository for `tool` whose remote `origin` is a fresh bare repository and whose
    committed .lfsconfig points at lfs_url."""
    bare = root / "remote.git"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(bare)], root)
    r = Repo(root / "origin", tool)
    (r.root / ".lfsconfig").write_text(f'[lfs]\n\turl = "{lfs_url}"\n')
    r.git("add", ".lfsconfig")
    r.git("commit", "-qm", "lfsconfig")
    r.git("remote", "add", "origin", str(bare))
    return r, bare


def _remote_run(root: Path, tool: str, files: list[Path], rec: dict[str, list[float]], server: type) -> None:
    """One run of the remote workload for one tool, recording into rec."""
    with server(root / "server") as srv:
        r, bare = _origin(root, tool, srv.endpoint)
        storage = srv.object_path("0" * 64).parent

        def sent() -> int:
            return (dir_size(storage) if storage.exists() else 0) + dir_size(bare)

        def commit(i: int) -> None:
            shutil.copyfile(files[i], r.root / "model.safetensors")
            r.git("add", "model.safetensors")
            r.git("commit", "-qm", f"v{i + 1}")

        def push(tag: str) -> None:
            before = sent()
            rec.setdefault(f"push {tag}: time", []).append(r.git("push", "-q", "origin", "main"))
            rec.setdefault(f"push {tag}: bytes sent", []).append(sent() - before)

        commit(0)
        push("v1")
        commit(1)
        commit(2)
        push("v2+v3")
        clone = root / "clone"
        t = sh(["git", "clone", "-q", str(bare), str(clone)], root)
        rec.setdefault("clone of v3: time", []).append(t)
        rec.setdefault("clone of v3: bytes received", []).append(dir_size(clone / ".git"))
        assert (clone / "model.safetensors").read_bytes() == files[2].read_bytes()
        commit(3)
        r.git("push", "-q", "origin", "main")
        before = dir_size(clone / ".git")
        rec.setdefault("pull of v4: time", []).append(sh(["git", "pull", "-q", "origin", "main"], clone))
        rec.setdefault("pull of v4: bytes received", []).append(dir_size(clone / ".git") - before)
        assert (clone / "model.safetensors").read_bytes() == files[3].read_bytes()


def install_filters_globally(work: Path) -> None:
    """Both tools' filters in the (bench's own) global config, so that clones smudge."""
    sh(["git", "theta-like", "install", "--global", "--no-hooks"], work)
    sh(["git", "lfs", "install", "--skip-repo"], work)


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
    install_filters_globally(work)
    m: dict[str, dict[str, list[float]]] = {t: {} for t in TOOLS}
    for rep in range(repeat):
        for tool in TOOLS:
            root = work / f"remote-{tool}-{rep}"
            root.mkdir()
            _remote_run(root, tool, files, m[tool], GiftlessServer)
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


# Steps of a network scenario: ("push", version, label) commits that version and pushes it;
# ("clone", None, label) makes a fresh clone of the tip (the first one is kept and pulls later
# versions); ("pull", version, label) pulls the pushed version into that clone.
NetStep = tuple[str, int | None, str]


def _net_run(
    root: Path,
    tool: str,
    versions: list[dict[str, Path]],
    steps: list[NetStep],
    rec: dict[str, list[float]],
    rtt: float,
    mbit: float,
) -> str | None:
    """One run of a network scenario for one tool: a fresh giftless behind a fresh shaped link.
    A step that fails ends the run: the failure is returned (None: every step ran)."""
    from lfs_server import GiftlessServer
    from netproxy import NetProxy

    with (
        GiftlessServer(root / "server") as srv,
        NetProxy(("127.0.0.1", srv.port), rtt=rtt, mbit=mbit) as link,
    ):
        # giftless builds its action hrefs from the request's Host header, so with lfs.url at the
        # proxy the objects travel through it too (checked below with the byte counters)
        endpoint = srv.endpoint.replace(srv.base, f"http://127.0.0.1:{link.port}")
        r, bare = _origin(root, tool, endpoint)
        clones: list[Path] = []
        committed: dict[str, Path] = {}

        def size_of(d: Path) -> int:
            return dir_size(d) if d.exists() else 0

        def measure(label: str, cmd: list[str], cwd: Path, up: bool, landed: Path) -> None:
            """Time cmd; record the bytes it moved over the link one way and the connections it
            opened; check that the objects that landed (on the server or in the clone) crossed it."""
            moved, conns, before = link.bytes_up if up else link.bytes_down, link.connections, size_of(landed)
            rec.setdefault(f"{label}: time", []).append(sh(cmd, cwd))
            moved = (link.bytes_up if up else link.bytes_down) - moved
            rec.setdefault(f"{label}: {'bytes sent' if up else 'bytes received'}", []).append(moved)
            rec.setdefault(f"{label}: connections", []).append(link.connections - conns)
            if (grown := size_of(landed) - before) > moved:
                raise RuntimeError(f"{label}: {grown} bytes of objects arrived, {moved} crossed the link")

        def check(clone: Path, v: int) -> None:
            for rel, src in versions[v].items():
                if not filecmp.cmp(clone / rel, src, shallow=False):
                    raise RuntimeError(f"{tool}: {clone.name}/{rel} is not byte-identical to the version")

        tip = 0
        for kind, v, label in steps:
            try:
                if kind == "push":
                    assert v is not None
                    for rel, src in versions[v].items():
                        if committed.get(rel) != src:
                            (r.root / rel).parent.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(src, r.root / rel)
                            committed[rel] = src
                    r.git("add", "-A")
                    r.git("commit", "-qm", f"v{v + 1}")
                    measure(label, ["git", "push", "-q", "origin", "main"], r.root, True, srv.storage)
                    tip = v
                elif kind == "clone":
                    dest = root / f"clone{len(clones)}"
                    objects = dest / ".git" / "lfs" / "objects"
                    measure(label, ["git", "clone", "-q", str(bare), str(dest)], root, False, objects)
                    check(dest, tip)
                    clones.append(dest)
                else:
                    assert v is not None and v == tip, "pull the version just pushed"
                    objects = clones[0] / ".git" / "lfs" / "objects"
                    measure(label, ["git", "pull", "-q", "origin", "main"], clones[0], False, objects)
                    check(clones[0], v)
            except RuntimeError as e:  # reported under the table; the other runs go on
                why = re.sub(r"\?\S+", "?...", " ".join(str(e).split()))  # hrefs without their tokens
                return f"{'git-theta-like' if tool == 'theta-like' else tool}, {label}: {why[:600]}"
    return None


def _net_medians(
    m: dict[str, dict[str, list[float]]], title: str, targets: dict[str, float], failures: list[str]
) -> str:
    def mib1(x: float) -> str:
        return f"{x / 2**20:.1f} MiB"

    def count(x: float) -> str:
        return f"{x:.0f}"

    def failed(fmt: Callable[[float], str]) -> Callable[[float], str]:
        return lambda x: "failed" if math.isnan(x) else fmt(x)

    rows: list[tuple[str, float, float, Callable[[float], str]]] = []
    for key in [*m["theta-like"], *(k for k in m["git-lfs"] if k not in m["theta-like"])]:
        a, b = (med(m[t][key]) if m[t].get(key) else math.nan for t in TOOLS)
        fmt = secs if key.endswith("time") else count if key.endswith("connections") else mib1
        rows.append((key, a, b, failed(fmt)))
    return table(title, rows, targets) + "".join(f"\n\nfailed: {f}" for f in failures)


def network(work: Path, repeat: int, net_mb: int, rtt_ms: float, mbit: float) -> str:
    """Push, fresh clone and pull through giftless behind a shaped link (scripts/netproxy.py:
    rtt_ms round trip, mbit per direction), both tools, same files: (a) one BERT-like fp32
    checkpoint of about net_mb MiB over 4 versions (v2 and v4 change 3 tensors, v3 is a full
    fine-tune); (b) 120 checkpoints of 1-4 MiB in one commit, then 24 of them changed."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    rtt = rtt_ms / 1000
    install_filters_globally(work)
    link = f"{rtt_ms:g} ms RTT, {mbit:g} Mbit/s each way"

    # (a) one large checkpoint
    d = 768
    embeddings = (30522 + 512) * d + 2 * d
    per_layer = 12 * d * d + 13 * d
    layers = max(1, round((net_mb * 2**20 / 4 - embeddings) / per_layer))
    sd = bert_like(layers)
    big: list[dict[str, Path]] = []
    for i in range(4):
        if i:
            sd = all_changed(sd, seed=i) if i == 2 else few_changed(sd, seed=i)
        f = work / f"net-v{i + 1}.safetensors"
        write_safetensors(f, sd)
        big.append({"model.safetensors": f})
    del sd
    size = big[0]["model.safetensors"].stat().st_size
    big_steps: list[NetStep] = [
        ("push", 0, "push v1"),
        ("push", 1, "push v2 (3 tensors changed)"),
        ("clone", None, "fresh clone of v2"),
        ("push", 2, "push v3 (full fine-tune)"),
        ("pull", 2, "pull of v3 (full fine-tune)"),
        ("push", 3, "push v4 (3 tensors changed)"),
        ("pull", 3, "pull of v4 (3 tensors changed)"),
        ("clone", None, "fresh clone of v4"),
    ]
    big_targets = {
        "push v2 (3 tensors changed): bytes sent": 0.2,
        "push v3 (full fine-tune): bytes sent": 0.2,
        "push v4 (3 tensors changed): bytes sent": 0.2,
        "fresh clone of v2: bytes received": 1.0,
        "fresh clone of v2: time": 1.2,
        "fresh clone of v4: bytes received": 1.0,
        "fresh clone of v4: time": 1.2,
    }

    # (b) 120 small checkpoints: 4 weight matrices (mb x 256 rows of 256 fp32) and 4 biases
    # each, 1-4 MiB; v2 changes one matrix and its bias in every fifth file
    rng = np.random.default_rng(7)
    small_v1: dict[str, Path] = {}
    small_v2: dict[str, Path] = {}
    (work / "net-small").mkdir()
    for i in range(120):
        mb = 1 + i % 4
        ck = {}
        for j in range(4):
            ck[f"layer.{j}.weight"] = (rng.standard_normal((256 * mb, 256), dtype=np.float32) * 0.02).astype(
                np.float32
            )
            ck[f"layer.{j}.bias"] = (rng.standard_normal(256, dtype=np.float32) * 0.02).astype(np.float32)
        rel = f"ckpt/model-{i:03d}.safetensors"
        small_v1[rel] = small_v2[rel] = work / "net-small" / f"v1-{i:03d}.safetensors"
        write_safetensors(small_v1[rel], ck)
        if i % 5 == 0:
            for name in ("layer.0.weight", "layer.0.bias"):
                a = ck[name]
                ck[name] = (a + rng.standard_normal(a.shape, dtype=np.float32) * 1e-3).astype(np.float32)
            small_v2[rel] = work / "net-small" / f"v2-{i:03d}.safetensors"
            write_safetensors(small_v2[rel], ck)
    small_size = sum(f.stat().st_size for f in small_v1.values())
    small_steps: list[NetStep] = [
        ("push", 0, "push v1 (120 files)"),
        ("clone", None, "fresh clone of v1"),
        ("push", 1, "push v2 (24 files changed)"),
        ("pull", 1, "pull of v2"),
    ]
    small_targets = {
        "push v2 (24 files changed): bytes sent": 0.2,
        "fresh clone of v1: bytes received": 1.0,
        "fresh clone of v1: time": 2.0,
    }

    report = []
    for name, versions, steps, targets, title in (
        (
            "big",
            big,
            big_steps,
            big_targets,
            f"Network, one checkpoint: {size / 2**20:.0f} MiB fp32 ({layers} layers), 4 versions, "
            f"{link}, median of {repeat}",
        ),
        (
            "small",
            [small_v1, small_v2],
            small_steps,
            small_targets,
            f"Network, 120 checkpoints of 1-4 MiB ({small_size / 2**20:.0f} MiB) in one commit, "
            f"{link}, median of {repeat}",
        ),
    ):
        m: dict[str, dict[str, list[float]]] = {t: {} for t in TOOLS}
        failures: list[str] = []
        for rep in range(repeat):
            for tool in TOOLS:
                root = work / f"net-{name}-{tool}-{rep}"
                root.mkdir()
                if failure := _net_run(root, tool, versions, steps, m[tool], rtt, mbit):
                    failures.append(failure)
                shutil.rmtree(root)
        report.append(_net_medians(m, title, targets, failures))
        print(report[-1], flush=True)
    for v in big:
        v["model.safetensors"].unlink()
    shutil.rmtree(work / "net-small")
    return "\n".join(report)


def diff_times(work: Path, repeat: int, layers: int) -> str:
    """`git diff HEAD~1 HEAD` between two versions that differ in 3 tensors: git-theta-like's
    semantic summary (diff driver) against git-lfs's pointer diff, on the same history."""
    base = bert_like(layers)
    v2 = few_changed(base)
    changed = [k for k in base if base[k] is not v2[k]]
    f1, f2 = work / "diff-v1.safetensors", work / "diff-v2.safetensors"
    write_safetensors(f1, base)
    write_safetensors(f2, v2)
    del base, v2
    size = f1.stat().st_size
    timings: dict[str, dict[str, list[float]]] = {t: {} for t in TOOLS}
    for tool in TOOLS:
        r = Repo(work / f"diff-{tool}", tool)
        for f, msg in ((f1, "v1"), (f2, "v2")):
            shutil.copyfile(f, r.root / "model.safetensors")
            r.git("add", "model.safetensors")
            r.git("commit", "-qm", msg)
        # time what users run: the filter as installed, not under the RSS wrapper
        if tool == "theta-like":
            r.git("config", "filter.theta-like.process", "git-theta-like filter-process")
            out = subprocess.run(
                ["git", "diff", "HEAD~1", "HEAD"], cwd=r.root, capture_output=True, text=True, check=True
            ).stdout
            assert all(n in out for n in changed) and "193 unchanged" in out, out
        else:
            r.git("config", "filter.lfs.process", "git-lfs filter-process")
        rec = timings[tool]
        for _ in range(repeat):
            rec.setdefault("git diff HEAD~1 HEAD", []).append(r.git("diff", "HEAD~1", "HEAD"))
            rec.setdefault("git log -p -1", []).append(r.git("log", "-p", "-1"))
            rec.setdefault("git diff --stat HEAD~1 HEAD", []).append(
                r.git("diff", "--stat", "HEAD~1", "HEAD")
            )
            if tool == "theta-like":
                rec.setdefault("git theta-like diff --format json", []).append(
                    r.git("theta-like", "diff", "HEAD~1", "HEAD", "--format", "json")
                )
        shutil.rmtree(r.root)
    f1.unlink()
    f2.unlink()

    def msecs(x: float) -> str:
        return f"{x * 1000:.0f} ms"

    rows = []
    lfs_diff = med(timings["git-lfs"]["git diff HEAD~1 HEAD"])
    for key, xs in timings["theta-like"].items():
        b = med(timings["git-lfs"][key]) if key in timings["git-lfs"] else lfs_diff
        rows.append(
            (key if key in timings["git-lfs"] else f"{key} (vs git-lfs's git diff)", med(xs), b, msecs)
        )
    target = med(timings["theta-like"]["git diff HEAD~1 HEAD"])
    return (
        table(
            f"Diff of two versions, {size / 2**20:.0f} MiB fp32 checkpoint, 3 tensors changed "
            f"(git-lfs: pointer diff), median of {repeat}",
            rows,
        )
        + f"\n\ngit diff with statistics for the 3 changed tensors: {target:.2f} s "
        + f"(target: under 2 s: {'met' if target < 2 else 'NOT met'})"
    )


def all_changed(sd: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """A full fine-tune: every tensor perturbed (few_changed's update, applied to all of them)."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, a in sd.items():
        out[k] = (a + rng.standard_normal(a.shape, dtype=np.float32) * 1e-3).astype(np.float32)
    return out


# (method, mergekit's YAML (models by name), git-theta-like's strategy, its parameters)
MERGE_METHODS = [
    (
        "linear",
        "merge_method: linear\nmodels:\n  - model: A\n    parameters: {weight: 0.5}\n"
        "  - model: B\n    parameters: {weight: 0.5}\ndtype: float32\n",
        "linear",
        "ours=0.5,theirs=0.5",
    ),
    (
        "task_arithmetic",
        "merge_method: task_arithmetic\nbase_model: O\nmodels:\n  - model: A\n    parameters: {weight: 1.0}\n"
        "  - model: B\n    parameters: {weight: 1.0}\ndtype: float32\n",
        "task-arithmetic",
        "conventions=mergekit",
    ),
    (
        "ties",
        "merge_method: ties\nbase_model: O\nmodels:\n"
        "  - model: A\n    parameters: {weight: 1.0, density: 0.2}\n"
        "  - model: B\n    parameters: {weight: 1.0, density: 0.2}\ndtype: float32\n",
        "ties",
        "density=0.2,conventions=mergekit,normalize=true,rescale=false",
    ),
    (  # our default conventions (the paper's: k rounded, every entry tied at the cut-off kept)
        "ties (paper)",
        "merge_method: ties\nbase_model: O\nmodels:\n"
        "  - model: A\n    parameters: {weight: 1.0, density: 0.2}\n"
        "  - model: B\n    parameters: {weight: 1.0, density: 0.2}\ndtype: float32\n",
        "ties",
        "density=0.2,normalize=true,rescale=false",
    ),
]
MERGE_TARGETS = {"linear": 1.0, "ties": 0.5, "ties (paper)": 0.5}  # issue #17: git merge wall / mergekit wall
DRIVER_RSS_TARGET = 600 * 2**20


def _mergekit_model(d: Path, src: Path, layers: int) -> None:
    """A model directory mergekit reads: config.json and the checkpoint (a hard link)."""
    d.mkdir()
    cfg = {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "num_hidden_layers": layers,
    }
    (d / "config.json").write_text(json.dumps(cfg))
    os.link(src, d / "model.safetensors")


def _read_safetensors(path: Path) -> dict[str, bytes]:
    """Tensor name -> raw bytes of a safetensors file, or of every shard in a directory."""
    out: dict[str, bytes] = {}
    for f in sorted(path.glob("*.safetensors")) if path.is_dir() else [path]:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
            data = fh.read()
        for k, v in header.items():
            if k != "__metadata__":
                a, b = v["data_offsets"]
                out[k] = data[a:b]
    return out


def _wrapped(
    cmd: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None
) -> tuple[float, float, int]:
    """(wall s, CPU s, peak RSS bytes) of a command run under memwrap (a process that never held
    the data): the peak is that of the largest process it waited for."""
    os.sync()
    log.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, str(MEMWRAP), str(log), *cmd], cwd=cwd, env=env, capture_output=True)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr.decode(errors='replace')}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dt, cpu, int(log.read_text().split()[-1]) * 1024


def merge_times(work: Path, repeat: int, layers: int, only: list[str] | None = None) -> str:
    """The same merges of two full fine-tunes of one base (every tensor changed on both sides)
    through mergekit (`mergekit-yaml`, out to a directory) and through git-theta-like (`git
    merge` with the strategy set), alternating (A B A B): wall and CPU seconds, peak RSS, the
    ratios, and whether the results are equal tensor for tensor."""
    # BertForSequenceClassification as mergekit knows it: bert_like's tensors under `bert.`, the
    # token type embeddings, the pooler and a 2-label classifier
    sd = bert_like(layers)
    d = sd["embeddings.word_embeddings.weight"].shape[1]
    rng = np.random.default_rng(3)
    sd["embeddings.token_type_embeddings.weight"] = (rng.standard_normal((2, d)) * 0.02).astype(np.float32)
    sd["pooler.dense.weight"] = (rng.standard_normal((d, d)) * 0.02).astype(np.float32)
    sd["pooler.dense.bias"] = np.zeros(d, np.float32)
    base = {f"bert.{k}": v for k, v in sd.items()}
    del sd
    base["classifier.weight"] = (rng.standard_normal((2, d)) * 0.02).astype(np.float32)
    base["classifier.bias"] = np.zeros(2, np.float32)
    files = {"O": work / "merge-base.safetensors"}
    write_safetensors(files["O"], base)
    for name, seed in (("A", 1), ("B", 2)):
        files[name] = work / f"merge-{name}.safetensors"
        write_safetensors(files[name], all_changed(base, seed))
    size = files["O"].stat().st_size
    largest = max(a.nbytes for a in base.values())
    params = sum(a.size for a in base.values())
    n_tensors = len(base)
    del base
    models = work / "mergekit-models"
    models.mkdir()
    for name, f in files.items():
        _mergekit_model(models / name, f, layers)
    r = Repo(work / "merge-repo", "theta-like")
    driver_log = work / "merge-driver.rss"
    wrap = [sys.executable, str(MEMWRAP), str(driver_log), "git-theta-like", "merge-driver"]
    r.git("config", "merge.theta-like.driver", " ".join(wrap + ["%O", "%A", "%B", "%P"]))
    for name, branch in (("O", "main"), ("A", "task-a"), ("B", "task-b")):
        if branch != "main":
            r.git("checkout", "-q", "-b", branch, "main")
        shutil.copyfile(files[name], r.root / "model.safetensors")
        r.git("add", "model.safetensors")
        r.git("commit", "-qm", branch)
    r.peak_rss()
    methods = [m for m in MERGE_METHODS if only is None or m[0] in only]
    keys = [m[0] for m in methods]
    rec: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list) for k in keys}
    equal: dict[str, str] = {}
    for rep in range(repeat):
        for method, yaml, strategy, setting in methods:
            m = rec[method]
            # A: mergekit
            slug = re.sub(r"[^a-z_]+", "-", method).strip("-")
            cfg = models / f"{slug}.yml"
            cfg.write_text(
                yaml.replace(": O", f": {models / 'O'}")
                .replace(": A", f": {models / 'A'}")
                .replace(": B", f": {models / 'B'}")
            )
            out = work / f"mergekit-out-{slug}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = ["mergekit-yaml", str(cfg), str(out), "--no-copy-tokenizer", "--quiet", "--no-cuda"]
            wall, cpu, rss = _wrapped(cmd, work, work / "mergekit.rss")
            m["mergekit wall"].append(wall)
            m["mergekit cpu"].append(cpu)
            m["mergekit rss"].append(rss)
            # B: git merge
            r.git("checkout", "-q", "-B", "merged", "task-a")
            r.git("update-index", "-q", "--refresh")  # the checkout long done, as for a user
            r.peak_rss()
            env = dict(os.environ)
            env.update(
                GIT_THETA_LIKE_MERGE_STRATEGY=strategy,
                GIT_THETA_LIKE_MERGE_SET=setting,
                GIT_THETA_LIKE_MERGE_DEVICE="cpu",
            )
            merge_cmd = ["git", "merge", "--no-edit", "task-b"]
            os.sync()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t = time.perf_counter()
            p = subprocess.run(merge_cmd, cwd=r.root, env=env, capture_output=True)
            m["git wall"].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            m["git cpu"].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            err = p.stderr.decode(errors="replace")
            if p.returncode:
                raise RuntimeError(f"git merge failed:\n{err}")
            found = re.search(
                rf"merged {n_tensors} tensors \({strategy} {n_tensors}\) on (\S+) in ([0-9.]+) s", err
            )
            assert found, err
            m["driver wall"].append(float(found.group(2)))
            m["driver rss"].append(max(int(x) for x in driver_log.read_text().split()) * 1024)
            driver_log.unlink()
            m["filter rss"].append(r.peak_rss())
            if rep == 0:
                ours, theirs = _read_safetensors(r.root / "model.safetensors"), _read_safetensors(out)
                same = sum(ours[k] == theirs.get(k) for k in ours)
                equal[method] = (
                    f"all {n_tensors} tensors bit for bit"
                    if same == n_tensors
                    else f"{same} of {n_tensors} tensors bit for bit"
                )
            shutil.rmtree(out)
    shutil.rmtree(r.root)
    shutil.rmtree(models)
    for f in files.values():
        f.unlink()
    out_lines = [
        f"\n### Merge vs mergekit: two full fine-tunes of one base, {size / 2**20:.0f} MiB fp32 checkpoint "
        f"(BertForSequenceClassification, {params / 1e6:.0f}M parameters, {n_tensors} tensors, "
        "all changed on both sides, "
        f"largest tensor {largest / 2**20:.0f} MiB), CPU, A B A B, median of {repeat}\n",
        "| method | measure | git merge | mergekit-yaml | ratio | target |",
        "|---|---|---:|---:|---:|---|",
    ]
    for method in keys:
        m = rec[method]
        rows = [
            ("wall", med(m["git wall"]), med(m["mergekit wall"]), secs, MERGE_TARGETS.get(method)),
            ("CPU", med(m["git cpu"]), med(m["mergekit cpu"]), secs, None),
            ("peak RSS", med(m["driver rss"]), med(m["mergekit rss"]), mib, None),
        ]
        for label, a, b, fmt, target in rows:
            goal = "" if target is None else f"<= {target:g}x: {'met' if a / b <= target else 'NOT met'}"
            out_lines.append(f"| {method} | {label} | {fmt(a)} | {fmt(b)} | {a / b:.2f}x | {goal} |")
    out_lines.append("")
    out_lines.append(
        "| method | merge driver (plan, merge, store) | driver peak RSS "
        "| checkout filter peak RSS | result vs mergekit |"
    )
    out_lines.append("|---|---:|---:|---:|---|")
    for method in keys:
        m = rec[method]
        rss_goal = "met" if med(m["driver rss"]) <= DRIVER_RSS_TARGET else "NOT met"
        out_lines.append(
            f"| {method} | {secs(med(m['driver wall']))} "
            f"| {mib(med(m['driver rss']))} (<= 600 MiB: {rss_goal}) "
            f"| {mib(med(m['filter rss']))} | {equal[method]} |"
        )
    out_lines.append(
        "\n`git merge` wall and CPU include git, the merge driver (which stores the result) and the "
        "checkout of the merged file; mergekit-yaml's include writing its output directory. "
        "Peak RSS: the merge driver's and mergekit-yaml's, each measured by a wrapper process "
        "(scripts/memwrap.py). Settings: " + "; ".join(f"{m[0]}: {m[2]} {m[3]}" for m in methods) + "."
    )
    return "\n".join(out_lines)


# ------------------------------------------------------------------ codec: keyframe codecs vs ZipNN


def _codec_tensors() -> dict[str, tuple[str, list[tuple[tuple[int, ...], bytes]]]]:
    """MiniLM's float tensors as raw bytes: fp32 and cast to bf16 (round to nearest even)."""
    sys.path.insert(0, str(HERE))
    import minilm
    import torch

    base = {k: v for k, v in minilm.load_base().items() if v.is_floating_point()}
    out: dict[str, tuple[str, list[tuple[tuple[int, ...], bytes]]]] = {}
    for label, dtype, sd, view in (
        ("fp32", "F32", base, torch.int32),
        ("bf16", "BF16", minilm.to_bf16(base), torch.int16),
    ):
        out[label] = (
            dtype,
            [(tuple(t.shape), t.contiguous().view(view).numpy().tobytes()) for t in sd.values()],
        )
    return out


_Coder = tuple[Callable[[bytes, str, tuple[int, ...]], object], Callable[[object], bytes]]


def _ours(codec: str) -> _Coder:
    from git_theta_like import dtypes
    from git_theta_like.codecs import exponent, planes, registry
    from git_theta_like.codecs.container import ObjectHeader

    def enc(raw: bytes, dtype: str, shape: tuple[int, ...]) -> object:
        mv = memoryview(raw)
        if codec == "exponent":
            params, chunks = exponent.encode(mv, dtype)
        else:
            params, chunks = planes.encode(mv, dtypes.itemsize(dtype))
        payload = b"".join(chunks)
        if len(payload) >= len(raw):  # what the chooser does: store it raw
            return ObjectHeader("raw", dtype, shape, len(raw), "0" * 64), raw
        return ObjectHeader(codec, dtype, shape, len(raw), "0" * 64, params), payload

    def dec(obj: object) -> bytes:
        header, payload = obj  # type: ignore[misc]
        return bytes(registry.decode(header, memoryview(payload)))

    return enc, dec


def _zipnn(
    threads: int,
) -> tuple[Callable[[bytes, str, tuple[int, ...]], object], Callable[[object], bytes]] | None:
    try:
        import torch
        import zipnn
    except ImportError:
        return None
    # zipnn 0.5.4's input_format="byte" does not give the input back (measured: decompress
    # differs from what was compressed); its numpy / torch inputs round-trip
    zs = {
        "F32": zipnn.ZipNN(input_format="numpy", bytearray_dtype="float32", threads=threads),
        "BF16": zipnn.ZipNN(input_format="torch", bytearray_dtype="bfloat16", threads=threads),
    }

    def enc(raw: bytes, dtype: str, shape: tuple[int, ...]) -> object:
        if dtype == "F32":
            return dtype, zs[dtype].compress(np.frombuffer(raw, np.float32))
        t = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16)
        return dtype, zs[dtype].compress(t)

    def dec(obj: object) -> bytes:
        dtype, data = obj  # type: ignore[misc]
        out = zs[dtype].decompress(data)
        if dtype == "BF16":
            return bytes(out.contiguous().view(torch.int16).numpy().tobytes())
        return bytes(np.ascontiguousarray(out).tobytes())

    return enc, dec


def _entropy(symbols: np.ndarray) -> float:
    """Order-0 empirical entropy of an array of small non-negative integers, bits per symbol."""
    c = np.bincount(symbols.ravel())
    p = c[c > 0] / symbols.size
    return float(-(p * np.log2(p)).sum())


def codec_floor(data: dict[str, tuple[str, list[tuple[tuple[int, ...], bytes]]]]) -> list[str]:
    """What a coder of each tensor's element statistics can reach at best (order-0 entropies,
    tensor by tensor, in bits per element and as a ratio of raw): the fields one by one, the
    mantissa given the exponent, the exponent given the row of a matrix (estimated from the row's
    own few hundred entries: biased low), and for 16-bit floats the whole element as one symbol.
    A codec that adapts per chunk can beat these a little (zstd finds runs); a target below them
    needs structure these statistics do not see."""
    out = [
        "",
        "Entropy floor of the same tensors (order-0, per tensor; bits per element; a floor is a ratio,"
        " bits / width: of the fields, with the mantissa given the exponent, of the whole element):",
        "",
        "| dtype | sign | exp. | exp. given row | mantissa | mantissa given exp. "
        "| floor, fields | floor, m. given exp. | floor, element |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, (dtype, tensors) in data.items():
        width = 32 if dtype == "F32" else 16
        mbits = 23 if width == 32 else 7
        acc = np.zeros(6)
        n_total = 0
        for shape, raw in tensors:
            u = np.frombuffer(raw, np.uint32 if width == 32 else np.uint16).astype(np.int64)
            n = u.size
            sign, exp = u >> (width - 1), (u >> mbits) & 0xFF
            # the mantissa as bytes (fp32: its top 7 bits, then two whole bytes; bf16: 7 bits)
            parts = [u & 0x7F] if width == 16 else [(u >> 16) & 0x7F, (u >> 8) & 0xFF, u & 0xFF]
            top = parts[0]
            rows = shape[0] if len(shape) == 2 and shape[1] >= 256 else 0
            e_row = (
                _entropy(np.repeat(np.arange(rows), n // rows) * 256 + exp) - np.log2(rows)
                if rows
                else _entropy(exp)
            )
            m = sum(_entropy(x) for x in parts)
            m_e = m - _entropy(top) + _entropy(exp * 128 + top) - _entropy(exp)
            whole = _entropy(u) if width == 16 else float("nan")  # 2**32 symbols: not estimable
            acc += n * np.array([_entropy(sign), _entropy(exp), e_row, m, m_e, whole])
            n_total += n
        s_, e_, er, m_, me, wh = acc / n_total
        whole_ratio = "-" if np.isnan(wh) else f"{wh / width:.4f}"
        out.append(
            f"| {label} | {s_:.3f} | {e_:.3f} | {er:.3f} | {m_:.3f} | {me:.3f} "
            f"| {(s_ + e_ + m_) / width:.4f} | {(s_ + e_ + me) / width:.4f} | {whole_ratio} |"
        )
    return out


def codec_ratios(repeat: int) -> str:
    """Keyframe codecs on real weights: planes, exponent and ZipNN (when importable)."""
    from concurrent.futures import ThreadPoolExecutor

    from git_theta_like.threads import reuse_freed_memory

    reuse_freed_memory()  # as the filter does: chunk-sized buffers reused, not faulted in anew

    data = _codec_tensors()
    rows = []
    ratios: dict[tuple[str, str], float] = {}
    missing = ""
    for label, (dtype, tensors) in data.items():
        raw_total = sum(len(r) for _, r in tensors)
        for name in ("planes", "exponent", "zipnn"):
            speeds: dict[str, float] = {}
            size = 0
            for threads in (1, 2):
                coder = _zipnn(threads) if name == "zipnn" else _ours(name)
                if coder is None:
                    missing = "ZipNN is missing (`pip install zipnn`): only our codecs were measured."
                    break
                enc, dec = coder
                pool = ThreadPoolExecutor(1 if name == "zipnn" else threads)  # ZipNN threads itself
                te, td = [], []
                for _ in range(repeat):
                    t = time.perf_counter()
                    objs = list(pool.map(lambda x, enc=enc, dtype=dtype: enc(x[1], dtype, x[0]), tensors))
                    te.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    back = list(pool.map(dec, objs))
                    td.append(time.perf_counter() - t)
                    if back != [r for _, r in tensors]:
                        raise SystemExit(f"{name} did not round-trip {label}")
                pool.shutdown()
                size = sum(len(o[1]) for o in objs)  # type: ignore[index]
                speeds[f"enc{threads}"] = raw_total / statistics.median(te) / 1e6
                speeds[f"dec{threads}"] = raw_total / statistics.median(td) / 1e6
            if not speeds:
                continue
            ratios[label, name] = size / raw_total
            rows.append((label, name, size / raw_total, speeds))
    out = [
        "### Keyframe codecs on MiniLM (87 MB fp32; bf16 cast), ratio = stored / raw"
        f" (median of {repeat}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
        "",
        "| dtype | codec | ratio | vs ZipNN | encode MB/s (1 / 2 threads) | decode MB/s (1 / 2 threads) |",
        "|---|---|---|---|---|---|",
    ]
    for label, name, ratio, sp in rows:
        z = ratios.get((label, "zipnn"))
        vs = f"{ratio / z:.3f}" if z else "-"
        out.append(
            f"| {label} | {name} | {ratio:.4f} | {vs} | {sp['enc1']:.0f} / {sp['enc2']:.0f}"
            f" | {sp['dec1']:.0f} / {sp['dec2']:.0f} |"
        )
    out += codec_floor(data)
    if missing:
        out += ["", missing]
    return "\n".join(out)


def llama_like(layers: int = 16, d: int = 2048, ff: int = 5632, vocab: int = 32000) -> dict[str, np.ndarray]:
    """A Llama-shaped bf16 state dict (16 layers, hidden 2048: ~0.95B parameters, 1.8 GiB), as
    uint16 bit patterns; weights ~ N(0, 0.02) like a trained model's, norms at 1."""
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return to_bf16({"": rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)})[""]

    one = to_bf16({"": np.ones(d, np.float32)})[""]
    sd = {"model.embed_tokens.weight": w(vocab, d)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            sd[p + f"self_attn.{m}.weight"] = w(d, d)
        sd[p + "mlp.gate_proj.weight"] = w(ff, d)
        sd[p + "mlp.up_proj.weight"] = w(ff, d)
        sd[p + "mlp.down_proj.weight"] = w(d, ff)
        sd[p + "input_layernorm.weight"] = one
        sd[p + "post_attention_layernorm.weight"] = one
    sd["model.norm.weight"] = one
    sd["lm_head.weight"] = w(vocab, d)
    return sd


def lora_merged(sd: dict[str, np.ndarray], rank: int = 16) -> dict[str, np.ndarray]:
    """A version with a rank-16 update B @ A merged into every q/v projection (bf16)."""
    rng = np.random.default_rng(8)
    out = dict(sd)
    for name, a in sd.items():
        if name.endswith(("q_proj.weight", "v_proj.weight")):
            f = (a.astype(np.uint32) << 16).view(np.float32)
            b_ = rng.standard_normal((a.shape[0], rank), dtype=np.float32) * np.float32(0.01)
            a_ = rng.standard_normal((rank, a.shape[1]), dtype=np.float32) * np.float32(0.01)
            out[name] = to_bf16({"": f + b_ @ a_})[""]
    return out


def write_shards(dirpath: Path, sd: dict[str, np.ndarray], dtype: str, shards: int = 2) -> None:
    """A Hugging Face sharded checkpoint: model-0000N-of-0000M.safetensors + the index."""
    dirpath.mkdir(parents=True, exist_ok=True)
    names = list(sd)
    total = sum(a.nbytes for a in sd.values())
    groups: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for n in names:
        groups[min(shards - 1, acc * shards // total)].append(n)
        acc += sd[n].nbytes
    weight_map = {}
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(dirpath / fname, {n: sd[n] for n in g}, dtype)
        weight_map.update({n: fname for n in g})
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (dirpath / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def _scale_once(r: Repo, rec: dict[str, list[float]], v1: Path, v2: Path | None) -> None:
    files1 = sorted(v1.iterdir())

    def put(src: Path) -> None:
        for f in sorted(src.iterdir()):
            shutil.copyfile(f, r.root / f.name)

    def note(key: str, wall_cpu: tuple[float, float]) -> None:
        rec.setdefault(key, []).append(wall_cpu[0])
        rec.setdefault(key + " CPU", []).append(wall_cpu[1])
        rec.setdefault(key + " RSS", []).append(r.peak_rss())

    put(v1)
    note("add", r.timed("add", "."))
    r.git("commit", "-qm", "v1")
    rec.setdefault(".git after v1", []).append(r.git_size())
    for f in files1:
        os.utime(r.root / f.name)
    note("status after touch", r.timed("status", "--porcelain"))
    if v2 is not None:
        put(v2)
        note("add of v2", r.timed("add", "."))
        r.git("commit", "-qm", "v2")
        rec.setdefault(".git after v2", []).append(r.git_size())
        note("checkout of v1", r.timed("checkout", "HEAD~1", "--", "."))
    else:
        for f in files1:
            (r.root / f.name).unlink()
        note("checkout of v1", r.timed("checkout", "--", "."))


def _scale_run(
    label: str, v1: Path, v2: Path | None, repeat: int, work: Path
) -> tuple[dict[str, dict[str, list[float]]], int]:
    """The same git commands through both tools, tools alternating (A B A B); v1/v2 are
    directories of checkpoint files copied into the repository."""
    files1 = sorted(v1.iterdir())
    m: dict[str, dict[str, list[float]]] = {t: {} for t in TOOLS}
    size = sum(f.stat().st_size for f in files1 if f.suffix == ".safetensors")
    for rep in range(repeat):
        for tool in TOOLS:
            r = Repo(work / f"{label}-{tool}-{rep}", tool)
            _scale_once(r, m[tool], v1, v2)
            for f in files1:
                assert filecmp.cmp(f, r.root / f.name, shallow=False), f"{f.name}: checkout differs"
            shutil.rmtree(r.root)
    return m, size


def _scale_table(
    title: str, m: dict[str, dict[str, list[float]]], size: int, largest: int, targets: dict[str, float]
) -> str:
    rows: list[tuple[str, float, float, Callable[[float], str]]] = []
    for key in m["theta-like"]:
        a, b = med(m["theta-like"][key]), med(m["git-lfs"][key])
        if key.endswith(" CPU"):
            rows.append((key + " per GB", a / (size / 1e9), b / (size / 1e9), lambda x: f"{x:.2f} s"))
        else:
            rows.append((key, a, b, mib if "RSS" in key or ".git" in key else secs))
    out = [table(title, rows, targets)]
    worst = max(v for k, vs in m["theta-like"].items() if k.endswith("RSS") for v in [med(vs)])
    bound = 2 * largest + 300 * 2**20
    out.append(
        f"\nfilter peak RSS {mib(worst)} (largest tensor {mib(largest)}; bound 2x + 300 MiB = "
        f"{mib(bound)}: {'met' if worst <= bound else 'NOT met'})"
    )
    return "\n".join(out)


def scale(work: Path, repeat: int, layers: int) -> str:
    """#16's workloads: the real 87 MB MiniLM (add, status, checkout; many paired runs) and a
    Llama-shaped bf16 checkpoint in two HF shards with a LoRA-merged second version."""
    import minilm

    report = []
    small = work / "scale-minilm"
    small.mkdir()
    minilm.save(minilm.load_base(), small / "model.safetensors")
    largest_small = 30522 * 384 * 4
    runs = max(5, 2 * repeat)
    m, size = _scale_run("minilm", small, None, runs, work)
    report.append(
        _scale_table(
            f"Real all-MiniLM-L6-v2 ({size / 2**20:.0f} MiB fp32), median of {runs} paired runs",
            m,
            size,
            largest_small,
            {"add": 0.8, "checkout of v1": 1.0, "add CPU per GB": 1.5, "checkout of v1 CPU per GB": 1.5},
        )
    )
    print(report[-1], file=sys.stderr, flush=True)  # progress: the report holds it too
    shutil.rmtree(small)
    sd = llama_like(layers)
    v1, v2 = work / "scale-v1", work / "scale-v2"
    write_shards(v1, sd, "BF16")
    write_shards(v2, lora_merged(sd), "BF16")
    largest = max(a.nbytes for a in sd.values())
    nparams = sum(a.size for a in sd.values())
    del sd
    m, size = _scale_run("llama", v1, v2, repeat, work)
    report.append(
        _scale_table(
            f"Llama-shaped bf16, {nparams / 1e9:.2f}B parameters, {size / 2**30:.2f} GiB in 2 shards "
            f"({layers} layers, hidden 2048), v2 = rank-16 update merged into every q/v projection, "
            f"median of {repeat}",
            m,
            size,
            largest,
            {
                "add": 0.6,
                "add of v2": 0.6,
                "checkout of v1": 0.7,
                "add CPU per GB": 1.5,
                "add of v2 CPU per GB": 1.5,
                "checkout of v1 CPU per GB": 1.5,
            },
        )
    )
    shutil.rmtree(v1)
    shutil.rmtree(v2)
    return "\n".join(report)


SECTIONS = {"foundation", "rss", "deltas", "remote", "network", "diff", "merge", "codec", "scale"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--layers", type=int, default=12, help="encoder layers of the BERT-like model (12: ~110M)"
    )
    ap.add_argument(
        "--net-mb", type=int, default=1024, help="network: size of the one-checkpoint workload (MiB)"
    )
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="network: round-trip time of the link")
    ap.add_argument("--mbit", type=float, default=200.0, help="network: link rate each way, Mbit/s")
    ap.add_argument(
        "--scale-layers", type=int, default=16, help="scale: decoder layers of the Llama-shaped model"
    )
    ap.add_argument("--sections", default=",".join(sorted(SECTIONS)))
    ap.add_argument(
        "--merge-methods",
        help=f"merge: only these of {','.join(m[0] for m in MERGE_METHODS)} (comma-separated)",
    )
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
        if "network" in sections:
            sys.path.insert(0, str(HERE))
            parts.append(network(work, args.repeat, args.net_mb, args.rtt_ms, args.mbit))
        if "diff" in sections:
            parts.append(diff_times(work, args.repeat, args.layers))
            print(parts[-1], flush=True)
        if "merge" in sections:
            only = args.merge_methods.split(",") if args.merge_methods else None
            parts.append(merge_times(work, args.repeat, args.layers, only))
            print(parts[-1], flush=True)
        if "codec" in sections:
            parts.append(codec_ratios(args.repeat))
            print(parts[-1], flush=True)
        if "scale" in sections:
            sys.path.insert(0, str(HERE))
            parts.append(scale(work, args.repeat, args.scale_layers))
            print(parts[-1], flush=True)
        if "rss" in sections:
            parts.append(rss_scaling(work, max(1, args.layers // 6), args.layers))
            print(parts[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
