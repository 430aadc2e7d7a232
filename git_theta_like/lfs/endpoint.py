"""Finding the LFS server, as git-lfs does (docs/api/server-discovery.md in git-lfs):

1. `lfs.pushurl` (uploads only), then `lfs.url`;
2. `remote.<name>.lfspushurl` (uploads only), then `remote.<name>.lfsurl`;
3. else the remote's Git URL (`remote.<name>.pushurl` for uploads, then `remote.<name>.url`):
   `https://host/path` -> `https://host/path.git/info/lfs`; an SSH remote (`git@host:path`,
   `ssh://`) runs `ssh git@host git-lfs-authenticate <path> upload|download`, whose JSON answer may
   name another `href` and gives headers; a `file://` URL or a local path copies files.

Keys 1 and 2 are read from git config first, then from a committed `.lfsconfig` (the work tree's,
else HEAD's)."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pygit2

from git_theta_like.errors import RemoteError, RemoteUnreachableError, ThetaLikeError
from git_theta_like.gitio.repo import Repo


@dataclass(frozen=True)
class Endpoint:
    """Where objects go for one operation: an LFS HTTP API, or a local repository's lfs dir."""

    url: str  # the LFS API base URL (http/https), or the file:// URL / path given
    headers: dict[str, str] = field(default_factory=dict)  # from git-lfs-authenticate
    lfs_dir: Path | None = None  # set for file transfers
    note: str = ""  # e.g. why git-lfs-authenticate failed, added to connection errors
    username: str | None = None  # userinfo of the URL, if any
    password: str | None = None
    ssh: str = ""  # an SSH remote's `[user@]host:path` (git-lfs-authenticate's target)

    @property
    def is_file(self) -> bool:
        return self.lfs_dir is not None


@dataclass(frozen=True)
class _GitUrl:
    kind: str  # "http", "ssh", "file"
    url: str  # http(s) URL (userinfo stripped), or local path for "file"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: str | None = None
    path: str = ""  # ssh: the path to pass to git-lfs-authenticate


def _parse_git_url(url: str, base: Path) -> _GitUrl:
    """Classify a Git remote URL (or an LFS URL) the way Git does."""
    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        return _GitUrl("file", str(Path(path)))
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "https", "git"):
        u = urllib.parse.urlsplit(url)
        host = u.hostname or ""
        netloc = (f"[{host}]" if ":" in host else host) + (f":{u.port}" if u.port else "")
        if scheme == "git":  # git:// has no LFS API of its own: git-lfs uses https on the same host
            scheme, netloc = "https", (f"[{host}]" if ":" in host else host)
        clean = urllib.parse.urlunsplit((scheme, netloc, u.path, u.query, ""))
        return _GitUrl(
            "http",
            clean,
            urllib.parse.unquote(u.username) if u.username else None,
            urllib.parse.unquote(u.password) if u.password else None,
            host,
            str(u.port) if u.port else None,
        )
    if scheme in ("ssh", "git+ssh", "ssh+git"):
        u = urllib.parse.urlsplit(url)
        return _GitUrl(
            "ssh",
            url,
            u.username,
            None,
            u.hostname or "",
            str(u.port) if u.port else None,
            u.path.lstrip("/"),
        )
    if scheme:
        raise RemoteError(f"unsupported remote URL scheme {scheme!r} in {url!r}")
    # scp-like `[user@]host:path`: a colon before any slash (and not a Windows drive letter)
    colon = url.find(":")
    slash = url.find("/")
    if colon > 1 and (slash == -1 or colon < slash):
        userhost, path = url[:colon], url[colon + 1 :]
        user, _, host = userhost.rpartition("@")
        return _GitUrl("ssh", url, user or None, None, host.strip("[]"), None, path)
    p = Path(os.path.expanduser(url))
    return _GitUrl("file", str(p if p.is_absolute() else (base / p).resolve()))


