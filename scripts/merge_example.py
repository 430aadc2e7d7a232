"""Two fine-tunes of one pre-trained model, merged with `git merge`: the accuracy of each merge.

    python scripts/merge_example.py [--dir DIR] [--keep]

A small MLP is pre-trained on six synthetic classification tasks and committed on `main`
(model.safetensors, tracked by git-theta-like). Branch `task-a` fine-tunes it on task A,
branch `task-b` on task B (all weights, plus the task's own head). Then, for each strategy, a
branch from task-a merges task-b with `git theta-like merge task-b --strategy S`: the trunk
changed on both sides and is merged by S (the merge base is the pre-trained model); each head
changed on one side only and is taken as it is. The script prints a Markdown table of every
model's accuracy on both tasks (docs/examples/merge-two-tasks.md). CPU only, about a minute,
deterministic (fixed seeds, single-threaded torch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

D, HIDDEN, TEACHER, CLASSES, PRETRAIN_TASKS = 32, 128, 96, 4, 6
STRATEGIES: list[tuple[str, list[str]]] = [
    ("ours", []),  # baseline: keep task A's trunk (task B keeps only its head)
    ("average", []),
    ("task-arithmetic", ["lambda=1.0"]),
    ("ties", ["density=0.5", "lambda=1.0"]),
    ("dare", ["drop=0.5", "seed=0"]),
]


# ------------------------------------------------------------------ data: a random teacher network


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


TEACHER_W = torch.randn(TEACHER, D, generator=_gen(0)) / D**0.5


def task(seed: int, heads: int = 1) -> torch.Tensor:
    """A task: `heads` linear read-outs of the teacher's features, each a 4-way argmax."""
    return torch.randn(heads, CLASSES, TEACHER, generator=_gen(seed))


def sample(readout: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, D, generator=_gen(seed))
    feats = torch.tanh(x @ TEACHER_W.T)
    y = torch.einsum("nt,hct->nhc", feats, readout).argmax(2)  # [n, heads]
    return x, y


PRETRAIN = task(100, PRETRAIN_TASKS)
TASK_A, TASK_B = task(1), task(2)


# ------------------------------------------------------------------ the model


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(
            torch.nn.Linear(D, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU()
        )
        self.heads = torch.nn.ModuleDict(
            {
                "pretrain": torch.nn.Linear(HIDDEN, CLASSES * PRETRAIN_TASKS),
                "a": torch.nn.Linear(HIDDEN, CLASSES),
                "b": torch.nn.Linear(HIDDEN, CLASSES),
            }
        )

    def forward(self, x: torch.Tensor, head: str) -> torch.Tensor:
        out = self.heads[head](self.trunk(x))
        return out.reshape(len(x), CLASSES, -1)  # [n, classes, heads]


def train(net: Net, head: str, readout: torch.Tensor, steps: int, lr: float, seed: int) -> None:
    x, y = sample(readout, 20000, seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = _gen(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (256,), generator=g)
        loss = torch.nn.functional.cross_entropy(net(x[idx], head), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


def accuracy(state: dict[str, torch.Tensor], head: str, readout: torch.Tensor) -> float:
    net = Net()
    net.load_state_dict(state)
    x, y = sample(readout, 5000, 999)
    with torch.no_grad():
        return (net(x, head).argmax(1) == y).float().mean().item()


# ------------------------------------------------------------------ git


class Git:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env.update(
            GIT_AUTHOR_NAME="example",
            GIT_AUTHOR_EMAIL="example@example.invalid",
            GIT_COMMITTER_NAME="example",
            GIT_COMMITTER_EMAIL="example@example.invalid",
        )

    def __call__(self, *args: str) -> str:
        p = subprocess.run(["git", *args], cwd=self.root, env=self.env, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"git {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
        return p.stdout + p.stderr

    def commit_model(self, state: dict[str, torch.Tensor], message: str) -> None:
        save_file({k: v.contiguous() for k, v in state.items()}, str(self.root / "model.safetensors"))
        self("add", "model.safetensors")
        self("commit", "-qm", message)

    def model(self) -> dict[str, torch.Tensor]:
        return load_file(str(self.root / "model.safetensors"))


def run(root: Path) -> str:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # small matrices: threads only contend; and bit-reproducible
    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    g = Git(root)
    g("init", "-q", "-b", "main")
    g("theta-like", "install")
    g("theta-like", "track", "*.safetensors")
    g("add", ".gitattributes")
    g("commit", "-qm", "track checkpoints")

    net = Net()
    train(net, "pretrain", PRETRAIN, steps=1500, lr=3e-3, seed=10)
    g.commit_model(net.state_dict(), "pre-trained on six tasks")
    for branch, head, readout, seed in (("task-a", "a", TASK_A, 11), ("task-b", "b", TASK_B, 12)):
        g("checkout", "-q", "-b", branch, "main")
        ft = Net()
        ft.load_state_dict(g.model())
        train(ft, head, readout, steps=300, lr=1e-3, seed=seed)
        g.commit_model(ft.state_dict(), f"fine-tuned on {branch}")
    trained = time.perf_counter() - started

    rows: list[tuple[str, str, float, float, str]] = []
    for label, rev in (
        ("pre-trained (main)", "main"),
        ("fine-tuned on A (task-a)", "task-a"),
        ("fine-tuned on B (task-b)", "task-b"),
    ):
        g("checkout", "-q", rev)
        sd = g.model()
        rows.append((label, "", accuracy(sd, "a", TASK_A), accuracy(sd, "b", TASK_B), ""))
    for strategy, params in STRATEGIES:
        g("checkout", "-q", "-B", f"merge-{strategy}", "task-a")
        cmd = ["theta-like", "merge", "task-b", "--strategy", strategy, "--device", "cpu"]
        for p in params:
            cmd += ["--set", p]
        t = time.perf_counter()
        g(*cmd)
        dt = time.perf_counter() - t
        sd = g.model()
        recipe = " ".join([strategy, *params])
        rows.append(
            (
                f"`git merge` {recipe}",
                recipe,
                accuracy(sd, "a", TASK_A),
                accuracy(sd, "b", TASK_B),
                f"{dt:.1f} s",
            )
        )
    shown = g("theta-like", "show", "HEAD", "model.safetensors")

    out = [
        "| model | task A accuracy | task B accuracy | mean | merge time |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, _, a, b, dt in rows:
        out.append(f"| {label} | {a:.1%} | {b:.1%} | {(a + b) / 2:.1%} | {dt} |")
    out.append("")
    out.append(
        f"Chance is 25%. Pre-training and fine-tuning took {trained:.0f} s; the whole run "
        f"{time.perf_counter() - started:.0f} s (torch {torch.__version__}, CPU)."
    )
    out.append("")
    out.append("`git theta-like show HEAD model.safetensors` after the last merge:")
    out.append("")
    out.append("```")
    out.append(shown.rstrip())
    out.append("```")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, help="create the repository here (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repository")
    args = ap.parse_args()
    if shutil.which("git-theta-like") is None:
        raise SystemExit(
            "git-theta-like is not on PATH: run scripts/setup, then export PATH=$PWD/.venv/bin:$PATH"
        )
    if args.dir:
        print(run(args.dir))
        return
    tmp = tempfile.mkdtemp(prefix="gtl-merge-example-")
    try:
        print(run(Path(tmp) / "repo"))
    finally:
        if args.keep:
            print(f"\nrepository kept in {tmp}/repo")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
