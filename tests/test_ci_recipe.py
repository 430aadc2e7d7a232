"""docs/ci/github-actions-model-diff.yml runs as written: its `run:` steps, with GitHub's
variables faked (GITHUB_STEP_SUMMARY, GITHUB_BASE_REF, the `${{ }}` expressions of its `env:`)
and a fake `gh` on PATH that records the comment, against a bare remote whose LFS objects live
in giftless; `uses:` steps are emulated (checkout: a full clone) or left out (cache, artifact,
setup-python). The pip install step is checked, not run (this venv has the package)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import git, gtl, run
from fixtures import finetuned
from lfs_server import GiftlessServer, giftless_available

from git_theta_like.manifest import Manifest

RECIPE = Path(__file__).resolve().parents[1] / "docs" / "ci" / "github-actions-model-diff.yml"
PR = "7"
ARTIFACT_URL = "https://github.com/org/model/actions/runs/1/artifacts/2"
FAKE_GH = r"""
# A stand-in for GitHub's CLI: the few calls the recipe makes, over comments kept as files in
# $FAKE_GH_STATE (one ID.md each); every call is logged; FAKE_GH_READONLY=1 refuses writes as
# GitHub does for a fork's token.
import json, os, re, shutil, subprocess, sys
from pathlib import Path

args = sys.argv[1:]
if not (os.environ.get("GH_TOKEN") and os.environ.get("GH_REPO")):
    sys.exit("gh: no GH_TOKEN/GH_REPO")
with open(os.environ["FAKE_GH_LOG"], "a") as f:
    f.write(" ".join(args) + "\n")
state = Path(os.environ["FAKE_GH_STATE"])
state.mkdir(exist_ok=True)
repo = os.environ["GH_REPO"]
readonly = bool(os.environ.get("FAKE_GH_READONLY"))


def refuse():
    print("GraphQL: Resource not accessible by integration (addComment)", file=sys.stderr)
    sys.exit(1)


if args[:2] == ["pr", "comment"] and args[3] == "--body-file":
    readonly and refuse()
    new = 1000 + len(list(state.iterdir()))
    shutil.copy(args[4], state / f"{new}.md")
    print(f"https://github.com/{repo}/pull/{args[2]}#issuecomment-{new}")
