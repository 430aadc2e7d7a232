"""The commands and flags git-lfs users expect, with git-lfs's names and output style (issue 18):
status --porcelain / --json, env, version, pull, ls-files --json, track --dry-run / --verbose,
uninstall --local / --global, lfs.fetchinclude / lfs.fetchexclude, and errors as git prints them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import click
import pytest
from conftest import git, gtl, gtl_here, objects_in, run
from fixtures import safetensors_bytes, small_model

from git_theta_like.manifest import Manifest

RAW_ADD = ("-c", "filter.theta-like.process=", "-c", "filter.theta-like.required=false", "add")


def write(repo: Path, name: str, seed: int) -> bytes:
    data = safetensors_bytes(small_model(seed=seed))
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_bytes(data)
    return data


def test_status_and_ls_files_json(repo: Path) -> None:
    write(repo, "a/m.safetensors", 1)
    write(repo, "raw.safetensors", 2)
    git(repo, "add", "a/m.safetensors")
    git(repo, *RAW_ADD, "raw.safetensors")  # committed without the filter: not converted
    git(repo, "commit", "-qm", "v1")
    # ls-files --json (before the changes below): every tracked path, the same keys
    doc = json.loads(gtl(repo, "ls-files", "--json").stdout)
    assert (doc["version"], doc["rev"], doc["models"]) == (1, None, [])
    m = Manifest.from_text(git(repo, "show", ":a/m.safetensors").stdout)
    raw_blob = git(repo, "rev-parse", "HEAD:raw.safetensors").stdout.strip()
    raw_size = (repo / "raw.safetensors").stat().st_size
    assert doc["files"] == [
        {
            "path": "a/m.safetensors",
            "oid": git(repo, "rev-parse", ":a/m.safetensors").stdout.strip(),
            "stored_as": "manifest",
            "format": "safetensors",
            "tensors": 16,
            "size": m.size,
            "stored_size": m.stored_size,
            "error": None,
        },
        {
            "path": "raw.safetensors",
            "oid": raw_blob,
            "stored_as": "raw",
            "format": None,
            "tensors": None,
            "size": raw_size,
            "stored_size": None,
            "error": doc["files"][1]["error"],
        },
    ]
    assert doc["files"][1]["error"].startswith("not converted: the raw file is in Git")
    assert json.loads(gtl(repo, "ls-files", "HEAD~1", "-j").stdout)["files"] == []  # at a revision
    # modified, not staged; another size, so git status needs no filter to see it
    (repo / "a/m.safetensors").write_bytes(safetensors_bytes(small_model(seed=3), metadata={"v": "2"}))
    write(repo, "n.safetensors", 4)
    write(repo, "o.safetensors", 5)
    git(repo, "add", "n.safetensors", "o.safetensors")  # staged; o then deleted in the working tree
    (repo / "o.safetensors").unlink()
    assert gtl(repo, "status", "--porcelain").stdout == (
        " M a/m.safetensors\nA  n.safetensors\nAD o.safetensors\n N raw.safetensors\n"
    )
    doc = json.loads(gtl(repo, "status", "--json").stdout)
    assert (doc["version"], doc["branch"]) == (1, "main")
    n_blob = git(repo, "rev-parse", ":n.safetensors").stdout.strip()
    n_size = (repo / "n.safetensors").stat().st_size
    assert doc["staged"][0] == {
        "path": "n.safetensors",
        "status": "new",
        "from_path": None,
        "old": None,
        "new": {"where": "Theta", "oid": n_blob, "size": n_size, "tensors": 16},
    }
    changed = [
        (c["path"], c["status"], c["old"]["where"], c["new"] and c["new"]["where"]) for c in doc["unstaged"]
    ]
    assert changed == [
        ("a/m.safetensors", "modified", "Theta", "File"),
        ("o.safetensors", "deleted", "Theta", None),
    ]
    assert doc["not_converted"] == [
        {
            "path": "raw.safetensors",
            "oid": raw_blob,
            "size": raw_size,
            "stored_as": "raw",
            "committed": True,
            "fix": "git theta-like migrate --fixup (rewrites history), or "
            "git add --renormalize -- raw.safetensors and commit",
        }
    ]


def test_version_and_env(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    hooks = r / ".git" / "hooks"
    (hooks / "pre-push").write_text("#!/bin/sh\nexit 0\n")  # the user's own: chained by install
    (hooks / "pre-push").chmod(0o755)
    gtl_here(r, "install")
    git(r, "config", "--global", "diff.theta-like.textconv", "cat")  # a global one, overridden locally
    git(r, "remote", "add", "origin", "https://alice:hunter2@example.invalid/team/models.git")
    git(r, "remote", "add", "fork", "git@example.invalid:me/models.git")
    git(r, "remote", "add", "gone", str(tmp_path / "no-such-dir"))
    git(r, "config", "lfs.fetchinclude", "models/,*.safetensors")
    version = gtl(r, "version").stdout
    assert version.startswith("git-theta-like/0.1.0 (Python ")
    assert gtl(r, "--version").stdout == version
    out = gtl(r, "env").stdout
    lines = out.splitlines()
    assert lines[0] == version.strip() and lines[1].startswith("git version ") and "git-lfs/" in lines[2]
    assert "hunter2" not in out
    assert "Endpoint=https://alice:<redacted>@example.invalid/team/models.git/info/lfs" in lines
    # an SSH remote: the https URL derived from it, ssh not run
    fork = "https://example.invalid/me/models.git/info/lfs (SSH=git@example.invalid:me/models.git)"
    assert f"Endpoint (fork)={fork}" in lines
    assert any(ln.startswith("Endpoint (gone)=? (cannot reach remote repository") for ln in lines)
    assert f"LocalMediaDir={r / '.git' / 'lfs' / 'objects'}" in lines
    assert "FetchInclude=models/,*.safetensors" in lines and "FetchExclude=" in lines
    assert "Hook pre-push=git-theta-like (runs pre-push.theta-like-chained first)" in lines
    assert "Hook post-merge=git-theta-like" in lines
    assert 'git config filter.theta-like.process = "git-theta-like filter-process" (local)' in lines
    assert 'git config diff.theta-like.textconv = "git-theta-like diff-textconv" (local)' in lines
    assert 'git config pull.octopus = "theta-like octopus" (local)' in lines
    # without a chained hook, in a repository that uses git-lfs, ours runs git lfs pre-push
    (hooks / "pre-push.theta-like-chained").unlink()
    git(r, "config", "filter.lfs.process", "git-lfs filter-process")
    assert "Hook pre-push=git-theta-like (runs git lfs pre-push first)" in gtl(r, "env").stdout
    # outside a repository: the versions and the global config
    out = gtl(tmp_path, "env").stdout
    assert "Repository=(not in a git repository)" in out
    assert 'git config diff.theta-like.textconv = "cat" (global)' in out
    assert 'git config filter.theta-like.process = ""' in out


def test_track_dry_run_and_verbose(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    (r / "w.bin").write_bytes(b"x" * 100)
    (r / "sub").mkdir()
    (r / "sub" / "v.bin").write_bytes(b"y" * 100)
    git(r, "add", "w.bin", "sub/v.bin")
    out = gtl(r, "track", "--dry-run", "*.bin").stdout
    assert out.splitlines()[:4] == [
        'Tracking "*.bin"',
        "Found 2 files previously added to Git matching pattern: *.bin",
        '  "sub/v.bin"',
        '  "w.bin"',
    ]
    assert "would configure the theta-like drivers" in out
    assert not (r / ".gitattributes").exists()  # nothing written, nothing configured
    assert git(r, "config", "filter.theta-like.process", check=False).returncode == 1
    out = gtl(r, "track", "-v", "sub/*.bin").stdout
    assert 'Tracking "sub/*.bin"' in out and "Found 1 files" in out and '  "sub/v.bin"' in out
    assert (
        r / ".gitattributes"
    ).read_text() == "sub/*.bin filter=theta-like diff=theta-like merge=theta-like -text\n"
    assert "Found" not in gtl(r, "track", "sub/*.bin").stdout  # already tracked; not verbose


def test_uninstall_local_and_global(tmp_path: Path) -> None:
    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    hooks = r / ".git" / "hooks"
    mine = "#!/bin/sh\necho mine\n"
    (hooks / "pre-push").write_text(mine)
    gtl_here(r, "install", "--local")
    gtl(r, "install", "--global", "--no-hooks")  # a process: libgit2 reads HOME once per process
    (hooks / "post-merge").write_text("#!/bin/sh\necho replaced by the user\n")  # not ours any more
    out = gtl(r, "uninstall").stdout
    assert "pre-push: removed ours, put back the hook it ran first" in out
    assert "post-merge: not installed by git-theta-like, left as it is" in out
    assert (hooks / "pre-push").read_text() == mine and "replaced by the user" in (
        hooks / "post-merge"
    ).read_text()
    assert not (hooks / "pre-push.theta-like-chained").exists()
    assert git(r, "config", "--local", "filter.theta-like.process", check=False).returncode == 1
    r2 = gtl(r, "uninstall", "--local")  # again: nothing of ours left here; the global config named
    assert "still configured in the global config (git theta-like uninstall --global" in r2.stderr
    gtl(r, "uninstall", "--global")
    assert git(r, "config", "filter.theta-like.process", check=False).returncode == 1
    # a user's own octopus strategy is theirs: uninstall leaves it and does not call it ours
    gtl_here(r, "install", "--local")
    git(r, "config", "--local", "pull.octopus", "resolve")
    r3 = gtl(r, "uninstall", "--local")
    assert r3.stderr == "" and git(r, "config", "pull.octopus").stdout.strip() == "resolve"
    bad = gtl(r, "uninstall", "--local", "--global", check=False)
    assert bad.returncode == 2 and "--local and --global exclude each other" in bad.stderr


def test_errors_are_gits(tmp_path: Path, repo: Path) -> None:
    """fatal: and 128 where git dies, error: and 1 where a command fails (outside a repository:
    test_git_roundtrip.test_cli_errors_are_clear)."""
    run("git", "init", "-q", "--bare", "b.git", cwd=tmp_path)
    for cmd in ("status", "pull", "track"):
        bare = gtl(tmp_path / "b.git", cmd, "x" if cmd == "track" else "--", check=False)
        assert (bare.returncode, bare.stderr) == (
            128,
            f"fatal: this operation must be run in a work tree ({cmd})\n",
        )
    missing = gtl(repo, "show", "nosuch.safetensors", check=False)
    assert (missing.returncode, missing.stderr) == (
        1,
        "error: nosuch.safetensors does not exist in the index\n",
    )
    bad = gtl(repo, "fetch", "HEAD", "nosuchrev", check=False)
    assert (bad.returncode, bad.stderr) == (128, "fatal: bad revision 'nosuchrev'\n")
    # a reader that went away (`| head`): no traceback, git's SIGPIPE status
    p = subprocess.Popen(
        ["git", "theta-like", "version"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read()
    assert (p.wait(), err) == (141, b"")


def _origin_and_clone(tmp_path: Path) -> tuple[Path, Path]:
    """An origin with checkpoints in a/ and b/, pushed to a file:// remote, and a clone that left
    them as manifests (GIT_THETA_LIKE_SKIP_SMUDGE=1)."""
    gtl(tmp_path, "install", "--global", "--no-hooks")  # a process: libgit2 reads HOME once
    bare = tmp_path / "remote.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    gtl_here(work, "install")
    gtl_here(work, "track", "*.safetensors")
    write(work, "a/x.safetensors", 1)
    write(work, "b/y.safetensors", 2)
    git(work, "add", ".")
    git(work, "commit", "-qm", "two models")
    git(work, "remote", "add", "origin", f"file://{bare}")
    git(work, "push", "-q", "origin", "main")
    env = {**os.environ, "GIT_THETA_LIKE_SKIP_SMUDGE": "1"}
    c = tmp_path / "c"
    subprocess.run(["git", "clone", "-q", f"file://{bare}", str(c)], env=env, check=True, capture_output=True)
    return work, c


def _manifest_left(c: Path, path: str) -> bool:
    return (c / path).read_bytes().startswith(b"git-theta-like manifest v")


def test_fetch_paths_read_as_git_lfs_reads_them(tmp_path: Path) -> None:
    """lfs.fetchinclude / lfs.fetchexclude: git config, else .lfsconfig, comma-separated; a flag
    replaces the setting, an empty one clears it; patterns match as gitignore(5) patterns."""
    from git_theta_like.gitio.attributes import selects
    from git_theta_like.gitio.repo import Repo
    from git_theta_like.lfs.sync import fetch_paths, path_selected

    r = tmp_path / "r"
    r.mkdir()
    git(r, "init", "-q")
    (r / ".lfsconfig").write_text("[lfs]\n\tfetchinclude = models, *.pt\n\tfetchexclude = big/\n")
    assert fetch_paths(Repo(r), None, None) == (["models", "*.pt"], ["big/"])
    git(r, "config", "lfs.fetchexclude", "old/*")  # git config wins over .lfsconfig
    assert fetch_paths(Repo(r), None, None) == (["models", "*.pt"], ["old/*"])
    assert fetch_paths(Repo(r), ["a,b/", "c"], [""]) == (["a", "b/", "c"], [])
    for pattern, path, expected in [
        ("models", "models/x.bin", True),
        ("models", "sub/models/x.bin", True),  # no slash: a name at any depth
        ("models/", "models", False),  # a directory only
        ("models/", "models/x.bin", True),
        ("*.pt", "a/b/c.pt", True),
        ("ckpt/v*", "ckpt/v1/x.bin", True),
        ("ckpt/v*", "other/ckpt/v1/x.bin", False),  # with a slash: from the root
        ("/x.bin", "x.bin", True),
        ("/x.bin", "a/x.bin", False),
    ]:
        assert selects(pattern, path) is expected, (pattern, path)
    assert path_selected("models/x.pt", ["models"], ["*.pt"]) is False
    assert path_selected("models/x.bin", ["models"], ["*.pt"]) is True
    assert path_selected("y.bin", [], []) is True


@pytest.mark.slow
def test_fetch_and_pull_honour_lfs_fetchinclude_and_fetchexclude(tmp_path: Path) -> None:
    work, c = _origin_and_clone(tmp_path)
    a = Manifest.from_text(git(work, "show", "HEAD:a/x.safetensors").stdout)
    a_objects = {ref.oid for _, ref in a.objects()}
    git(c, "config", "lfs.fetchinclude", "a")  # a directory: everything below it
    out = gtl(c, "fetch").stdout
    assert "1 checkpoint(s)" in out and objects_in(c) == a_objects
    # pull: fetch + checkout of what the settings select; the rest stays a manifest. The flags
    # win over the settings (an empty one clears it) and select paths, as git lfs pull's
    git(c, "config", "lfs.fetchexclude", "b/*.safetensors")
    pulled = gtl(c, "pull", "origin", "-I", "").stdout
    assert "checked out a/x.safetensors" in pulled and "b/y.safetensors" not in pulled
    assert (c / "a/x.safetensors").read_bytes() == (work / "a/x.safetensors").read_bytes()
    assert _manifest_left(c, "b/y.safetensors") and objects_in(c) == a_objects
    assert git(c, "status", "--porcelain").stdout == ""


@pytest.mark.slow
def test_fetch_and_pull_settings_more(tmp_path: Path) -> None:
    """--path over lfs.fetchinclude, --all ignoring both settings (as git lfs fetch --all), a
    committed .lfsconfig's lfs.fetchexclude shared by every clone, and git config over it."""
    work, c = _origin_and_clone(tmp_path)
    git(c, "config", "lfs.fetchinclude", "a/")
    assert "0 checkpoint(s)" in gtl(c, "fetch", "--path", "nothing/").stdout and objects_in(c) == set()
    git(c, "config", "lfs.fetchexclude", "*.safetensors")
    assert "2 checkpoint(s)" in gtl(c, "fetch", "--all").stdout
    (work / ".lfsconfig").write_text("[lfs]\n\tfetchexclude = a/\n")
    git(work, "add", ".lfsconfig")
    git(work, "commit", "-qm", "lfsconfig")
    git(work, "push", "-q", "origin", "main")
    env = {**os.environ, "GIT_THETA_LIKE_SKIP_SMUDGE": "1"}
    c2 = tmp_path / "c2"
    bare = tmp_path / "remote.git"
    subprocess.run(
        ["git", "clone", "-q", f"file://{bare}", str(c2)], env=env, check=True, capture_output=True
    )
    pulled = gtl(c2, "pull").stdout
    assert "checked out b/y.safetensors" in pulled and _manifest_left(c2, "a/x.safetensors")
    git(c2, "config", "lfs.fetchexclude", "b/")
    assert "checked out a/x.safetensors" in gtl(c2, "pull").stdout
    assert (c2 / "a/x.safetensors").read_bytes() == (work / "a/x.safetensors").read_bytes()
    assert git(c2, "status", "--porcelain").stdout == ""


