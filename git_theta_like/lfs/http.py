"""HTTP to an LFS server with the standard library only: credentials from `git credential fill`
when the server answers 401 (approved or rejected afterwards), `http.extraHeader` and the
actions' headers, TLS settings from git config, and retries with exponential backoff for
connection errors, 5xx and 429 (honouring Retry-After); other 4xx are not retried. Connections
are kept alive and used again (HTTP/1.1), as git-lfs does: a TLS handshake per object would
cost a round trip or two for each of a checkout's hundreds of small objects."""

from __future__ import annotations

import base64
import contextlib
import errno
import http.client
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from git_theta_like import __version__
from git_theta_like.errors import (
    HttpStatusError,
    RemoteAuthError,
    RemoteDiskFullError,
    RemoteError,
    RemoteStallError,
    RemoteUnreachableError,
    RetryableError,
)
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.endpoint import base_dir, config_entries, is_loopback

LFS_MEDIA_TYPE = "application/vnd.git-lfs+json"

T = TypeVar("T")


USER_AGENT = f"git-theta-like/{__version__}"


RETRY_AFTER_CAP = 30.0
ACTIVITY_TIMEOUT = 30.0  # git-lfs's default for lfs.activitytimeout
READ_CHUNK = 1 << 20  # the most one read of a response body takes
SCHEMES = ("http", "https")  # the only schemes a request or a redirect may use
# headers that say nothing about who is asking: kept when a redirect leaves the origin
_NEUTRAL_HEADERS = {"user-agent", "accept", "content-type", "content-length"}


def activity_timeout(repo: Repo) -> float | None:
    """Seconds without any byte sent or received (or a connection made) after which a transfer
    is abandoned: GIT_THETA_LIKE_ACTIVITY_TIMEOUT, else `lfs.activitytimeout` (git-lfs's key and
    default, 30); as in git-lfs, a value below 1 means no timeout."""
    raw = os.environ.get("GIT_THETA_LIKE_ACTIVITY_TIMEOUT") or repo.config_get("lfs.activitytimeout")
    try:
        value = float(raw) if raw else ACTIVITY_TIMEOUT
    except ValueError:
        raise RemoteError(f"lfs.activitytimeout must be a number of seconds, not {raw!r}") from None
    return value if value >= 1 else None


LOW_SPEED_LIMIT = 1000  # bytes per second; see low_speed()


@dataclass(frozen=True)
class LowSpeed:
    """The slowest a transfer may run: below `limit` bytes per second for `window` seconds, it is
    abandoned as stalled (limit 0: never). This catches what the activity timeout cannot: a
    server that drips a byte just often enough never to be silent for the whole timeout."""

    limit: int
    window: float


def low_speed(repo: Repo, activity: float | None) -> LowSpeed:
    """git's `http.lowSpeedLimit` / `http.lowSpeedTime` (and GIT_HTTP_LOW_SPEED_LIMIT / _TIME),
    with defaults where git has none: 1000 bytes per second over the activity timeout (30 s), so
    a hostile or broken server cannot hold a command forever. A limit of 0 switches it off."""
    raw_limit = os.environ.get("GIT_HTTP_LOW_SPEED_LIMIT") or repo.config_get("http.lowSpeedLimit")
    raw_time = os.environ.get("GIT_HTTP_LOW_SPEED_TIME") or repo.config_get("http.lowSpeedTime")
    try:
        limit = int(raw_limit) if raw_limit else LOW_SPEED_LIMIT
    except ValueError:
        raise RemoteError(
            f"http.lowSpeedLimit must be a number of bytes per second, not {raw_limit!r}"
        ) from None
    try:
        window = float(raw_time) if raw_time else (activity or ACTIVITY_TIMEOUT)
    except ValueError:
        raise RemoteError(f"http.lowSpeedTime must be a number of seconds, not {raw_time!r}") from None
    return LowSpeed(max(0, limit), max(window, 0.1))


class Pace:
    """Bytes moved in the current window of one transfer; `slow()` after each chunk says when
    the transfer has run below the limit for a whole window."""

    def __init__(self, rule: LowSpeed) -> None:
        self.rule = rule
        self.start = time.monotonic()
        self.count = 0

    def slow(self, n: int) -> bool:
        if self.rule.limit <= 0:
            return False
        self.count += n
        elapsed = time.monotonic() - self.start
        if elapsed < self.rule.window:
            return False
        if self.count < self.rule.limit * elapsed:
            return True
        self.start, self.count = time.monotonic(), 0
        return False