elif args[:2] == ["api", "--paginate"] and args[3] == "--jq":
    assert re.fullmatch(rf"repos/{repo}/issues/\d+/comments", args[2]), args
    comments = [{"id": int(p.stem), "body": p.read_text()} for p in sorted(state.iterdir())]
    if shutil.which("jq"):
        jq = ["jq", "-r", args[4]]
        out = subprocess.run(jq, input=json.dumps(comments), capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.exit(out.returncode)
    m = re.fullmatch(r'\.\[\] \| select\(\.body \| startswith\("(.*)"\)\) \| \.id', args[4])
    assert m, args[4]
    for c in comments:
        if c["body"].startswith(m.group(1)):
            print(c["id"])
elif args[:3] == ["api", "--method", "PATCH"] and args[4] == "-F":
    readonly and refuse()
    m = re.fullmatch(rf"repos/{repo}/issues/comments/(\d+)", args[3])
    assert m and args[5].startswith("body=@"), args
    target = state / f"{m.group(1)}.md"
    if not target.exists():
        sys.exit("HTTP 404: Not Found")
    shutil.copy(args[5][len("body=@"):], target)
    print("{}")
else:
    sys.exit(f"fake gh: unexpected call {args}")
"""


def recipe() -> dict[str, Any]:
    doc = yaml.safe_load(RECIPE.read_text())
    assert isinstance(doc, dict)
    return doc


def steps() -> list[dict[str, Any]]:
    s = recipe()["jobs"]["model-diff"]["steps"]
    assert isinstance(s, list)
    return s


def test_recipe_installs_from_the_repository_without_torch_and_caches_the_store() -> None:
    doc = recipe()
    install = doc["env"]["GIT_THETA_LIKE"]
    assert re.fullmatch(
        r"git-theta-like\[plot\] @ git\+https://github\.com/[\w.-]+/[\w.-]+(@[\w./-]+)?", install
    )
    text = RECIPE.read_text()
    runs = [s["run"] for s in steps() if "run" in s]
    assert not [r for r in runs if "torch" in r or "--no-deps" in r]
    assert not [r for r in runs if "${{" in r]  # expressions only in env: (no shell injection)
    assert 'pip install --disable-pip-version-check "$GIT_THETA_LIKE"' in text
    cache = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/cache@"))
    assert cache["with"]["path"] == ".git/lfs/objects"
    assert "${{ github.event.pull_request.base.sha }}" in cache["with"]["key"]
    checkout = next(s for s in steps() if str(s.get("uses", "")).startswith("actions/checkout@"))
    assert checkout["with"] == {"fetch-depth": 0, "lfs": False}
    assert doc["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert doc["defaults"]["run"]["shell"] == "bash"


class Runner:
    """Runs the recipe's `run:` steps in a checkout, as a GitHub runner would (bash -eo pipefail,
    a step's env over the workflow's, `${{ }}` from `context`), stopping at the first failure."""

    def __init__(self, root: Path, checkout: Path, context: dict[str, str]) -> None:
        self.checkout = checkout
        self.context = context
        self.summary = root / "step-summary.md"
        self.gh_log = root / "gh.log"
        self.comments = root / "gh-comments"
        bin_dir = root / "fake-bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "gh").write_text(f"#!{sys.executable}\n{FAKE_GH}")
        (bin_dir / "gh").chmod(0o755)
        self.path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

    def expand(self, value: object) -> str:
        def sub(m: re.Match[str]) -> str:
            expr = m.group(1).strip()
            assert expr in self.context, f"the test does not fake ${{{{ {expr} }}}}"
            return self.context[expr]

        return re.sub(r"\$\{\{(.*?)\}\}", sub, str(value))

    def run(self, only: set[str] | None = None, **env: str) -> list[tuple[str, int, str]]:
        """(step name, exit status, output) of each step run."""
        doc = recipe()
        base_env = {
            **os.environ,
            "PATH": self.path,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_BASE_REF": self.context["github.base_ref"],
            "GITHUB_REPOSITORY": self.context["github.repository"],
            "FAKE_GH_LOG": str(self.gh_log),
            "FAKE_GH_STATE": str(self.comments),
            **{k: self.expand(v) for k, v in doc["env"].items()},
        }
        done = []
        for step in steps():
            if "run" not in step:
                continue
            name = step["name"]
            if name == "Install git-theta-like" or (only is not None and name not in only):
                continue
            step_env = {**base_env, **{k: self.expand(v) for k, v in step.get("env", {}).items()}, **env}
            p = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                cwd=self.checkout,
                env=step_env,
                capture_output=True,
                text=True,
            )
            done.append((name, p.returncode, p.stdout + p.stderr))
            if p.returncode != 0:
                break
        return done


def _tensor_oids(repo: Path, rev: str) -> dict[str, str]:
    """The objects of a revision's model.safetensors, by their manifest label."""
    m = Manifest.from_text(git(repo, "show", f"{rev}:model.safetensors").stdout)
    return {name: ref.oid for name, ref in m.objects()}


def _store(repo: Path) -> set[str]:
    root = repo / ".git" / "lfs" / "objects"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@pytest.mark.slow
