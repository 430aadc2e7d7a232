"""`show`, `ls-files`, `status`, `env` and `version`: what is tracked, how it is stored, what
changed, and how the tool is set up."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from git_theta_like.cli.common import VERSION_LINE, open_repo
from git_theta_like.gitio.repo import Repo

if TYPE_CHECKING:
    from git_theta_like.formats.sharded import ShardedModel
    from git_theta_like.gitio.scan import TrackedFile, UnconvertedFile


@click.command()
@click.argument("rev_or_path")
@click.argument("path", required=False)
@click.option(
    "--recipe",
    "as_recipe",
    is_flag=True,
    help="Print the merge recipe REV records (all checkpoints, or PATH's) as a mergekit YAML config.",
)
def show(rev_or_path: str, path: str | None, as_recipe: bool) -> None:
    """Per-tensor storage of a checkpoint: codec, stored bytes, delta chain depth.

    `show PATH` reads the staged version, `show REV PATH` the version at REV.
    `show REV [PATH] --recipe` prints how the merge commit REV merged, as a mergekit config.
    """
    from git_theta_like.gitio.scan import load_manifest
    from git_theta_like.semdiff.listing import describe

    if as_recipe:
        from git_theta_like.merge.config import recorded_recipe
        from git_theta_like.merge.mergekit import to_yaml

        click.echo(to_yaml(recorded_recipe(open_repo(), rev_or_path, path)), nl=False)
        return
    rev, p = (None, rev_or_path) if path is None else (rev_or_path, path)
    click.echo(describe(load_manifest(open_repo(), p, rev), p))


@click.command("ls-files")
@click.argument("rev", required=False)
@click.option("-v", "--verbose", is_flag=True, help="Also list every tensor: codec, stored bytes, depth.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Stable JSON for scripts (see docs/index.md).")
def ls_files(rev: str | None, verbose: bool, as_json: bool) -> None:
    """List tracked checkpoints (staged, or at REV): tensors, logical size and stored size.

    A tracked path whose blob is not a manifest (added without the filter) is listed as
    "not converted".
    """
    from git_theta_like.display import human_size, printable
    from git_theta_like.gitio.scan import tracked_files, unconverted_files
    from git_theta_like.semdiff.listing import describe

    repo = open_repo()
    files = tracked_files(repo, rev)
    raw = unconverted_files(repo, rev)
    if as_json:
        _ls_files_json(repo, rev, files, raw)
        return
    if not files and not raw:
        click.echo("no tracked checkpoints", err=True)
        return
    lines: list[tuple[str, str]] = []
    for u in raw:
        note = _not_converted(u)
        lines.append(
            (
                u.path,
                printable(
                    f"{u.path}: {note}"
                    if verbose
                    else f"{'?':>8} {human_size(u.size):>11} {'-':>11}  {'-':<12} {u.path}  ({note})"
                ),
            )
        )
    for f in files:
        m = f.manifest
        if verbose:
            lines.append((f.path, describe(m, f.path) if m else printable(f"{f.path}: {f.error}")))
        elif m is None:
            row = f"{'?':>8} {'?':>11} {'?':>11}  {'invalid':<12} {f.path}  ({f.error})"
            lines.append((f.path, printable(row)))
        else:
            lines.append(
                (
                    f.path,
                    printable(
                        f"{len(m.tensors):>8} {human_size(m.size):>11} {human_size(m.stored_size):>11}  "
                        f"{m.format:<12} {f.path}"
                    ),
                )
            )
    if not verbose:
        click.echo(f"{'tensors':>8} {'size':>11} {'stored':>11}  {'format':<12} path")
    for _, line in sorted(lines):
        click.echo(line)
    if verbose:
        return
    for model in _sharded(repo, files, rev):
        present = [m for m in model.shards.values() if m is not None]
        size = sum(m.size for m in present)
        stored = sum(m.stored_size for m in present)
        click.echo(
            printable(
                f"{model.index_path}: one model in {len(model.shards)} shards, {model.tensor_count} tensors, "
                f"{human_size(size)}, stored {human_size(stored)}"
                + (
                    ""
                    if len(present) == len(model.shards)
                    else f" ({len(model.shards) - len(present)} shard(s) untracked)"
                )
            )
        )


def _not_converted(u: UnconvertedFile) -> str:
    return f"not converted: {u.what} is in Git; fix: {u.fix}"


def _sharded(repo: Repo, files: list[TrackedFile], rev: str | None) -> list[ShardedModel]:
    from git_theta_like.formats.sharded import sharded_models

    return sharded_models(repo, {f.path: f.manifest for f in files}, rev)


def _ls_files_json(repo: Repo, rev: str | None, files: list[TrackedFile], raw: list[UnconvertedFile]) -> None:
    """`ls-files --json`: every tracked path with the same keys, sorted by path; `stored_as` says
    what its blob is (`manifest`, `invalid` manifest, `raw` file or `lfs-pointer`); then the
    sharded models."""
    from git_theta_like.gitio.scan import index_files, resolve_commit, tree_files

    ids = index_files(repo) if rev is None else tree_files(resolve_commit(repo, rev).tree)
    oids = {path: str(oid) for path, oid in ids.items()}
    rows: list[dict[str, object]] = []
    for f in files:
        m = f.manifest
        rows.append(
            {
                "path": f.path,
                "oid": oids.get(f.path),
                "stored_as": "manifest" if m else "invalid",
                "format": m.format if m else None,
                "tensors": len(m.tensors) if m else None,
                "size": m.size if m else None,
                "stored_size": m.stored_size if m else None,
                "error": f.error,
            }
        )
    for u in raw:
        rows.append(
            {
                "path": u.path,
                "oid": u.blob,
                "stored_as": u.kind,
                "format": None,
                "tensors": None,
                "size": u.size,
                "stored_size": None,
                "error": _not_converted(u),
            }
        )
    rows.sort(key=lambda r: str(r["path"]))
    models = [
        {
            "index": model.index_path,
            "shards": sorted(model.shards),
            "tensors": model.tensor_count,
            "size": sum(m.size for m in model.shards.values() if m is not None),
            "stored_size": sum(m.stored_size for m in model.shards.values() if m is not None),
            "untracked_shards": sorted(k for k, m in model.shards.items() if m is None),
        }
        for model in _sharded(repo, files, rev)
    ]
    click.echo(json.dumps({"version": 1, "rev": rev, "files": rows, "models": models}, indent=2))


@click.command("status")
@click.option("-p", "--porcelain", is_flag=True, help="One `XY PATH` line per checkpoint, for scripts.")
@click.option("-j", "--json", "as_json", is_flag=True, help="Stable JSON for scripts (--porcelain wins).")
def status(porcelain: bool, as_json: bool) -> None:
    """Tracked checkpoints staged, modified in the working tree, or not converted (as `git lfs
    status` lists LFS files): with their sizes and where each version is (Theta: a manifest,
    Git: a blob that is not one, File: the working tree).

    --porcelain prints `XY PATH` as `git status --porcelain` does (X: the index against HEAD,
    Y: the working tree against the index; A added, M modified, D deleted, U unmerged), with
    Y `N` for a checkpoint whose blob in Git is not a manifest (not converted).
    """
    from git_theta_like.display import counted, human_size, printable
    from git_theta_like.gitio.status import Change, Version, checkpoint_status

    st = checkpoint_status(open_repo())
    if porcelain:
        for path, xy in st.porcelain():
            click.echo(f"{xy} {printable(path)}")
        return
    if as_json:
        click.echo(json.dumps(st.as_json(), indent=2))
        return

    def side(v: Version) -> str:
        what = f"{counted(v.tensors, 'tensor')}, " if v.tensors is not None else ""
        return f"{v.where}: {v.oid[:7] + ', ' if v.oid else ''}{what}{human_size(v.size)}"

    def line(c: Change) -> str:
        sides = " -> ".join(side(v) for v in (c.old, c.new) if v is not None)
        return "\t" + printable(f"{c.path} ({c.status}; {sides})")

    click.echo(st.branch)
    if st.clean:
        click.echo("\nno changes to tracked checkpoints")
        return
    if st.staged:
        click.echo("\nCheckpoints to be committed:\n")
        for c in st.staged:
            click.echo(line(c))
    if st.unstaged:
        click.echo("\nCheckpoints not staged for commit:\n")
        for c in st.unstaged:
            click.echo(line(c))
    if st.unconverted:
        click.echo("\nCheckpoints not converted (their blob in Git is not a manifest):\n")
        for u in st.unconverted:
            click.echo(
                "\t"
                + printable(f"{u.path} (Git: {u.blob[:7]}, {u.what}, {human_size(u.size)}; fix: {u.fix})")
            )


@click.command("version")
def version() -> None:
    """Print the version (as `git theta-like --version`)."""
    click.echo(VERSION_LINE)


@click.command("env")
def env() -> None:
    """Show git-theta-like's environment, as `git lfs env`: versions, the repository and its
    object store, the LFS endpoint of each remote (credentials redacted), the settings fetch
    and checkout read, the hooks, and where each driver is configured."""
    from git_theta_like.errors import NotARepositoryError

    try:
        repo: Repo | None = open_repo()
    except NotARepositoryError:
        repo = None
    for line in _env_lines(repo):
        click.echo(line)


def _tool_version(*argv: str) -> str:
    import subprocess

    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{argv[0]}: not available ({e})"
    return p.stdout.strip() or f"{argv[0]}: not available ({p.stderr.strip()})"


def _endpoint_text(repo: Repo, remote: str, operation: str) -> str:
    from git_theta_like.errors import ThetaLikeError, redact
    from git_theta_like.lfs.endpoint import resolve_endpoint

    try:
        ep = resolve_endpoint(repo, remote, operation, authenticate=False)
    except ThetaLikeError as e:
        return f"? ({e})"
    url = ep.url
    if ep.username is not None and "://" in url:
        scheme, _, rest = url.partition("://")
        secret = ":<redacted>" if ep.password else ""
        url = f"{scheme}://{ep.username}{secret}@{rest}"
    return redact(url) + (f" (SSH={ep.ssh})" if ep.ssh else "")


def _env_lines(repo: Repo | None) -> list[str]:
    from pathlib import Path

    from git_theta_like.gitio import install
    from git_theta_like.lfs import sync

    out = [VERSION_LINE, _tool_version("git", "version"), _tool_version("git-lfs", "version"), ""]
    if repo is None:
        out.append("Repository=(not in a git repository)")
    else:
        from git_theta_like.lfs.endpoint import lfs_setting
        from git_theta_like.store import store_of

        default = sync.default_remote(repo)
        remotes = [n for n in repo.git.remotes.names() if n]
        for name in ([default] if default in remotes or lfs_setting(repo, "lfs.url") else []) + sorted(
            n for n in remotes if n != default
        ):
            label = "Endpoint" if name == default else f"Endpoint ({name})"
            down, up = _endpoint_text(repo, name, "download"), _endpoint_text(repo, name, "upload")
            out.append(f"{label}={down}")
            if up != down:
                out.append(f"  push={up}")
        store = store_of(repo)
        inc, exc = sync.fetch_paths(repo, None, None)
        out += [
            f"LocalWorkingDir={repo.workdir or ''}",
            f"LocalGitDir={repo.git_dir}",
            f"LocalGitStorageDir={repo.common_dir}",
            f"LocalMediaDir={store.objects}",
            f"LocalKeepDir={store.keep}",
            f"TempDir={store.tmp}",
            f"StoreUsers={','.join(store.users_recorded())}",
            f"DefaultRemote={default}",
            f"SearchAllRemotes={str(sync.search_all_remotes(repo)).lower()}",
            f"SkipSmudge={str(sync.skip_smudge(repo)).lower()}",
            f"FetchInclude={','.join(inc)}",
            f"FetchExclude={','.join(exc)}",
            f"HooksDir={install.hooks_dir(repo)}",
        ]
        uses_lfs = bool(repo.config_get("filter.lfs.process"))
        for h in install.hook_states(repo):
            if h.ours:
                first = h.chained.name if h.chained else None
                if first is None and h.name == "pre-push" and uses_lfs:
                    first = "git lfs pre-push"  # what hooks/pre-push does without a chained hook
                state = "git-theta-like" + (f" (runs {first} first)" if first else "")
            else:
                state = "another tool's or yours (not git-theta-like's)" if h.present else "not installed"
            out.append(f"Hook {h.name}={state}")
    found = install.configured(repo.workdir or repo.git_dir if repo else Path.cwd())
    for key in install.CONFIG:
        value, scope = found.get(key.lower(), ("", ""))
        out.append(f"git config {key} = {json.dumps(value)}" + (f" ({scope})" if scope else ""))
    return out
