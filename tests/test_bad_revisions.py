"""A name that is neither a revision nor a path is an error with git's words and exit status 128
(issue 13, item 8): a CI gate must not pass on a typo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import git, gtl, run
from fixtures import safetensors_bytes, small_model

AMBIGUOUS = (
    "fatal: ambiguous argument '{}': unknown revision or path not in the working tree.\n"
    "Use '--' to separate paths from revisions, like this:\n"
    "'git <command> [<revision>...] -- [<file>...]'\n"
)


def _history(repo: Path) -> None:
    sd = small_model(seed=0)
    (repo / "model.safetensors").write_bytes(safetensors_bytes(sd))
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "v1")
    name, (dtype, shape, data) = next(iter(sd.items()))
    sd[name] = (dtype, shape, bytes(reversed(data)))
    (repo / "model.safetensors").write_bytes(safetensors_bytes(sd))
    git(repo, "commit", "-qam", "v2")


@pytest.mark.slow
def test_bad_revisions_exit_128_with_gits_message(repo: Path) -> None:
    _history(repo)
    for args in (
        ("diff", "nosuchrev", "HEAD", "--exit-code"),
        ("diff", "HEAD~9"),  # beyond the root
        ("diff", "nosuchrev..HEAD", "--exit-code"),
        ("log", "nosuchrev"),
        ("log", "HEAD~9"),
    ):
        theirs = git(repo, *[a for a in args if a != "--exit-code"], check=False)
        ours = gtl(repo, *args, check=False)
        bad = next(a for a in args[1:] if a.startswith(("nosuch", "HEAD~9")))
        assert (ours.returncode, ours.stderr) == (128, AMBIGUOUS.format(bad)), args
        assert (theirs.returncode, theirs.stderr) == (ours.returncode, ours.stderr), args
        assert ours.stdout == ""
    # before `--` everything is a revision: git says "bad revision"
    for cmd in ("diff", "log"):
        theirs = git(repo, cmd, "nosuchrev", "--", "model.safetensors", check=False)
        ours = gtl(repo, cmd, "nosuchrev", "--", "model.safetensors", check=False)
        assert (ours.returncode, ours.stderr) == (128, "fatal: bad revision 'nosuchrev'\n")
        assert (theirs.returncode, theirs.stderr) == (ours.returncode, ours.stderr)
    # a second path that does not exist: git's "no such path" wording
    ours = gtl(repo, "diff", "HEAD~1", "model.safetensors", "nosuch.safetensors", check=False)
    theirs = git(repo, "diff", "HEAD~1", "model.safetensors", "nosuch.safetensors", check=False)
    assert ours.returncode == 128 and ours.stderr.startswith("fatal: nosuch.safetensors: no such path")
    assert (theirs.returncode, theirs.stderr) == (ours.returncode, ours.stderr)


def test_show_and_ls_files_name_the_bad_revision(repo: Path) -> None:
    _history(repo)
    bad = (("show", "nosuchrev", "model.safetensors"), ("ls-files", "nosuchrev"), ("ls-files", "HEAD~9"))
    for args in bad:
        r = gtl(repo, *args, check=False)
        assert (r.returncode, r.stderr) == (128, f"fatal: bad revision '{args[1]}'\n"), args
    # a good revision with a missing path is still about the path (exit 1)
    r = gtl(repo, "show", "HEAD", "nosuch.safetensors", check=False)
    assert r.returncode == 1 and "nosuch.safetensors does not exist at HEAD" in r.stderr


def test_paths_revisions_and_staged_only_paths_still_work(repo: Path) -> None:
    _history(repo)
    ok = json.loads(gtl(repo, "diff", "HEAD~1", "HEAD", "model.safetensors", "--format", "json").stdout)
    assert [f["path"] for f in ok["files"]] == ["model.safetensors"]
    assert gtl(repo, "diff", "HEAD~1", "HEAD", "--exit-code", check=False).returncode == 1
    assert gtl(repo, "diff", "HEAD", "--exit-code").returncode == 0
    # a path deleted from the working tree but still in the index is a path (not an error)
    (repo / "model.safetensors").unlink()
    r = gtl(repo, "diff", "--cached", "HEAD~1", "model.safetensors", "--exit-code", check=False)
    assert r.returncode == 1 and "model.safetensors" in r.stdout
    # a pathspec with wildcards is a path even when nothing matches it
    assert gtl(repo, "log", "*.bin").stdout == ""
    # from a subdirectory, paths are relative to it
    git(repo, "checkout", "-q", "--", "model.safetensors")
    (repo / "sub").mkdir()
    r = run("git", "theta-like", "log", "../model.safetensors", "--format", "json", cwd=repo / "sub")
    assert len(json.loads(r.stdout)["commits"]) == 2
