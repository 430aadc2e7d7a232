"""The merge strategy `git merge -s theta-like A B C`: N-way (octopus) merges of checkpoints.

Git's own octopus strategy never calls merge drivers: it merges the heads one by one with
`git read-tree` and `git merge-one-file`, a text merge that fails on any file two heads changed.
Git runs a strategy NAME as the executable `git-merge-NAME` on PATH, with the merge bases, `--`,
HEAD and the commits being merged; exit 0 leaves a clean result in the index and the work tree,
1 conflicts for the user, 2 "cannot handle" (git then restores the work tree). This strategy:

- checkpoints (paths where any version is a git-theta-like manifest) are merged once, against
  the merge base, with every head at once: `plan.plan_many` per tensor (one-sided changes taken,
  tensors changed by several heads merged with the configured strategy over all the models),
  stored through the clean path like any merge result (execute.build_result);
- everything else is merged exactly as git-merge-octopus does (read-tree per head, merge-one-file
  on what that leaves unmerged; only the last head may leave conflicts);
- nothing is written before every checkpoint is planned and stored: a bad configuration (an
  unknown model in `weights`, a gradient too short) exits 2 with its reason and leaves the
  repository as it was.

Models are named as the user wrote them on the command line (git passes the names in
GITHEAD_<oid>), `ours` being HEAD; those names key the per-model tables of `.theta-like.toml`.
With a single head to merge, the strategy is git's `recursive` (which calls the merge driver).
A checkpoint conflict leaves the path unmerged with the base, ours and the first other head that
changed it in git's three index stages, ours in the work tree, and every reason on stderr.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field

import pygit2

from git_theta_like.errors import MergeConfigError, ThetaLikeError
from git_theta_like.filters import remember_manifest
from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import walk_tree
from git_theta_like.manifest import Manifest, is_manifest
from git_theta_like.merge import config
from git_theta_like.merge.driver import print_conflicts
from git_theta_like.merge.execute import build_result, summary
from git_theta_like.merge.plan import Conflict, Plan, model_layers, plan_many
from git_theta_like.merge.state import state_file

ZERO = "0" * 40
STRATEGY = "theta-like"  # git merge -s theta-like runs git-merge-theta-like
CONFIG_OCTOPUS = "pull.octopus"  # the strategies plain `git merge A B C` tries


def _err(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> tuple[list[str], str, list[str]]:
    """git's strategy arguments `<base>... -- <head> <remote>...` as (bases, head, remotes)."""
    if "--" not in argv:
        raise MergeConfigError("usage: git-merge-theta-like <base>... -- <head> <remote>...")
    i = argv.index("--")
    bases, rest = argv[:i], argv[i + 1 :]
    if not rest:
        raise MergeConfigError("git-merge-theta-like: no head given after --")
    return [b for b in bases if not b.startswith("-")], rest[0], rest[1:]


@dataclass
class Outcome:
    """What the merge does to one checkpoint path."""

    path: str
    blob: str | None = None  # the result's blob (None: the path is not in the result)
    mode: int = 0o100644
    conflicts: list[Conflict] = field(default_factory=list)
    stages: tuple[tuple[int, str] | None, ...] = ()  # (mode, blob) of base, ours, theirs
    line: str = ""  # what was done, for people