def _derived_lfs_url(https_base: str) -> str:
    """`https://host/foo/bar` or `.../bar.git` -> `https://host/foo/bar.git/info/lfs`."""
    u = urllib.parse.urlsplit(https_base)
    path = u.path.rstrip("/")
    if not path.endswith(".git"):
        path += ".git"
    return urllib.parse.urlunsplit((u.scheme, u.netloc, path + "/info/lfs", "", ""))


def _norm_key(key: str) -> str:
    """Git config key normalisation: section and variable are case-insensitive, subsection not."""
    parts = key.split(".")
    if len(parts) < 2:
        return key.lower()
    return ".".join([parts[0].lower(), *parts[1:-1], parts[-1].lower()])


def config_entries(cfg: pygit2.Config) -> Iterator[tuple[str, str]]:
    for entry in cfg:
        yield entry.name, entry.value if entry.value is not None else ""


class _LfsConfig:
    """Git config first, then the committed `.lfsconfig` (work tree, else HEAD)."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo

    @cached_property
    def lfsconfig(self) -> dict[str, str]:
        data: bytes | None = None
        if self.repo.workdir is not None and (self.repo.workdir / ".lfsconfig").is_file():
            data = (self.repo.workdir / ".lfsconfig").read_bytes()
        elif not self.repo.git.head_is_unborn:
            data = self.repo.rev_blob("HEAD", ".lfsconfig")
        if not data:
            return {}
        with tempfile.TemporaryDirectory(prefix="gtl-lfsconfig-") as d:
            p = Path(d) / "lfsconfig"
            p.write_bytes(data)
            try:
                return {_norm_key(k): v for k, v in config_entries(pygit2.Config(str(p)))}
            except (pygit2.GitError, ValueError):
                return {}

    def get(self, key: str) -> str | None:
        try:
            value = self.repo.config_get(key)
        except (ValueError, pygit2.GitError):  # not a valid key (a remote "name" that is a URL)
            value = None
        if value:
            return value
        return self.lfsconfig.get(_norm_key(key)) or None


def lfs_setting(repo: Repo, key: str) -> str | None:
    """A git-lfs setting (`lfs.fetchinclude`, ...) as git-lfs reads it: git config, then the
    committed `.lfsconfig`."""
    return _LfsConfig(repo).get(key)


def base_dir(repo: Repo) -> Path:
    return repo.workdir if repo.workdir is not None else repo.git_dir


def _remote_lfs_dir(path: Path) -> Path:
    """The lfs dir of the repository at path (bare: `<path>/lfs`, else `<path>/.git/lfs`)."""
    if not path.exists():
        raise RemoteUnreachableError(f"cannot reach remote repository at {path}: no such directory")
    is_bare = (path / "HEAD").is_file() and (path / "objects").is_dir()
    if not is_bare and not (path / ".git").exists():
        raise RemoteUnreachableError(f"cannot reach remote repository at {path}: not a git repository")
    try:
        return Repo(path).lfs_dir
    except ThetaLikeError as e:
        raise RemoteUnreachableError(f"cannot reach remote repository at {path}: {e}") from None


def _ssh_command(repo: Repo) -> list[str]:
    """How to run ssh: GIT_SSH_COMMAND, core.sshCommand, GIT_SSH, else `ssh`."""
    cmd = os.environ.get("GIT_SSH_COMMAND") or repo.config_get("core.sshCommand")
    if cmd:
        return ["sh", "-c", cmd + ' "$@"', cmd]
    return [os.environ.get("GIT_SSH") or "ssh"]


def _ssh_authenticate(repo: Repo, g: _GitUrl, operation: str) -> dict[str, Any]:
    """Run `ssh [user@]host git-lfs-authenticate <path> <operation>`; its JSON answer."""
    target = f"{g.user}@{g.host}" if g.user else g.host
    argv = [*_ssh_command(repo)]
    if g.port:
        argv += ["-p", g.port]
    argv += [target, "git-lfs-authenticate", g.path, operation]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RemoteError(f"ssh {target} git-lfs-authenticate failed: {e}") from None
    if p.returncode != 0:
        raise RemoteError(
            f"ssh {target} git-lfs-authenticate {g.path} {operation} exited {p.returncode}: "
            + p.stderr.decode(errors="replace").strip()
        )
    try:
        answer = json.loads(p.stdout)
    except ValueError:
        raise RemoteError(f"ssh {target} git-lfs-authenticate gave no JSON: {p.stdout[:200]!r}") from None
    if not isinstance(answer, dict):
        raise RemoteError(f"ssh {target} git-lfs-authenticate gave unexpected JSON: {answer!r}")
    return answer


def resolve_endpoint(
    repo: Repo, remote: str, operation: str, url: str | None = None, authenticate: bool = True
) -> Endpoint:
    """The LFS endpoint for `operation` ("upload" or "download") on `remote`.

    `remote` is a remote's name or a URL/path (as `git push <url>` gives the pre-push hook);
    `url`, when given, is that remote's Git URL, used instead of looking it up. Without
    authenticate, an SSH remote's endpoint is the https URL derived from it, and ssh is not run
    (what `env` shows).
    """
    if operation not in ("upload", "download"):
        raise ValueError(f"operation must be upload or download, not {operation!r}")
    cfg = _LfsConfig(repo)
    base = base_dir(repo)
    keys = []
    if operation == "upload":
        keys.append("lfs.pushurl")
    keys.append("lfs.url")
    if operation == "upload":
        keys.append(f"remote.{remote}.lfspushurl")
    keys.append(f"remote.{remote}.lfsurl")
    for key in keys:
        value = cfg.get(key)
        if value:
            g = _parse_git_url(value, base)
            if g.kind == "file":
                return Endpoint(value, lfs_dir=_remote_lfs_dir(Path(g.url)))
            if g.kind == "http":
                return Endpoint(g.url.rstrip("/"), username=g.user, password=g.password)
            return _ssh_endpoint(repo, g, operation, authenticate)

    git_url = url
    named = False
    if git_url is None:
        try:
            r = repo.git.remotes[remote]
        except (KeyError, ValueError, pygit2.GitError):
            r = None
        if r is not None:
            named = True
            git_url = (r.push_url if operation == "upload" else None) or r.url
            if not git_url:
                raise RemoteError(f"remote {remote!r} has no URL; set remote.{remote}.url or lfs.url")
        else:
            git_url = remote  # `git push <url>`: the pre-push hook gets the URL as the name
    g = _parse_git_url(git_url, base)
    if g.kind == "file":
        if not named and url is None and not Path(g.url).exists() and "/" not in remote:
            raise RemoteError(
                f"no remote named {remote!r} and no LFS server configured for it "
                f"(lfs.url / remote.{remote}.lfsurl)"
            )
        return Endpoint(git_url, lfs_dir=_remote_lfs_dir(Path(g.url)))
    if g.kind == "ssh":
        return _ssh_endpoint(repo, g, operation, authenticate)
    return Endpoint(_derived_lfs_url(g.url), username=g.user, password=g.password)


def _ssh_endpoint(repo: Repo, g: _GitUrl, operation: str, authenticate: bool = True) -> Endpoint:
    derived = _derived_lfs_url(f"https://{g.host}/{g.path}")
    target = f"{g.user + '@' if g.user else ''}{g.host}:{g.path}"
    if not authenticate:
        return Endpoint(derived, ssh=target)
    try:
        answer = _ssh_authenticate(repo, g, operation)
    except RemoteError as e:
        # git-lfs goes on with the derived https URL; keep why, for the error if that fails too
        return Endpoint(derived, note=str(e), ssh=target)
    href = answer.get("href")
    header = answer.get("header") or {}
    headers = {str(k): str(v) for k, v in header.items()} if isinstance(header, dict) else {}
    return Endpoint(str(href).rstrip("/") if href else derived, headers=headers, ssh=target)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