def test_man_pages_from_the_command_tree(tmp_path: Path) -> None:
    """One page per command a user runs, saying what --help says, valid roff; `git help
    theta-like` finds the overview on MANPATH."""
    from git_theta_like.cli import COMMANDS, main
    from git_theta_like.cli.manpage import write_pages

    written = {p.name: p.read_text() for p in write_pages(tmp_path / "man1")}
    ctx = click.Context(main)
    shown = {c for c in COMMANDS if not main.get_command(ctx, c).hidden}  # type: ignore[union-attr]
    assert "status" in shown and "pre-push" not in shown
    assert set(written) == {"git-theta-like.1"} | {f"git-theta-like-{c}.1" for c in shown}
    status = written["git-theta-like-status.1"]
    assert status.startswith('.TH "GIT-THETA-LIKE-STATUS" "1"')
    assert ".B \\-h, \\-\\-help\n" in status  # the group's help names, inherited
    assert ".B \\-p, \\-\\-porcelain\n" in status and ".BR git-theta-like (1)" in status
    assert ".BR git-theta-like\\-pull (1)" in written["git-theta-like.1"]
    every = "".join(written.values())  # one groff for all: each page starts with its .TH
    groff = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z"], input=every, capture_output=True, text=True
    )
    assert (groff.returncode, groff.stderr) == (0, "")
    env = {**os.environ, "MANPATH": str(tmp_path), "MANPAGER": "cat", "MANWIDTH": "100"}
    page = subprocess.run(
        ["git", "help", "theta-like"], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert page.returncode == 0 and "git-theta-like-status(1)" in page.stdout


def test_the_shipped_man_pages_are_current() -> None:
    """docs/man (what the wheel installs into share/man/man1) is what the commands render now."""
    from git_theta_like import __version__
    from git_theta_like.cli import main
    from git_theta_like.cli.manpage import pages

    man = Path(__file__).resolve().parent.parent / "docs" / "man"
    shipped = {p.name: p.read_text() for p in man.glob("*.1")}
    stale = "docs/man is stale: run `python -m git_theta_like.cli.manpage docs/man` (git rm pages gone)"
    assert shipped == pages(main, __version__), stale


def test_install_puts_the_man_pages_next_to_the_environment_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git theta-like install` writes the pages into <prefix>/share/man/man1 (where man looks
    for an environment whose bin is on PATH), once per version; an unwritable prefix is no error."""
    import sys

    from git_theta_like.cli.manpage import install_pages

    monkeypatch.setattr(sys, "prefix", str(tmp_path / "env"))
    where = install_pages()
    assert where == tmp_path / "env" / "share" / "man" / "man1"
    overview = where / "git-theta-like.1"
    assert overview.read_text().startswith('.TH "GIT-THETA-LIKE"')
    assert (where / "git-theta-like-install.1").is_file()
    overview.write_text(overview.read_text() + '.\\" kept\n')
    install_pages()
    assert overview.read_text().endswith('.\\" kept\n')  # this version's pages: left alone
    (tmp_path / "ro").write_text("a file where a directory should be")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "ro"))
    assert install_pages() is None