class Octopus:
    def __init__(self, repo: Repo, bases: list[str], head: str, remotes: list[str]) -> None:
        self.repo = repo
        self.bases = bases
        self.head = head
        self.remotes = remotes
        self.checkpoint_paths: set[str] = set()  # decided by the checkpoint merge
        self.ours_tree = self.commit(head).tree

    def git(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["git", *args], input=input, capture_output=True, text=True, cwd=self.root)
        if check and p.returncode != 0:
            raise ThetaLikeError(f"git {' '.join(args[:3])} failed: {p.stderr.strip() or p.returncode}")
        return p

    @property
    def root(self) -> str:
        if self.repo.workdir is None:
            raise ThetaLikeError("an octopus merge needs a repository with a work tree")
        return str(self.repo.workdir)

    def commit(self, rev: str) -> pygit2.Commit:
        return self.repo.git.revparse_single(rev).peel(pygit2.Commit)

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        if self.git("diff-index", "--quiet", "--cached", "HEAD", "--", check=False).returncode != 0:
            _err("your local changes to the index would be overwritten by the merge; commit or stash them")
            return 2
        ours = str(self.commit(self.head).id)
        remotes = [str(self.commit(r).id) for r in self.remotes]
        names = {
            r: os.environ.get(f"GITHEAD_{r}") or os.environ.get(f"GITHEAD_{r.upper()}") or r[:12]
            for r in remotes
        }
        models, labels = [ours], ["ours"]
        for r in remotes:
            if r in models:
                continue
            if any(m != r and self.repo.git.descendant_of(m, r) for m in [ours, *remotes]):
                _err(f"{names[r]} is already contained in another head: it is not a model of the merge")
                continue
            models.append(r)
            labels.append(names[r])
        if self.bases == [ours]:
            # HEAD is the merge base (the pre-trained model): the heads are the models merged
            models, labels = models[1:], labels[1:]
        outcomes: list[Outcome] = []
        if len(models) > 1:
            if len(self.bases) != 1:
                what = (
                    "no common ancestor" if not self.bases else f"{len(self.bases)} merge bases (criss-cross)"
                )
                _err(
                    f"the heads have {what}: checkpoints are merged against one merge base; "
                    "merge the heads one at a time"
                )
                return 2
            try:
                outcomes = self.plan_checkpoints(self.bases[0], models, labels)
            except MergeConfigError as e:
                _err(f"merge not started: {e}")
                return 2
        self.checkpoint_paths = {o.path for o in outcomes}
        failed = self.merge_the_rest(remotes, names)
        if failed == 2:
            return 2
        conflicts = self.apply(outcomes)
        return 1 if conflicts or failed else 0

    # ------------------------------------------------------------------ checkpoints

    def plan_checkpoints(self, base_rev: str, models: list[str], labels: list[str]) -> list[Outcome]:
        """The merge of every checkpoint path the heads changed, objects stored; nothing in
        the index or the work tree is touched yet."""
        cfg = config.load(self.repo)  # strict: a broken configuration stops the merge here
        cfg.replay = None
        config.bind(self.repo, cfg, labels, models)
        trees = [self.commit(m).tree for m in models]
        base_tree = self.commit(base_rev).tree
        files = [dict(walk_tree(t)) for t in trees]
        base_files = dict(walk_tree(base_tree))
        paths = sorted(set(base_files).union(*files))
        out = []
        for path in paths:
            vers = [f.get(path) for f in files]
            b = base_files.get(path)
            if all(v == b for v in vers):
                continue
            blobs = {oid: self.repo.blob(oid) for oid in {*vers, b} if oid is not None}
            if not any(is_manifest(data or b"") for data in blobs.values()):
                continue  # not a checkpoint: git's octopus merges it
            started = time.perf_counter()
            o = self.plan_path(path, b, vers, blobs, labels, trees, base_tree, cfg)
            o.line = o.line or f"{path}: merged in {time.perf_counter() - started:.1f} s"
            out.append(o)
        return out

    def plan_path(
        self,
        path: str,
        b: pygit2.Oid | None,
        vers: list[pygit2.Oid | None],
        blobs: dict[pygit2.Oid, bytes | None],
        labels: list[str],
        trees: list[pygit2.Tree],
        base_tree: pygit2.Tree,
        cfg: config.MergeConfig,
    ) -> Outcome:
        def mode(tree: pygit2.Tree) -> int:
            return int(tree[path].filemode)

        def stage(tree: pygit2.Tree, oid: pygit2.Oid | None) -> tuple[int, str] | None:
            return (mode(tree), str(oid)) if oid is not None else None

        changed = [i for i, v in enumerate(vers) if v != b]
        o = Outcome(path)
        ours_files = self.ours_tree
        ours_oid = ours_files[path].id if path in ours_files else None
        theirs_i = next((i for i in changed if vers[i] != ours_oid), changed[0])
        o.stages = (
            stage(base_tree, b),
            stage(ours_files, ours_oid),
            stage(trees[theirs_i], vers[theirs_i]),
        )
        if len({vers[i] for i in changed}) == 1:
            v = vers[changed[0]]
            o.blob = str(v) if v is not None else None
            o.mode = mode(trees[changed[0]]) if v is not None else o.mode
            who = ", ".join(labels[i] for i in changed)
            o.line = f"{path}: {'deleted' if v is None else 'taken'} from {who}"
            return o
        gone = [labels[i] for i in changed if vers[i] is None]
        if gone or b is None:
            kept = [labels[i] for i in changed if vers[i] is not None]
            reason = (
                f"deleted in {', '.join(gone)}, changed in {', '.join(kept)}"
                if gone
                else f"added in {', '.join(kept)} with different content (no merge base to merge from)"
            )
            o.conflicts.append(Conflict(None, reason))
            return o
        datas = [blobs[v] or b"" for v in vers if v is not None]
        base_data = blobs[b] or b""
        if not all(is_manifest(d) for d in [*datas, base_data]):
            o.conflicts.append(
                Conflict(None, "changed in several heads, and not every version is a tracked checkpoint")
            )
            return o
        heads = [Manifest.from_bytes(d) for d in datas]
        plan = plan_many(
            path, Manifest.from_bytes(base_data), heads, labels, cfg, model_layers(self.repo, path)
        )
        if plan.conflicts:
            o.conflicts = plan.conflicts
            return o
        started = time.perf_counter()
        result, device = build_result(plan, self.repo, cfg)
        data = result.to_bytes()
        o.blob = str(self.repo.git.create_blob(data))
        o.mode = mode(trees[0])  # trees[0] holds the path: it was planned from every head's version
        remember_manifest(self.repo, path, data)
        for note in plan.notes:
            _err(f"{path}: note: {note}")
        o.line = self.describe(plan, device, time.perf_counter() - started)
        return o

    @staticmethod
    def describe(plan: Plan, device: str, seconds: float) -> str:
        if plan.whole is not None:
            return f"{plan.path}: taken as it is"
        return summary(plan, device, seconds) + f" ({len(plan.heads)} models: {', '.join(plan.labels)})"

    # ------------------------------------------------------------------ the rest, as octopus

    def merge_the_rest(self, remotes: list[str], names: dict[str, str]) -> int:
        """git-merge-octopus, head by head, on trees in which the checkpoint paths hold ours's
        version (the checkpoint merge decides those): text merges never see a manifest, and no
        intermediate checkpoint is checked out. Returns 0, 1 (the last head left conflicts) or 2
        (cannot merge)."""
        mrc = [str(self.commit(self.head).id)]
        mrt = self.git("write-tree").stdout.strip()
        non_ff = False
        failure = 0
        for sha in remotes:
            pretty = names.get(sha, sha)
            if failure:
                _err("automated merge did not work: only the last head may leave conflicts")
                return 2
            common = self.git("merge-base", "--all", sha, *mrc).stdout.split()
            if not common:
                _err(f"unable to find a common commit with {pretty}")
                return 2
            if sha in common:
                print(f"Already up to date with {pretty}", flush=True)
                continue
            if common == mrc and not non_ff:
                print(f"Fast-forwarding to: {pretty}", flush=True)
                r = self.git("read-tree", "-u", "-m", "HEAD", self.masked(sha), check=False)
                if r.returncode != 0:
                    _err(r.stderr.strip())
                    return 2
                mrc = [sha]
                mrt = self.git("write-tree").stdout.strip()
                continue
            non_ff = True
            print(f"Trying simple merge with {pretty}", flush=True)
            trees = [self.masked(c) for c in common]
            r = self.git("read-tree", "-u", "-m", "--aggressive", *trees, mrt, self.masked(sha), check=False)
            if r.returncode != 0:
                _err(r.stderr.strip())
                return 2
            nxt = self.git("write-tree", check=False)
            if nxt.returncode != 0:
                print("Simple merge did not work, trying automatic merge.", flush=True)
                mi = subprocess.run(["git", "merge-index", "-o", "git-merge-one-file", "-a"], cwd=self.root)
                if mi.returncode != 0:
                    failure = 1
                nxt = self.git("write-tree", check=False)
            mrc.append(sha)
            mrt = nxt.stdout.strip()
        return failure

    def masked(self, rev: str) -> str:
        """The tree of rev with every checkpoint path as in ours (absent where ours lacks it)."""
        if not self.checkpoint_paths:
            return rev
        index = self.repo.git_dir / "theta-like" / "octopus-index"
        index.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GIT_INDEX_FILE": str(index)}
        lines = []
        for path in sorted(self.checkpoint_paths):
            if path in self.ours_tree:
                e = self.ours_tree[path]
                lines.append(f"{int(e.filemode):o} {e.id}\t{path}")
            else:
                lines.append(f"0 {ZERO}\t{path}")
        try:
            for args, stdin in (
                (["read-tree", rev], None),
                (["update-index", "--index-info"], "".join(line + "\n" for line in lines)),
                (["write-tree"], None),
            ):
                p = subprocess.run(
                    ["git", *args], input=stdin, capture_output=True, text=True, cwd=self.root, env=env
                )
                if p.returncode != 0:
                    raise ThetaLikeError(f"git {args[0]} failed: {p.stderr.strip()}")
            return p.stdout.strip()
        finally:
            index.unlink(missing_ok=True)

    # ------------------------------------------------------------------ writing the result

    def apply(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Put each checkpoint's result (or its conflict) in the index and the work tree;
        returns the conflicted ones."""
        if not outcomes:
            return []
        root = self.repo.workdir
        assert root is not None
        lines: list[str] = []
        checkout, removed, conflicted = [], [], []
        for o in outcomes:
            lines.append(f"0 {ZERO}\t{o.path}")
            if o.conflicts:
                conflicted.append(o)
                for st, entry in enumerate(o.stages, start=1):
                    if entry is not None:
                        lines.append(f"{entry[0]:o} {entry[1]} {st}\t{o.path}")
            elif o.blob is not None:
                lines.append(f"{o.mode:o} {o.blob} 0\t{o.path}")
                checkout.append(o.path)
            else:
                removed.append(o.path)
        self.git("update-index", "--index-info", input="".join(line + "\n" for line in lines))
        if checkout:
            self.git("checkout-index", "-f", "-u", "--", *checkout)
        for path in removed:
            if (root / path).is_file():
                (root / path).unlink()
        for o in conflicted:
            if o.stages[1] is not None:
                self.git("checkout-index", "-f", "--stage=2", "--", o.path)
            self.report(o)
        for o in outcomes:
            if not o.conflicts:
                _err(o.line)
        return conflicted

    def report(self, o: Outcome) -> None:
        print_conflicts(
            o.path,
            o.conflicts,
            "ours is in the work tree; git's index holds the base, ours and one other head; "
            f"resolve with `git theta-like mergetool {o.path} --resolve FILE` (or --use ours)",
        )
        state = state_file(self.repo, o.path)
        state.parent.mkdir(parents=True, exist_ok=True)
        keys = (
            config.ENV_STRATEGY,
            config.ENV_SET,
            config.ENV_DEVICE,
            config.ENV_PRECISION,
            config.ENV_RECIPE,
        )
        state.write_text(
            json.dumps(
                {
                    "path": o.path,
                    "conflicts": [c.line() for c in o.conflicts],
                    "replay": None,
                    "octopus": True,
                    "overrides": {k: os.environ[k] for k in keys if k in os.environ},
                },
                indent=1,
            )
        )


def main(argv: list[str] | None = None) -> int:
    """`git-merge-theta-like <base>... -- <head> <remote>...` (git runs it for -s theta-like)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        bases, head, remotes = parse_args(argv)
    except MergeConfigError as e:
        _err(str(e))
        return 2
    if len(remotes) < 2:
        # two heads: git's own merge, which calls the merge driver for each checkpoint
        return subprocess.call(["git", "merge-recursive", *argv])
    try:
        return Octopus(Repo("."), bases, head, remotes).run()
    except ThetaLikeError as e:
        _err(f"merge failed: {e}")
        return 2
    except Exception as e:  # noqa: BLE001 - any failure is "cannot merge", never a corrupt result
        _err(f"merge failed (internal error): {e!r}\n{traceback.format_exc()}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