def origin(url: str) -> str:
    """scheme://host[:port] of url, without any credentials."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme}://{host}" + (f":{u.port}" if u.port else "")


def check_scheme(url: str, what: str) -> None:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise RemoteError(
            f"refusing {what}: {url} is not an http or https URL (scheme {scheme or 'none'!r}); "
            "an LFS server may only send clients to http(s) addresses"
        )


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
    """Follows redirects to http(s) URLs only. To another origin it carries no header that was
    meant for the first one (Authorization, `http.<url>.extraHeader`, an action's headers): only
    neutral ones, plus the `http.extraHeader` values configured for the new URL."""

    def __init__(self, headers_for: Callable[[str], dict[str, str]]) -> None:
        super().__init__()
        self.headers_for = headers_for

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        check_scheme(newurl, f"a redirect from {origin(req.full_url)}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(newurl) != origin(req.full_url):
            for k in [k for k in new.headers if k.lower() not in _NEUTRAL_HEADERS]:
                del new.headers[k]
            for k, v in self.headers_for(newurl).items():
                new.add_header(k, v)
        return new


class _Response(http.client.HTTPResponse):
    """A response that knows whether it was closed before its body was read to the end (its
    connection then holds the rest of the body and must not be used again)."""

    cut_short = False

    def close(self) -> None:
        # read to its end: closed already (a chunked body's last chunk, EOF), or every byte of
        # its Content-Length taken (http.client closes that only on one more read)
        if not self.isclosed() and (self.chunked or self.length != 0):
            self.cut_short = True
        super().close()


class _StaleConnection(urllib.error.URLError):
    """A kept-alive connection failed before any answer came: the server had closed it while it
    was idle. The request is sent again on a new connection."""


class _Pool:
    """Idle kept-alive connections by (connection class, host, proxy tunnel); each is used by one
    request at a time. A connection goes back only when its response was read to the end and the
    server did not ask to close it."""

    IDLE_PER_HOST = 16

    def __init__(self) -> None:
        self._idle: dict[tuple[Any, ...], list[tuple[http.client.HTTPConnection, _Response]]] = {}
        self._lock = threading.Lock()
        self.opened = 0  # connections made (tests and benchmarks read it)

    def take(self, key: tuple[Any, ...]) -> http.client.HTTPConnection | None:
        """An idle connection to use for the next request, or None. One whose response is still
        being read is left alone (closing it would cut that response off)."""
        with self._lock:
            idle = self._idle.get(key, [])
            for i in range(len(idle) - 1, -1, -1):
                conn, last = idle[i]
                if not last.isclosed():
                    continue
                del idle[i]
                if not last.cut_short and conn.sock is not None:
                    return conn
                conn.close()
        return None

    def new(
        self, http_class: Any, host: str, timeout: float | None, conn_args: dict[str, Any]
    ) -> http.client.HTTPConnection:
        """A new connection (counted: requests of several threads open them at once)."""
        conn: http.client.HTTPConnection = http_class(host, timeout=timeout, **conn_args)
        conn.response_class = _Response
        with self._lock:
            self.opened += 1
        return conn

    def give(self, key: tuple[Any, ...], conn: http.client.HTTPConnection, resp: _Response) -> None:
        """conn, for use once resp is read to its end; past IDLE_PER_HOST it is just dropped
        (its socket closes with resp)."""
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.IDLE_PER_HOST:
                idle.append((conn, resp))


class _KeepAlive:
    """do_open of urllib's HTTP(S) handlers with connections kept alive in a _Pool (urllib's own
    closes every connection after one request)."""

    pool: _Pool
    _debuglevel: int

    def do_open(
        self, http_class: Any, req: urllib.request.Request, **conn_args: Any
    ) -> http.client.HTTPResponse:
        host = req.host
        if not host:
            raise urllib.error.URLError("no host given")
        tunnel = getattr(req, "_tunnel_host", None)
        key = (http_class, host, tunnel, req.timeout)
        conn = None if getattr(req, "fresh_connection", False) else self.pool.take(key)
        reused = conn is not None
        if conn is None:
            conn = self.pool.new(http_class, host, req.timeout, conn_args)
        headers = dict(req.unredirected_hdrs)
        headers.update({k: v for k, v in req.headers.items() if k not in headers})
        headers = {name.title(): val for name, val in headers.items()}
        if tunnel:
            proxy_auth = headers.pop("Proxy-Authorization", None)  # for the proxy, never the origin
            if not reused:
                conn.set_tunnel(tunnel, headers={"Proxy-Authorization": proxy_auth} if proxy_auth else {})
        try:
            try:
                conn.request(
                    req.get_method(),
                    req.selector,
                    req.data,
                    headers,
                    encode_chunked=req.has_header("Transfer-encoding"),
                )
            except OSError as err:
                raise (_StaleConnection(err) if reused else urllib.error.URLError(err)) from None
            try:
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as err:
                if reused:
                    raise _StaleConnection(err) from None
                raise
        except BaseException:
            conn.close()
            raise
        assert isinstance(resp, _Response)
        if not resp.will_close:
            self.pool.give(key, conn, resp)  # taken again only once resp is read to its end
        resp.url = req.get_full_url()
        resp.msg = resp.reason  # type: ignore[assignment]  # what urllib's do_open does
        return resp


class _HTTPHandler(_KeepAlive, urllib.request.HTTPHandler):
    def __init__(self, pool: _Pool) -> None:
        super().__init__()
        self.pool = pool


class _HTTPSHandler(_KeepAlive, urllib.request.HTTPSHandler):
    def __init__(self, pool: _Pool, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self.pool = pool


class Http:
    """Requests with retries, credentials from git, `http.extraHeader` and TLS settings."""

    def __init__(self, repo: Repo, *, retries: int, backoff: float, timeout: float | None = None) -> None:
        self.repo = repo
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout if timeout is not None else activity_timeout(repo)
        self.low_speed = low_speed(repo, self.timeout)
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
        self.pool = _Pool()

        def handlers() -> list[urllib.request.BaseHandler]:
            # one set per opener: a handler calls back into the opener it was added to last
            # (a redirect is opened through it), so two openers must not share one
            return [
                _HTTPHandler(self.pool),
                _HTTPSHandler(self.pool, ctx),
                _RedirectHandler(self.extra_headers),
            ]

        self._opener = urllib.request.build_opener(*handlers())  # honours http(s)_proxy, no_proxy
        self._direct = urllib.request.build_opener(*handlers(), urllib.request.ProxyHandler({}))

    def seed_credentials(self, url: str, username: str | None, password: str | None) -> None:
        if username and password:
            with self._creds_lock:
                self._creds.setdefault(_origin(url), _Creds(username, password))

    # -- headers

    def extra_headers(self, url: str) -> dict[str, str]:
        """`http.extraHeader` and `http.<url>.extraHeader` values that apply to url."""
        with self._creds_lock:
            if self._entries is None:
                self._entries = list(config_entries(self.repo.git.config))
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
            cwd=base_dir(self.repo),
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

    def stalled(self, url: str, what: str) -> RemoteStallError:
        return RemoteStallError(
            f"LFS server at {origin(url)} stalled: nothing sent or received for {self.timeout or 0:g}s "
            f"during {what}; gave up (lfs.activitytimeout = {self.timeout or 0:g}; raise it for a slow link)"
        )

    def too_slow(self, url: str, what: str) -> RemoteStallError:
        rule = self.low_speed
        return RemoteStallError(
            f"LFS server at {origin(url)} stalled: under {rule.limit} bytes/s for {rule.window:g}s "
            f"during {what}; gave up (http.lowSpeedLimit = {rule.limit}, http.lowSpeedTime = "
            f"{rule.window:g}; lower the limit for a slow link, 0 switches it off)"
        )

    def chunks(self, resp: http.client.HTTPResponse, url: str, what: str, limit: int) -> Iterator[bytes]:
        """The body of resp as it arrives, never more than limit bytes; a read that times out
        (lfs.activitytimeout) or a body that trickles in under the low-speed limit is a stall."""
        left = limit
        pace = Pace(self.low_speed)
        while left > 0:
            try:
                chunk = resp.read1(min(READ_CHUNK, left))
            except TimeoutError:
                raise self.stalled(url, what) from None
            if not chunk:
                return
            left -= len(chunk)
            if pace.slow(len(chunk)):
                raise self.too_slow(url, what)
            yield chunk

    def paced(self, chunks: Iterable[bytes], url: str, what: str) -> Iterator[bytes]:
        """chunks of a request body, abandoned as a stall when the server takes them in under the
        low-speed limit (each is sent before the next is asked for)."""
        pace = Pace(self.low_speed)
        for chunk in chunks:
            yield chunk
            if pace.slow(len(chunk)):
                raise self.too_slow(url, what)

    def read_body(
        self, resp: http.client.HTTPResponse, url: str, what: str, limit: int, setting: str
    ) -> bytes:
        """The whole (small) body of resp, at most limit bytes: more is an error naming setting."""
        declared = resp.getheader("Content-Length")
        too_big = RemoteError(
            f"LFS server at {origin(url)} sent a response over {limit} bytes ({what}); refused "
            f"(limit: {setting})"
        )
        try:
            with resp:
                if declared and declared.isdigit() and int(declared) > limit:
                    raise too_big
                raw = b"".join(self.chunks(resp, url, what, limit + 1))
        except (OSError, http.client.HTTPException) as e:
            raise RetryableError(
                RemoteUnreachableError(f"cannot reach LFS server at {url}: {describe(e)}")
            ) from None
        if len(raw) > limit:
            raise too_big
        return raw

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

        A retryable failure (connection error, 5xx, 429) raises RetryableError; others RemoteError.
        `body` is called for each send, so a streamed body can be sent again.
        """
        check_scheme(url, what)
        creds = self._creds_for(url) if use_creds else None
        fresh = False  # after a stale kept-alive connection: a new one (others idle may be dead too)
        attempt = 0
        while attempt < 2:
            attempt += 1
            h = {"User-Agent": USER_AGENT, **self.extra_headers(url), **headers}
            if creds is not None and not any(k.lower() == "authorization" for k in h):
                h["Authorization"] = creds.header()
            req = urllib.request.Request(url, data=body() if body else None, headers=h, method=method)
            req.fresh_connection = fresh  # type: ignore[attr-defined]  # read by _KeepAlive.do_open
            host = urllib.parse.urlsplit(url).hostname or ""
            opener = self._direct if is_loopback(host) else self._opener
            try:
                resp: http.client.HTTPResponse = opener.open(req, timeout=self.timeout)
            except _StaleConnection:
                fresh = True
                attempt -= 1  # the same request again, on a new connection (never stale)
                continue
            except urllib.error.HTTPError as e:
                status, message, retry_after = e.code, _error_message(e), e.headers.get("Retry-After")
                e.close()
                if status == 401:
                    if attempt == 1 and use_creds:
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
                    raise RetryableError(
                        RemoteUnreachableError(f"LFS server at {url} failed ({what}): {status} {message}"),
                        _retry_after(retry_after),
                    ) from None
                raise HttpStatusError(status, message, url) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = e.reason if isinstance(e, urllib.error.URLError) else e
                if isinstance(reason, TimeoutError):
                    raise self.stalled(url, what) from None
                if isinstance(reason, ssl.SSLCertVerificationError):
                    raise RemoteUnreachableError(
                        f"cannot reach LFS server at {url}: TLS certificate not trusted: {reason}"
                    ) from None
                if isinstance(reason, OSError) and reason.errno == errno.ENOSPC:
                    raise RemoteDiskFullError(f"no space left on device ({what})") from None
                extra = f" ({note})" if note else ""
                raise RetryableError(
                    RemoteUnreachableError(f"cannot reach LFS server at {url}: {describe(reason)}{extra}")
                ) from None
            self._approve(url, creds)
            return resp
        raise AssertionError("unreachable")

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Run attempt up to `retries` times while it raises RetryableError, backing off between."""
        for i in range(self.retries):
            try:
                return attempt()
            except RetryableError as r:
                if i + 1 >= self.retries:
                    raise r.error from None
                delay = self.backoff * (2**i)
                if r.retry_after is not None:
                    delay = max(delay, r.retry_after)
                time.sleep(delay)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), RETRY_AFTER_CAP)
    except ValueError:
        return None


def describe(reason: object) -> str:
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
