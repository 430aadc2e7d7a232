"""Moving objects to and from a Git LFS remote: batched, concurrent, verified.

Any Git LFS server works (GitHub, Hugging Face Hub, GitLab, giftless, ...), as does a `file://` or
local-path remote, where objects are copied straight into that repository's own `lfs/objects`
directory (what git-lfs's standalone file transfer does).

Finding the server, as git-lfs does (docs/api/server-discovery.md in git-lfs):

1. `lfs.pushurl` (uploads only), then `lfs.url`;
2. `remote.<name>.lfspushurl` (uploads only), then `remote.<name>.lfsurl`;
3. else the remote's Git URL (`remote.<name>.pushurl` for uploads, then `remote.<name>.url`):
   `https://host/path` -> `https://host/path.git/info/lfs`; an SSH remote (`git@host:path`,
   `ssh://`) runs `ssh git@host git-lfs-authenticate <path> upload|download`, whose JSON answer may
   name another `href` and gives headers; a `file://` URL or a local path copies files.

Keys 1 and 2 are read from git config first, then from a committed `.lfsconfig` (the work tree's,
else HEAD's).

HTTP is the batch API (`POST <endpoint>/objects/batch`) followed by "basic" transfers (PUT with
an optional verify POST, GET), using only the standard library. Credentials come from
`git credential fill` when the server answers 401; `http.extraHeader` and the actions' headers
are sent. Connection errors, 5xx and 429 are retried with exponential backoff; other 4xx are not.

Every downloaded object streams into `<lfs>/tmp`, is checked against its oid (SHA-256), synced and
renamed into place: the store never holds a partial or corrupt object.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import http.client
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, Any, TypeVar

import pygit2

from git_theta_like import __version__, faults
from git_theta_like.errors import ObjectMissingError, ThetaLikeError
from git_theta_like.gitio.repo import Repo
from git_theta_like.store.local import LocalStore

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"
USER_AGENT = f"git-theta-like/{__version__}"
BATCH_SIZE = 100
CONCURRENCY = 8
CHUNK = 1 << 20
RETRY_AFTER_CAP = 30.0

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Errors


class RemoteError(ThetaLikeError):
    """A transfer to or from a remote failed; `oids` names the objects concerned (if any)."""

    def __init__(self, message: str, oids: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.oids: list[str] = list(oids)


class RemoteUnreachableError(RemoteError):
    """The server could not be reached (connection refused, DNS, timeout, repeated 5xx)."""


class RemoteAuthError(RemoteError):
    """The server refused our credentials (401 after asking for them, or 403)."""


class RemoteObjectMissingError(RemoteError):
    """The server does not have an object we asked for."""


class RemoteCorruptError(RemoteError):
    """What the server sent does not hash to the object's id."""


class RemoteDiskFullError(RemoteError):
    """No space left on the device an object was being written to."""