def test_recipe_runs_comments_falls_back_to_the_summary_gates_and_fails_on_a_bad_base(
    tmp_path: Path,
) -> None:
    if not giftless_available():
        pytest.fail("giftless is not installed: run scripts/setup (tests/requirements-lfs-server.txt)")
    server = GiftlessServer(tmp_path / "giftless").start()
    try:
        # the model repository: main has v1, the pull request's branch changes one tensor
        bare = tmp_path / "model.git"
        run("git", "init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
        work = tmp_path / "work"
        work.mkdir()
        git(work, "init", "-q", "-b", "main")
        gtl(work, "install")
        gtl(work, "track", "*.safetensors")
        (work / ".lfsconfig").write_text(f'[lfs]\n\turl = "{server.endpoint}"\n')
        (work / "model.safetensors").write_bytes(finetuned(1))
        git(work, "add", ".")
        git(work, "commit", "-qm", "v1")
        git(work, "checkout", "-q", "-b", "feature")
        (work / "model.safetensors").write_bytes(finetuned(2, ("layers.0.attn.weight",)))
        git(work, "commit", "-qam", "fine-tune layer 0")
        git(work, "remote", "add", "origin", str(bare))
        git(work, "push", "-q", "origin", "main", "feature")
        # actions/checkout: a full clone (fetch-depth 0, no LFS), before git-theta-like is installed
        ci = tmp_path / "ci"
        run("git", "clone", "-q", str(bare), str(ci), cwd=tmp_path)
        git(ci, "checkout", "-q", "--detach", "origin/feature")
        base_sha = git(ci, "rev-parse", "origin/main").stdout.strip()
        context = {
            "github.base_ref": "main",
            "github.repository": "org/model",
            "github.token": "ghs_fake",
            "github.event.pull_request.number": PR,
            "github.event.pull_request.base.sha": base_sha,
            "steps.artifact.outputs.artifact-url": ARTIFACT_URL,
        }
        runner = Runner(tmp_path, ci, context)

        # 1. the whole job: the comment is posted, with the table and the heat map's link
        done = runner.run()
        assert [(n, rc) for n, rc, _ in done] == [
            ("Configure git for git-theta-like", 0),
            ("Diff the checkpoints", 0),
            ("Post or update the comment (job summary when the token is read-only)", 0),
            ("Gate on the size of the change", 0),
        ], done
        calls = runner.gh_log.read_text().splitlines()
        assert calls == [
            f"api --paginate repos/org/model/issues/{PR}/comments --jq "
            '.[] | select(.body | startswith("<!-- git-theta-like diff -->")) | .id',
            f"pr comment {PR} --body-file comment.md",
        ], calls
        (comment,) = runner.comments.iterdir()
        body = comment.read_text()
        assert body.startswith("<!-- git-theta-like diff -->")
        assert "| `layers.0.attn.weight` |" in body
        assert f"[model-diff.png]({ARTIFACT_URL})" in body
        assert (ci / "model-diff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert '"layers.0.attn.weight"' in (ci / "model-diff.json").read_text()
        assert not runner.summary.exists()
        # only the objects the diff needed were fetched: the changed tensor's two versions
        old, new = _tensor_oids(ci, "origin/main"), _tensor_oids(ci, "HEAD")
        changed = {n for n in new if old.get(n) != new[n]}
        t = "tensor 'layers.0.attn.weight'"  # the manifest's label of that tensor's object
        assert changed == {t}
        store = _store(ci)
        assert new[t] in store and old[t] in store
        assert not store & {old[n] for n in old if n not in changed}, "unchanged tensors were fetched"

        # 2. a later push updates that comment in place, even after someone else's comment
        step = {"Post or update the comment (job summary when the token is read-only)"}
        (runner.comments / "1500.md").write_text("LGTM")
        (ci / "model-diff.md").write_text("<!-- git-theta-like diff -->\nsecond push\n")
        assert runner.run(only=step)[0][1] == 0
        assert runner.gh_log.read_text().splitlines()[-1] == (
            f"api --method PATCH repos/org/model/issues/comments/{comment.stem} -F body=@comment.md"
        )
        assert comment.read_text().startswith("<!-- git-theta-like diff -->\nsecond push\n")
        assert (runner.comments / "1500.md").read_text() == "LGTM"
        assert len(list(runner.comments.iterdir())) == 2

        # 3. a fork's read-only token: the comment is refused, the table goes to the job summary
        done = runner.run(only=step, FAKE_GH_READONLY="1")
        assert done[0][1] == 0 and "job summary" in done[0][2], done
        assert runner.summary.read_text().startswith("<!-- git-theta-like diff -->\nsecond push\n")

        # 4. the gate: a tiny threshold fails the check, a large one passes
        gate = {"Gate on the size of the change"}
        done = runner.run(only=gate, MAX_RELATIVE_CHANGE="1e-9")
        assert done[0][1] == 1 and "::error::a tensor changed by more than 1e-9" in done[0][2], done
        assert runner.run(only=gate, MAX_RELATIVE_CHANGE="0.5")[0][1] == 0

        # 5. the cache: a new runner with the store restored diffs with the server gone
        cached = tmp_path / "ci-cached"
        run("git", "clone", "-q", str(bare), str(cached), cwd=tmp_path)
        git(cached, "checkout", "-q", "--detach", "origin/feature")
        shutil.copytree(ci / ".git" / "lfs" / "objects", cached / ".git" / "lfs" / "objects")
        server.stop()
        (tmp_path / "again").mkdir()
        again = Runner(tmp_path / "again", cached, context)
        done = again.run(only={"Configure git for git-theta-like", "Diff the checkpoints"})
        assert [rc for _, rc, _ in done] == [0, 0], done
        assert "| `layers.0.attn.weight` |" in (cached / "model-diff.md").read_text()

        # 6. a bad base ref fails the job at the diff, before anything is posted
        runner.gh_log.unlink()
        (ci / "model-diff.md").unlink()
        bad = Runner(tmp_path, ci, {**context, "github.base_ref": "no-such-branch"})
        done = bad.run()
        assert [(n, rc) for n, rc, _ in done][-1] == ("Diff the checkpoints", 1), done
        assert "::error::base ref origin/no-such-branch does not resolve to a commit" in done[-1][2]
        assert not runner.gh_log.exists() and not (ci / "model-diff.md").exists()
    finally:
        server.stop()
