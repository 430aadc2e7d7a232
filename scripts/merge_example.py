"""Fine-tunes of one pre-trained model, merged with `git merge`: the accuracy of each merge.

    python scripts/merge_example.py [--dir DIR] [--keep]

A small MLP is pre-trained on six synthetic classification tasks and committed on `main`
(model.safetensors, tracked by git-theta-like). Branches `task-a`, `task-b` and `task-c`
fine-tune it on task A, B and C (all weights, plus the task's own head).

Two tasks: for each strategy, a branch from task-a merges task-b with
`git theta-like merge task-b --strategy S`: the trunk changed on both sides and is merged by S
(the merge base is the pre-trained model); each head changed on one side only and is taken as
it is.

Three tasks: for each strategy, a branch from main (the pre-trained model, so HEAD is the merge
base and not a model) merges the three fine-tunes at once, an octopus merge:
`git theta-like merge task-a task-b task-c --strategy S`. Task arithmetic's lambda is also
tuned: the lambda whose merge (computed in-process with merge_many_tensors, as the octopus merge
does) has the best normalized accuracy on a validation sample; the octopus merge with that lambda
must give the same bytes.

The script prints Markdown tables of every model's accuracy on each task
(docs/examples/merge-two-tasks.md). CPU only, one to two minutes, deterministic (fixed seeds,
single-threaded torch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

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
# three tasks, one octopus merge each; TUNED stands for the lambda tuned on validation data
TUNED = "lambda=tuned"
OCTOPUS: list[tuple[str, list[str]]] = [
    ("average", []),
    ("task-arithmetic", ["lambda=1.0"]),
    ("task-arithmetic", [TUNED]),
    ("ties", ["density=0.5", "lambda=1.0"]),
    ("ties", ["density=0.5", "lambda=1.0", "conventions=mergekit"]),
    ("dare-ties", ["drop=0.5", "seed=0"]),
    ("breadcrumbs", ["density=0.9", "gamma=0.01"]),
    ("della", ["density=0.5", "epsilon=0.15", "seed=0"]),
    ("model-stock", []),
]
LAMBDAS = [round(0.1 * i, 1) for i in range(1, 11)]  # the grid lambda is tuned on
TEST_SEED, VALIDATION_SEED = 999, 998


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
TASK_A, TASK_B, TASK_C = task(1), task(2), task(3)


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
                "c": torch.nn.Linear(HIDDEN, CLASSES),
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


def accuracy(
    state: dict[str, torch.Tensor], head: str, readout: torch.Tensor, seed: int = TEST_SEED
) -> float:
    net = Net()
    net.load_state_dict(state)
    x, y = sample(readout, 5000, seed)
    with torch.no_grad():
        return (net(x, head).argmax(1) == y).float().mean().item()


TASKS = (("a", TASK_A), ("b", TASK_B), ("c", TASK_C))


def accuracies(state: dict[str, torch.Tensor], seed: int = TEST_SEED) -> list[float]:
    """Accuracy on tasks A, B and C, each with its own head."""
    return [accuracy(state, head, readout, seed) for head, readout in TASKS]


def normalized(accs: list[float], own: list[float]) -> float:
    """The merging papers' normalized accuracy: accuracy on each task / the accuracy of that
    task's own fine-tune, averaged over the tasks."""
    return sum(a / o for a, o in zip(accs, own, strict=True)) / len(accs)


def octopus_in_process(
    base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]], strategy: str, **params: Any
) -> dict[str, torch.Tensor]:
    """What the octopus merge from the merge base gives, tensor by tensor: a tensor changed by one
    model is that model's; changed by several, the strategy's merge of all of them."""
    from git_theta_like.merge.compute import merge_many_tensors

    out = {}
    for k, b in base.items():
        changed = [m[k] for m in models if not torch.equal(m[k], b)]
        if not changed:
            out[k] = b
        elif len(changed) == 1:
            out[k] = changed[0]
        else:
            ms = [m[k] for m in models]
            out[k] = merge_many_tensors(b, ms, strategy, name=k, device="cpu", **params)
    return out


def tune_lambda(
    base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]]
) -> tuple[float, list[tuple[float, float]]]:
    """Task arithmetic's lambda with the best normalized accuracy on the validation sample (not
    the test sample the tables report), and the normalized accuracy of each lambda tried."""
    own = [
        accuracy(m, head, readout, VALIDATION_SEED) for m, (head, readout) in zip(models, TASKS, strict=True)
    ]
    tried = []
    for lam in LAMBDAS:
        merged = octopus_in_process(base, models, "task-arithmetic", **{"lambda": lam})
        tried.append((lam, normalized(accuracies(merged, VALIDATION_SEED), own)))
    best = max(tried, key=lambda t: t[1])[0]  # the first of equals: the smallest lambda
    return best, tried


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