class _Retryable(Exception):
    """An attempt failed in a way worth retrying; `error` is what to raise when tries run out."""

    def __init__(self, error: RemoteError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


# --------------------------------------------------------------------------------------------
# Progress


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class Progress:
    """`label: done/total objects, bytes, rate` on stderr, redrawn in place.

    Shown only when stderr is a terminal, or when GIT_THETA_LIKE_PROGRESS=1 (=0 hides it).
    Thread-safe: transfers report from worker threads.
    """

    def __init__(
        self,
        label: str,
        *,
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        min_interval: float = 0.2,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            env = os.environ.get("GIT_THETA_LIKE_PROGRESS")
            enabled = env == "1" if env in ("0", "1") else _isatty(self.stream)
        self.enabled = enabled
        self.min_interval = min_interval
        self.total_objects = 0
        self.total_bytes = 0
        self.done_objects = 0
        self.done_bytes = 0
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False
        self._lock = threading.Lock()

    def add_total(self, objects: int, nbytes: int) -> None:
        with self._lock:
            self.total_objects += objects
            self.total_bytes += nbytes
        self._draw()

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self.done_bytes += nbytes
        self._draw()

    def object_done(self) -> None:
        with self._lock:
            self.done_objects += 1
        self._draw(force=self.done_objects == self.total_objects)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        return (
            f"{self.label}: {self.done_objects}/{self.total_objects} objects, "
            f"{_human(self.done_bytes)}/{_human(self.total_bytes)}, {_human(self.done_bytes / elapsed)}/s"
        )

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self.min_interval:
                return
            self._last = now
            self._shown = True
            self.stream.write("\r" + self.line() + "\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        if not self.enabled or (not self._shown and not self.total_objects):
            return
        self._draw(force=True)
        self.stream.write("\n")
        self.stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# Endpoint discovery


@dataclass(frozen=True)
class Endpoint:
    """Where objects go for one operation: an LFS HTTP API, or a local repository's lfs dir."""

    url: str  # the LFS API base URL (http/https), or the file:// URL / path given
    headers: dict[str, str] = field(default_factory=dict)  # from git-lfs-authenticate
    lfs_dir: Path | None = None  # set for file transfers
    note: str = ""  # e.g. why git-lfs-authenticate failed, added to connection errors
    username: str | None = None  # userinfo of the URL, if any
    password: str | None = None

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


def _config_entries(cfg: pygit2.Config) -> Iterator[tuple[str, str]]:
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
                return {_norm_key(k): v for k, v in _config_entries(pygit2.Config(str(p)))}
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


def _base_dir(repo: Repo) -> Path:
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


def resolve_endpoint(repo: Repo, remote: str, operation: str, url: str | None = None) -> Endpoint:
    """The LFS endpoint for `operation` ("upload" or "download") on `remote`.

    `remote` is a remote's name or a URL/path (as `git push <url>` gives the pre-push hook);
    `url`, when given, is that remote's Git URL, used instead of looking it up.
    """
    if operation not in ("upload", "download"):
        raise ValueError(f"operation must be upload or download, not {operation!r}")
    cfg = _LfsConfig(repo)
    base = _base_dir(repo)
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
            return _ssh_endpoint(repo, g, operation)

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
        return _ssh_endpoint(repo, g, operation)
    return Endpoint(_derived_lfs_url(g.url), username=g.user, password=g.password)


def _ssh_endpoint(repo: Repo, g: _GitUrl, operation: str) -> Endpoint:
    derived = _derived_lfs_url(f"https://{g.host}/{g.path}")
    try:
        answer = _ssh_authenticate(repo, g, operation)
    except RemoteError as e:
        # git-lfs goes on with the derived https URL; keep why, for the error if that fails too
        return Endpoint(derived, note=str(e))
    href = answer.get("href")
    header = answer.get("header") or {}
    headers = {str(k): str(v) for k, v in header.items()} if isinstance(header, dict) else {}
    return Endpoint(str(href).rstrip("/") if href else derived, headers=headers)


# --------------------------------------------------------------------------------------------
# HTTP


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str]:
    u = urllib.parse.urlsplit(url)
    return u.scheme, u.netloc


@dataclass
class _Creds:
    username: str
    password: str
    approved: bool = False

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but never carries an Authorization header to another host."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            for k in [k for k in new.headers if k.lower() == "authorization"]:
                del new.headers[k]
        return new


class _Http:
    """Requests with retries, credentials from git, `http.extraHeader` and TLS settings."""

    def __init__(self, repo: Repo, *, retries: int, backoff: float, timeout: float) -> None:
        self.repo = repo
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout
        self._creds: dict[tuple[str, str], _Creds] = {}
        self._creds_lock = threading.Lock()
        self._entries: list[tuple[str, str]] | None = None
        ctx = ssl.create_default_context()
        cainfo = repo.config_get("http.sslCAInfo") or os.environ.get("GIT_SSL_CAINFO")
        if cainfo:
            try:
                ctx.load_verify_locations(cafile=os.path.expanduser(cainfo))
            except (OSError, ssl.SSLError) as e:
                raise RemoteError(f"cannot load http.sslCAInfo {cainfo}: {e}") from None
        if not repo.config_bool("http.sslVerify", default=True) or os.environ.get("GIT_SSL_NO_VERIFY"):
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        https = urllib.request.HTTPSHandler(context=ctx)
        redirect = _RedirectHandler()
        self._opener = urllib.request.build_opener(https, redirect)  # honours http(s)_proxy, no_proxy
        self._direct = urllib.request.build_opener(https, redirect, urllib.request.ProxyHandler({}))

    def seed_credentials(self, url: str, username: str | None, password: str | None) -> None:
        if username and password:
            with self._creds_lock:
                self._creds.setdefault(_origin(url), _Creds(username, password))

    # -- headers

    def extra_headers(self, url: str) -> dict[str, str]:
        """`http.extraHeader` and `http.<url>.extraHeader` values that apply to url."""
        with self._creds_lock:
            if self._entries is None:
                self._entries = list(_config_entries(self.repo.git.config))
        out: dict[str, str] = {}
        values: list[str] = []
        for name, value in self._entries:
            lname = name.lower()
            if not lname.startswith("http.") or not lname.endswith(".extraheader"):
                continue
            scope = name[len("http.") : -len(".extraheader")]
            if scope and not url.startswith(scope.rstrip("/")):
                continue
            if value == "":
                values.clear()  # an empty value resets the list, as in git
            else:
                values.append(value)
        for v in values:
            k, sep, val = v.partition(":")
            if sep:
                out[k.strip()] = val.strip()
        return out

    # -- credentials

    def _cred_input(self, url: str, username: str | None = None) -> bytes:
        u = urllib.parse.urlsplit(url)
        lines = [f"protocol={u.scheme}", f"host={u.netloc}"]
        if u.path.strip("/"):
            lines.append(f"path={u.path.strip('/')}")
        if username:
            lines.append(f"username={username}")
        return ("\n".join(lines) + "\n\n").encode()

    def _credential(self, action: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["git", "credential", action],
            input=data,
            capture_output=True,
            cwd=_base_dir(self.repo),
            timeout=600,
        )

    def _fill(self, url: str) -> _Creds:
        try:
            p = self._credential("fill", self._cred_input(url))
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RemoteAuthError(f"authentication failed for {url}: git credential fill: {e}") from None
        if p.returncode != 0:
            why = p.stderr.decode(errors="replace").strip().splitlines()
            raise RemoteAuthError(
                f"authentication failed for {url}: the server asks for credentials and "
                f"git credential fill gave none ({why[-1] if why else 'exit ' + str(p.returncode)}); "
                "configure a credential helper"
            )
        fields: dict[str, str] = {}
        for line in p.stdout.decode(errors="replace").splitlines():
            k, sep, v = line.partition("=")
            if sep:
                fields[k] = v
        if "username" not in fields or "password" not in fields:
            raise RemoteAuthError(f"authentication failed for {url}: git credential fill gave no password")
        return _Creds(fields["username"], fields["password"])

    def _store(self, action: str, url: str, creds: _Creds) -> None:
        data = self._cred_input(url, creds.username)[:-1] + f"password={creds.password}\n\n".encode()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self._credential(action, data)

    def _creds_for(self, url: str) -> _Creds | None:
        with self._creds_lock:
            return self._creds.get(_origin(url))

    def _after_401(self, url: str, used: _Creds | None) -> _Creds:
        """Credentials to retry with after a 401 that was sent with `used` (or none)."""
        key = _origin(url)
        with self._creds_lock:
            current = self._creds.get(key)
            if current is not None and current is not used:
                return current  # another thread already got fresh ones
            if used is not None:
                self._creds.pop(key, None)
                self._store("reject", url, used)
                raise RemoteAuthError(
                    f"authentication failed for {url}: the server rejected the credentials "
                    f"for user {used.username!r}"
                )
            creds = self._fill(url)
            self._creds[key] = creds
            return creds

    def _approve(self, url: str, creds: _Creds | None) -> None:
        if creds is None or creds.approved:
            return
        with self._creds_lock:
            if creds.approved:
                return
            creds.approved = True
        self._store("approve", url, creds)

    # -- requests

    def open(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Callable[[], bytes | Iterable[bytes] | None] | None = None,
        *,
        use_creds: bool = True,
        what: str,
        note: str = "",
    ) -> http.client.HTTPResponse:
        """One request (no retries), answering 401 with credentials once; raises on non-2xx.

        A retryable failure (connection error, 5xx, 429) raises _Retryable; others RemoteError.
        `body` is called for each send, so a streamed body can be sent again.
        """
        creds = self._creds_for(url) if use_creds else None
        for attempt in range(2):
            h = {"User-Agent": USER_AGENT, **self.extra_headers(url), **headers}
            if creds is not None and not any(k.lower() == "authorization" for k in h):
                h["Authorization"] = creds.header()
            req = urllib.request.Request(url, data=body() if body else None, headers=h, method=method)
            host = urllib.parse.urlsplit(url).hostname or ""
            opener = self._direct if _is_loopback(host) else self._opener
            try:
                resp: http.client.HTTPResponse = opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as e:
                status, message, retry_after = e.code, _error_message(e), e.headers.get("Retry-After")
                e.close()
                if status == 401:
                    if attempt == 0 and use_creds:
                        creds = self._after_401(url, creds)
                        continue
                    if creds is not None and use_creds:
                        self._after_401(url, creds)  # rejects them and raises
                    raise RemoteAuthError(f"authentication failed for {url} ({what}): {message}") from None
                if status == 403:
                    raise RemoteAuthError(
                        f"authentication failed for {url} ({what}): access denied (403): {message}"
                    ) from None
                if status == 429 or status >= 500:
                    raise _Retryable(
                        RemoteUnreachableError(f"LFS server at {url} failed ({what}): {status} {message}"),
                        _retry_after(retry_after),
                    ) from None
                raise _HttpStatusError(status, message, url) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise RemoteUnreachableError(
                        f"cannot reach LFS server at {url}: TLS certificate not trusted: {reason}"
                    ) from None
                if isinstance(reason, OSError) and reason.errno == errno.ENOSPC:
                    raise RemoteDiskFullError(f"no space left on device ({what})") from None
                extra = f" ({note})" if note else ""
                raise _Retryable(
                    RemoteUnreachableError(f"cannot reach LFS server at {url}: {_describe(reason)}{extra}")
                ) from None
            self._approve(url, creds)
            return resp
        raise AssertionError("unreachable")

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Run attempt up to `retries` times while it raises _Retryable, backing off between."""
        for i in range(self.retries):
            try:
                return attempt()
            except _Retryable as r:
                if i + 1 >= self.retries:
                    raise r.error from None
                delay = self.backoff * (2**i)
                if r.retry_after is not None:
                    delay = max(delay, r.retry_after)
                time.sleep(delay)
        raise AssertionError("unreachable")


class _HttpStatusError(RemoteError):
    """A non-retryable HTTP status other than 401/403 (the caller decides what it means)."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"LFS server at {url} answered {status}: {message}")
        self.status = status
        self.message = message
        self.url = url


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP)
    except ValueError:
        return None


def _describe(reason: object) -> str:
    if isinstance(reason, TimeoutError | http.client.RemoteDisconnected | ConnectionError):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason) or type(reason).__name__


def _error_message(e: urllib.error.HTTPError) -> str:
    """The `message` of an LFS JSON error body, else the body's start, else the reason."""
    try:
        raw = e.read(4096)
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and doc.get("message"):
            return str(doc["message"])
    except ValueError:
        pass
    text = raw.decode(errors="replace").strip()
    return text[:200] if text else str(e.reason)


# --------------------------------------------------------------------------------------------
# Writing objects


def _receive(
    store: LocalStore,
    oid: str,
    size: int,
    chunks: Iterable[bytes],
    source: str,
    progress: Progress,
    fault: str = "download",
) -> bool:
    """Stream chunks into store as object oid: temp file, SHA-256 check, fsync, rename.

    Returns False when the object was already there. Nothing is left behind on failure.
    """
    dest = store.path(oid)
    fd: int | None = None
    tmp_name: str | None = None
    got = 0
    try:
        store.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix="gtl-recv-")
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as f:
            fd = None
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
                got += len(chunk)
                progress.advance(len(chunk))
            if got < size:
                raise _Retryable(
                    RemoteError(
                        f"transfer of object {oid} from {source} was cut short: {got} of {size} bytes", [oid]
                    )
                )
            if h.hexdigest() != oid:
                raise RemoteCorruptError(
                    f"object {oid} from {source} is corrupt: its {got} bytes hash to {h.hexdigest()}; "
                    "nothing was stored",
                    [oid],
                )
            if store.durable:
                f.flush()
                os.fsync(f.fileno())
        if dest.exists():
            os.unlink(tmp_name)
            return False
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_name, dest)
        tmp_name = None
        store.keep_link(oid)
        faults.point(fault)
        return True
    except BaseException as e:
        if fd is not None:
            os.close(fd)
        if tmp_name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
        progress.advance(-got)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise RemoteDiskFullError(
                f"no space left on device while writing object {oid} to {store.root}: {e.strerror}", [oid]
            ) from None
        if isinstance(e, http.client.HTTPException | ConnectionError | TimeoutError):
            raise _Retryable(
                RemoteUnreachableError(
                    f"transfer of object {oid} from {source} failed: {_describe(e)}", [oid]
                )
            ) from None
        raise


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _response_chunks(resp: http.client.HTTPResponse) -> Iterator[bytes]:
    with resp:
        while chunk := resp.read(CHUNK):
            yield chunk