def merge(g: Git, branches: list[str], strategy: str, params: list[str]) -> float:
    """`git theta-like merge BRANCH... --strategy S --set ...` on the CPU; its time in seconds."""
    cmd = ["theta-like", "merge", *branches, "--strategy", strategy, "--device", "cpu"]
    for p in params:
        cmd += ["--set", p]
    t = time.perf_counter()
    g(*cmd)
    return time.perf_counter() - t


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
    tuned: dict[str, dict[str, torch.Tensor]] = {}
    for (head, readout), seed in zip(TASKS, (11, 12, 13), strict=True):
        branch = f"task-{head}"
        g("checkout", "-q", "-b", branch, "main")
        ft = Net()
        ft.load_state_dict(g.model())
        train(ft, head, readout, steps=300, lr=1e-3, seed=seed)
        g.commit_model(ft.state_dict(), f"fine-tuned on {branch}")
        tuned[branch] = g.model()
    trained = time.perf_counter() - started

    # two tasks: a branch from task-a merges task-b
    rows: list[tuple[str, float, float, str]] = []
    for label, rev in (
        ("pre-trained (main)", "main"),
        ("fine-tuned on A (task-a)", "task-a"),
        ("fine-tuned on B (task-b)", "task-b"),
    ):
        g("checkout", "-q", rev)
        sd = g.model()
        rows.append((label, accuracy(sd, "a", TASK_A), accuracy(sd, "b", TASK_B), ""))
    for strategy, params in STRATEGIES:
        g("checkout", "-q", "-B", f"merge-{strategy}", "task-a")
        dt = merge(g, ["task-b"], strategy, params)
        sd = g.model()
        recipe = " ".join([strategy, *params])
        rows.append(
            (f"`git merge` {recipe}", accuracy(sd, "a", TASK_A), accuracy(sd, "b", TASK_B), f"{dt:.1f} s")
        )
    shown = g("theta-like", "show", "HEAD", "model.safetensors")

    # three tasks: from main (the merge base), an octopus merge of the three fine-tunes
    g("checkout", "-q", "main")
    base = g.model()
    fine_tunes = [tuned[f"task-{head}"] for head, _ in TASKS]
    t = time.perf_counter()
    best, tried = tune_lambda(base, fine_tunes)
    tuning = time.perf_counter() - t
    own = [accuracy(m, head, readout) for m, (head, readout) in zip(fine_tunes, TASKS, strict=True)]
    octo: list[tuple[str, list[float], str]] = [("pre-trained (main)", accuracies(base), "")]
    for m, (head, _) in zip(fine_tunes, TASKS, strict=True):
        octo.append((f"fine-tuned on {head.upper()} (task-{head})", accuracies(m), ""))
    octo_shown = ""
    merged: dict[str, dict[str, torch.Tensor]] = {}
    for i, (strategy, spec) in enumerate(OCTOPUS):
        params = [f"lambda={best:g}" if p == TUNED else p for p in spec]
        g("checkout", "-q", "-B", f"octopus-{i}-{strategy}", "main")
        dt = merge(g, ["task-a", "task-b", "task-c"], strategy, params)
        sd = g.model()
        recipe = " ".join([strategy, *params])
        if TUNED in spec:
            recipe += " (tuned)"
            expected = octopus_in_process(base, fine_tunes, strategy, **{"lambda": best})
            differ = [k for k in sd if not torch.equal(sd[k], expected[k])]
            if differ:
                raise SystemExit(f"the octopus merge and merge_many_tensors differ in {', '.join(differ)}")
        if strategy == "ties" and not octo_shown:
            graph = g("log", "--graph", "--oneline", "--no-decorate", "HEAD")
            graph = "\n".join(x.rstrip() for x in graph.splitlines())
            line = next(x for x in g("show", "HEAD:model.safetensors").splitlines() if " trunk.0.bias " in x)
            octo_shown = "\n".join(
                [
                    "$ git log --graph --oneline",
                    graph.rstrip(),
                    "$ git show HEAD:model.safetensors",
                    "...",
                    line,
                    "...",
                ]
            )
        merged[recipe] = sd
        octo.append((f"`git merge` {recipe}", accuracies(sd), f"{dt:.1f} s"))

    out = [
        "| model | task A accuracy | task B accuracy | mean | merge time |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, a, b, took in rows:
        out.append(f"| {label} | {a:.1%} | {b:.1%} | {(a + b) / 2:.1%} | {took} |")
    out.append("")
    out.append("`git theta-like show HEAD model.safetensors` after the last merge:")
    out.append("")
    out.append("```")
    out.append(shown.rstrip())
    out.append("```")
    out.append("")
    out.append("Three tasks, octopus merges from main:")
    out.append("")
    out.append("| model | task A | task B | task C | normalized | merge time |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for label, accs, took in octo:
        cells = " | ".join(f"{a:.1%}" for a in accs)
        out.append(f"| {label} | {cells} | {normalized(accs, own):.1%} | {took} |")
    out.append("")
    out.append(
        "Task arithmetic's lambda on the validation sample (normalized accuracy): "
        + ", ".join(f"{lam:g}: {n:.1%}" for lam, n in tried)
        + f"; best {best:g} ({tuning:.1f} s in-process)."
    )
    out.append("")
    for recipe, sd in merged.items():  # each conventions=mergekit merge against the paper's
        paper = merged.get(recipe.removesuffix(" conventions=mergekit"))
        if paper is not None and paper is not sd:
            same = all(torch.equal(sd[k], paper[k]) for k in sd)
            out.append(
                f"{recipe}: {'the same bytes as' if same else 'other bytes than'} the paper's conventions."
            )
            out.append("")
    out.append("The first TIES octopus merge: its history, and one merged tensor's manifest line:")
    out.append("")
    out.append("```")
    out.append(octo_shown.rstrip())
    out.append("```")
    out.append("")
    out.append(
        f"Chance is 25%. Pre-training and fine-tuning took {trained:.0f} s; the whole run "
        f"{time.perf_counter() - started:.0f} s (torch {torch.__version__}, CPU)."
    )
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