# --------------------------------------------------------------------------------------------
# The client


FATAL = (RemoteUnreachableError, RemoteAuthError, RemoteDiskFullError)


def _combine(errors: list[ThetaLikeError]) -> ThetaLikeError:
    seen: dict[str, ThetaLikeError] = {}
    for e in errors:
        seen.setdefault(str(e), e)
    unique = list(seen.values())
    if len(unique) == 1:
        return unique[0]
    classes = {type(e) for e in unique}
    cls = classes.pop() if len(classes) == 1 and issubclass(next(iter(classes)), RemoteError) else RemoteError
    if cls is _HttpStatusError:
        cls = RemoteError
    lines = [str(e) for e in unique[:10]]
    if len(unique) > 10:
        lines.append(f"... and {len(unique) - 10} more")
    oids = [o for e in unique if isinstance(e, RemoteError) for o in e.oids]
    return cls(f"{len(unique)} transfers failed:\n  " + "\n  ".join(lines), oids)


class _Run:
    """Transfers of one upload/download call: a thread pool, errors collected, stop on fatal."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gtl-lfs")
        self.futures: list[Future[bool]] = []
        self.errors: list[ThetaLikeError] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def fail(self, e: ThetaLikeError) -> None:
        with self.lock:
            self.errors.append(e)
        if isinstance(e, FATAL):
            self.stop.set()

    def submit(self, fn: Callable[[], bool]) -> None:
        def task() -> bool:
            if self.stop.is_set():
                return False
            try:
                return fn()
            except ThetaLikeError as e:
                self.fail(e)
            except OSError as e:
                self.fail(RemoteError(f"transfer failed: {e}"))
            return False

        self.futures.append(self.pool.submit(task))

    def finish(self) -> int:
        try:
            done = sum(1 for f in self.futures if f.result())
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.errors:
            raise _combine(self.errors)
        return done


def _unique(oids: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for oid, size in oids:
        out.setdefault(oid, int(size))
    return out


def _chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class RemoteStore:
    """Objects on a Git LFS remote, moved to and from `repo.store`.

    `remote` is a remote's name (or a URL, as `git push <url>` gives the pre-push hook); `url`,
    when given, is the remote's Git URL, used instead of looking it up. `lfs.url`,
    `remote.<name>.lfsurl` (git config or `.lfsconfig`) take precedence, as in git-lfs.
    """

    def __init__(
        self,
        repo: Repo,
        remote: str = "origin",
        url: str | None = None,
        *,
        batch_size: int = BATCH_SIZE,
        concurrency: int | None = None,
        retries: int = 3,
        backoff: float = 0.25,
        timeout: float = 60.0,
    ) -> None:
        self.repo = repo
        self.remote = remote
        self.url = url
        self.batch_size = max(1, batch_size)
        self.concurrency = concurrency or max(1, repo.config_int("lfs.concurrenttransfers", CONCURRENCY))
        self.http = _Http(repo, retries=retries, backoff=backoff, timeout=timeout)
        self._endpoints: dict[str, Endpoint] = {}
        self._lock = threading.Lock()

    def endpoint(self, operation: str) -> Endpoint:
        """Where `operation` ("upload"/"download") goes; resolved once per operation."""
        with self._lock:
            if operation not in self._endpoints:
                ep = resolve_endpoint(self.repo, self.remote, operation, self.url)
                self.http.seed_credentials(ep.url, ep.username, ep.password)
                self._endpoints[operation] = ep
            return self._endpoints[operation]

    # -- public API

    def upload(self, oids: Iterable[tuple[str, int]], progress: Progress | None = None) -> int:
        """Upload those of `oids` ((oid, size) pairs) the remote lacks; returns how many were sent."""
        wanted = _unique(oids)
        if not wanted:
            return 0
        ep = self.endpoint("upload")
        progress = progress if progress is not None else Progress("Uploading LFS objects")
        run = _Run(self.concurrency)
        try:
            if ep.is_file:
                assert ep.lfs_dir is not None
                dest = LocalStore(ep.lfs_dir, durable=self.repo.store.durable)
                need = [(o, s) for o, s in wanted.items() if not dest.has(o)]
                self._check_local(need)
                progress.add_total(len(need), sum(s for _, s in need))
                for oid, size in need:
                    run.submit(self._file_copy_task(self.repo.store, dest, oid, size, ep.url, progress))
            else:
                for batch in _chunks(list(wanted.items()), self.batch_size):
                    if run.stop.is_set():
                        break
                    try:
                        objects = self._batch(ep, "upload", batch)
                    except ThetaLikeError as e:
                        run.fail(e)
                        break
                    need = []
                    for oid, size in batch:
                        obj = objects.get(oid)
                        err = self._object_error(ep, "upload", oid, obj)
                        if err is not None:
                            run.fail(err)
                        elif obj is not None and "upload" in (obj.get("actions") or {}):
                            need.append((oid, size, obj))
                    self._check_local([(o, s) for o, s, _ in need])
                    progress.add_total(len(need), sum(s for _, s, _ in need))
                    for oid, size, obj in need:
                        run.submit(self._upload_task(ep, oid, size, obj, progress))
            return run.finish()
        finally:
            run.pool.shutdown(wait=True, cancel_futures=True)
            progress.finish()

    def download(self, oids: Iterable[tuple[str, int]], progress: Progress | None = None) -> int:
        """Download those of `oids` not already in repo.store; returns how many were fetched."""
        store = self.repo.store
        wanted = {o: s for o, s in _unique(oids).items() if not store.has(o)}
        if not wanted:
            return 0
        ep = self.endpoint("download")
        progress = progress if progress is not None else Progress("Downloading LFS objects")
        run = _Run(self.concurrency)
        try:
            if ep.is_file:
                assert ep.lfs_dir is not None
                src = LocalStore(ep.lfs_dir)
                missing = [o for o in wanted if not src.has(o)]
                gone = set(missing)
                if missing:
                    run.fail(self._missing_error(ep.url, missing))
                have = [(o, s) for o, s in wanted.items() if o not in gone]
                progress.add_total(len(have), sum(s for _, s in have))
                for oid, size in have:
                    run.submit(self._file_copy_task(src, store, oid, size, ep.url, progress))
            else:
                for batch in _chunks(list(wanted.items()), self.batch_size):
                    if run.stop.is_set():
                        break
                    try:
                        objects = self._batch(ep, "download", batch)
                    except ThetaLikeError as e:
                        run.fail(e)
                        break
                    ready = []
                    for oid, size in batch:
                        obj = objects.get(oid)
                        err = self._object_error(ep, "download", oid, obj)
                        if err is None and obj is not None and "download" not in (obj.get("actions") or {}):
                            err = RemoteError(
                                f"LFS server at {ep.url} gave no download action for {oid}", [oid]
                            )
                        if err is not None:
                            run.fail(err)
                        else:
                            assert obj is not None
                            ready.append((oid, size, obj))
                    progress.add_total(len(ready), sum(s for _, s, _ in ready))
                    for oid, size, obj in ready:
                        run.submit(self._download_task(ep, oid, size, obj, progress))
            return run.finish()
        finally:
            run.pool.shutdown(wait=True, cancel_futures=True)
            progress.finish()

    def missing_on_remote(self, oids: Iterable[tuple[str, int]]) -> list[str]:
        """Those of `oids` the remote does not have (asked with an upload batch), in input order."""
        wanted = _unique(oids)
        if not wanted:
            return []
        ep = self.endpoint("upload")
        if ep.is_file:
            assert ep.lfs_dir is not None
            dest = LocalStore(ep.lfs_dir)
            return [o for o in wanted if not dest.has(o)]
        missing: list[str] = []
        for batch in _chunks(list(wanted.items()), self.batch_size):
            objects = self._batch(ep, "upload", batch)
            for oid, _ in batch:
                obj = objects.get(oid)
                err = self._object_error(ep, "upload", oid, obj)
                if err is not None:
                    raise err
                assert obj is not None
                if "upload" in (obj.get("actions") or {}):
                    missing.append(oid)
        return missing

    # -- pieces

    def _check_local(self, need: list[tuple[str, int]]) -> None:
        store = self.repo.store
        lacking = [o for o, _ in need if not store.has(o)]
        if lacking:
            raise ObjectMissingError(
                f"cannot upload: {len(lacking)} object(s) the remote needs are not in the local store "
                f"({store.objects}): {', '.join(lacking[:10])}{' ...' if len(lacking) > 10 else ''}"
            )

    def _missing_error(self, where: str, oids: list[str]) -> RemoteObjectMissingError:
        shown = ", ".join(oids[:10]) + (f" ... ({len(oids)} in all)" if len(oids) > 10 else "")
        what = "object" if len(oids) == 1 else "objects"
        return RemoteObjectMissingError(f"{what} not found on the remote ({where}): {shown}", oids)

    def _batch(self, ep: Endpoint, operation: str, batch: list[tuple[str, int]]) -> dict[str, dict[str, Any]]:
        """POST a batch request; the response's objects by oid."""
        url = ep.url + "/objects/batch"
        payload = json.dumps(
            {
                "operation": operation,
                "transfers": ["basic"],
                "objects": [{"oid": o, "size": s} for o, s in batch],
            }
        ).encode()
        headers = {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE, **ep.headers}

        def attempt() -> dict[str, Any]:
            resp = self.http.open(
                "POST", url, headers, lambda: payload, what=f"batch {operation}", note=ep.note
            )
            try:
                with resp:
                    raw = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise _Retryable(
                    RemoteUnreachableError(f"cannot reach LFS server at {url}: {_describe(e)}")
                ) from None
            try:
                doc = json.loads(raw)
            except ValueError:
                raise RemoteError(
                    f"LFS server at {url} sent an invalid batch response (not JSON): {raw[:200]!r}"
                ) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("objects"), list):
                raise RemoteError(f"LFS server at {url} sent a batch response without objects: {raw[:200]!r}")
            return doc

        try:
            doc = self.http.retrying(attempt)
        except _HttpStatusError as e:
            oids = [o for o, _ in batch]
            if e.status == 404 and operation == "download":
                err = self._missing_error(url, oids)
                raise RemoteObjectMissingError(f"{err} (server: {e.message})", oids) from None
            if e.status == 404:
                raise RemoteError(f"no LFS repository at {url} (404): {e.message}") from None
            raise RemoteError(
                f"LFS batch {operation} to {url} failed: {e.status} {e.message}", oids
            ) from None
        transfer = doc.get("transfer") or "basic"
        if transfer != "basic":
            raise RemoteError(f"LFS server at {url} chose transfer {transfer!r}; only 'basic' is supported")
        return {str(o.get("oid")): o for o in doc["objects"] if isinstance(o, dict)}

    def _object_error(
        self, ep: Endpoint, operation: str, oid: str, obj: dict[str, Any] | None
    ) -> RemoteError | None:
        if obj is None:
            return RemoteError(f"LFS server at {ep.url} left object {oid} out of its batch response", [oid])
        err = obj.get("error")
        if not err:
            return None
        code = err.get("code") if isinstance(err, dict) else None
        message = err.get("message", "") if isinstance(err, dict) else str(err)
        if code in (404, 410) and operation == "download":
            e = self._missing_error(ep.url, [oid])
            return RemoteObjectMissingError(f"{e} (server: {code} {message})", [oid])
        return RemoteError(
            f"LFS server at {ep.url} refused to {operation} object {oid}: {code} {message}", [oid]
        )

    @staticmethod
    def _action(obj: dict[str, Any], name: str) -> tuple[str, dict[str, str], bool]:
        action = obj["actions"][name]
        if not isinstance(action, dict) or not isinstance(action.get("href"), str):
            raise RemoteError(f"malformed {name} action for object {obj.get('oid')}: {action!r}")
        header = action.get("header") or {}
        headers = {str(k): str(v) for k, v in header.items()} if isinstance(header, dict) else {}
        use_creds = not obj.get("authenticated") and not any(k.lower() == "authorization" for k in headers)
        return str(action["href"]), headers, use_creds

    def _upload_task(
        self, ep: Endpoint, oid: str, size: int, obj: dict[str, Any], progress: Progress
    ) -> Callable[[], bool]:
        def task() -> bool:
            path = self.repo.store.path(oid)
            href, headers, use_creds = self._action(obj, "upload")
            headers = {"Content-Type": "application/octet-stream", **headers, "Content-Length": str(size)}
            sent = 0

            def body() -> Iterable[bytes]:
                nonlocal sent
                progress.advance(-sent)
                sent = 0
                for chunk in _file_chunks(path):
                    sent += len(chunk)
                    progress.advance(len(chunk))
                    yield chunk

            def put() -> None:
                try:
                    resp = self.http.open(
                        "PUT", href, headers, body, use_creds=use_creds, what=f"upload of {oid}", note=ep.note
                    )
                    with resp:
                        resp.read()
                except _HttpStatusError as e:
                    raise RemoteError(
                        f"upload of object {oid} to {href} failed: {e.status} {e.message}", [oid]
                    ) from None

            self.http.retrying(put)
            if "verify" in (obj.get("actions") or {}):
                vhref, vheaders, vcreds = self._action(obj, "verify")
                vheaders = {"Accept": LFS_MEDIA_TYPE, "Content-Type": LFS_MEDIA_TYPE, **vheaders}
                payload = json.dumps({"oid": oid, "size": size}).encode()

                def verify() -> None:
                    try:
                        resp = self.http.open(
                            "POST",
                            vhref,
                            vheaders,
                            lambda: payload,
                            use_creds=vcreds,
                            what=f"verify of {oid}",
                            note=ep.note,
                        )
                        with resp:
                            resp.read()
                    except _HttpStatusError as e:
                        raise RemoteError(
                            f"LFS server at {vhref} could not verify uploaded object {oid}: "
                            f"{e.status} {e.message}",
                            [oid],
                        ) from None

                self.http.retrying(verify)
            progress.object_done()
            faults.point("upload")
            return True

        return task

    def _download_task(
        self, ep: Endpoint, oid: str, size: int, obj: dict[str, Any], progress: Progress
    ) -> Callable[[], bool]:
        def task() -> bool:
            href, headers, use_creds = self._action(obj, "download")

            def get() -> bool:
                try:
                    resp = self.http.open(
                        "GET", href, headers, use_creds=use_creds, what=f"download of {oid}"
                    )
                except _HttpStatusError as e:
                    if e.status in (404, 410):
                        raise self._missing_error(href, [oid]) from None
                    raise RemoteError(
                        f"download of object {oid} from {href} failed: {e.status} {e.message}", [oid]
                    ) from None
                with resp:
                    return _receive(self.repo.store, oid, size, _response_chunks(resp), ep.url, progress)

            new = self.http.retrying(get)
            progress.object_done()
            return new

        return task

    def _file_copy_task(
        self, src: LocalStore, dest: LocalStore, oid: str, size: int, where: str, progress: Progress
    ) -> Callable[[], bool]:
        def task() -> bool:
            try:
                new = self.http.retrying(
                    lambda: _receive(
                        dest,
                        oid,
                        size,
                        _file_chunks(src.path(oid)),
                        where,
                        progress,
                        "download" if dest is self.repo.store else "upload",
                    )
                )
            except FileNotFoundError:
                raise self._missing_error(str(src.objects), [oid]) from None
            except OSError as e:
                raise RemoteError(f"copying object {oid} ({where}) failed: {e}", [oid]) from None
            progress.object_done()
            return new

        return task
