"""Git LFS servers for tests, on 127.0.0.1 at a free port.

- `GiftlessServer`: a real LFS server, giftless (PyPI) served by waitress, in a subprocess: anonymous
  read+write, or HTTP Basic auth with one user; local storage under `storage/<org>/<repo>/<oid>`. Needs the
  packages in tests/requirements-lfs-server.txt (`giftless_available()` says whether they are).
- `FaultyLFSServer`: a small but complete LFS server of our own (batch API, basic upload with
  server-side SHA-256 check, verify, download, optional Basic auth) running in a thread, with
  switches to inject faults: error statuses, dropped connections, truncated downloads.

Both are context managers: `with GiftlessServer(tmp) as srv: srv.endpoint ...`.

Run `python tests/lfs_server.py giftless --storage DIR [--auth USER:PASS]` to serve by hand.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LFS_JSON = "application/vnd.git-lfs+json"
ORG, REPO = "org", "repo"


def _wait_until_answers(url: str, timeout: float = 20.0) -> None:
    """Poll url until any HTTP answer comes back (a 4xx counts: the server is up)."""
    deadline = time.monotonic() + timeout
    ctx = ssl._create_unverified_context()  # a test server's own certificate
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"LFS test server at {url} did not answer within {timeout}s") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# giftless


def giftless_available() -> bool:
    try:
        import giftless.app  # noqa: F401
    except Exception:
        return False
    return True


def giftless_config(storage: Path, auth: tuple[str, str] | None = None) -> dict[str, Any]:
    """The giftless configuration used here.

    The default AUTH_PROVIDERS is `allow_anon:read_only`, which is what makes uploads fail with
    401: anonymous users may not write. `allow_anon:read_write` grants everything; with `auth`,
    `basic_auth_factory` below accepts one user (others get 401). The pre-authorized action
    provider (giftless's JWT default) stays on: upload/verify actions carry a Bearer token and
    download hrefs a `jwt` query parameter, which clients must send as given.
    """
    providers: list[Any]
    if auth is None:
        providers = ["giftless.auth.allow_anon:read_write"]
    else:
        providers = [
            {
                "factory": "lfs_server:basic_auth_factory",
                "options": {"username": auth[0], "password": auth[1]},
            }
        ]
    return {
        "LEGACY_ENDPOINTS": False,  # only <org>/<repo>.git/info/lfs/..., and no FutureWarning
        "AUTH_PROVIDERS": providers,
        "TRANSFER_ADAPTERS": {
            "basic": {
                "factory": "giftless.transfer.basic_streaming:factory",
                "options": {
                    "storage_class": "giftless.storage.local_storage:LocalStorage",
                    "storage_options": {"path": str(storage)},
                    "action_lifetime": 900,
                },
            }
        },
        "PRE_AUTHORIZED_ACTION_PROVIDER": {
            "factory": "giftless.auth.jwt:factory",
            "options": {"algorithm": "HS256", "private_key": secrets.token_hex(32)},
        },
    }


def basic_auth_factory(username: str, password: str) -> Any:
    """A giftless authenticator: HTTP Basic with one user, who may do everything."""
    from giftless.auth.identity import DefaultIdentity, Permission

    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def authenticate(request: Any) -> Any:
        if request.headers.get("Authorization") != expected:
            return None  # giftless answers 401
        user = DefaultIdentity(name=username)
        user.allow(permissions=Permission.all())
        return user

    return authenticate


def _serve_giftless(storage: Path, port: int, auth: tuple[str, str] | None) -> None:
    from giftless.app import init_app
    from waitress import create_server

    storage.mkdir(parents=True, exist_ok=True)
    app = init_app(additional_config=giftless_config(storage, auth))
    # waitress, not werkzeug's development server: that one closes every connection after one
    # request, where production LFS servers (and the Hub) keep them alive
    srv = create_server(
        app, host="127.0.0.1", port=port, threads=16, ident=None, clear_untrusted_proxy_headers=True
    )
    print(f"ready {srv.effective_port}", flush=True)  # type: ignore[union-attr]
    srv.run()


class GiftlessServer:
    """giftless in a subprocess; `endpoint` is its LFS URL for `org/repo`."""

    def __init__(self, root: Path, auth: tuple[str, str] | None = None) -> None:
        self.root = Path(root)
        self.storage = self.root / "storage"
        self.auth = auth
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def git_url(self) -> str:
        """A Git remote URL whose derived LFS endpoint is `endpoint`."""
        return f"{self.base}/{ORG}/{REPO}"

    @property
    def endpoint(self) -> str:
        return f"{self.base}/{ORG}/{REPO}.git/info/lfs"

    def object_path(self, oid: str) -> Path:
        return self.storage / ORG / REPO / oid

    def start(self) -> GiftlessServer:
        self.root.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(Path(__file__).resolve()), "giftless", "--storage", str(self.storage)]
        if self.auth:
            argv += ["--auth", f"{self.auth[0]}:{self.auth[1]}"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIFTLESS_")}
        # cwd: giftless loads a .env from its working directory
        self.proc = subprocess.Popen(
            argv, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.match(r"ready (\d+)", line)
        if not m:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"giftless did not start: {line!r}\n{err}")
        self.port = int(m.group(1))
        threading.Thread(target=self._drain, daemon=True).start()
        _wait_until_answers(self.base + "/")
        return self

    def _drain(self) -> None:
        proc = self.proc
        if proc is not None and proc.stderr is not None:
            for _ in proc.stderr:
                pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> GiftlessServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# Our own server, with fault injection


ENDLESS_CAP = 256 << 20  # an "endless" body stops here, so a client that never stops cannot fill a disk


class FaultyLFSServer:
    """A spec-following Git LFS server (batch + basic transfers) with switches for failures.

    Objects live flat in `storage/<oid>`. Switches (set them any time; each fault is used up as
    it fires):

    - `fail_statuses`: statuses answered, in order, to the next requests (e.g. [503, 503]);
    - `drop_connections`: that many next requests get their connection closed, no answer;
    - `truncate_downloads`: that many next downloads send half the body, then close;
    - `redirect_downloads`: downloads answer 307 to `http://localhost:PORT/public/<oid>` (another
      origin, served without auth; `public_auth_headers` records the Authorization it got);
    - `all_missing_404`: a download batch whose objects are all missing answers 404 as a whole
      (what giftless does) instead of per-object errors.

    Hostile modes (a server that lies or stalls; they stay on until switched off):

    - `hang`: every request is read and never answered (the connection stays open until stop);
    - `drip_downloads`: downloads send their headers, then one byte every that many seconds;
    - `drip_batches`: batch responses likewise, one byte every that many seconds;
    - `slow_uploads`: upload bodies are read 16 KiB every that many seconds;
    - `endless_downloads`: downloads send a body without end (no Content-Length), up to
      `ENDLESS_CAP` bytes; `endless_sent` counts what went out;
    - `download_href`: the href every download action gives (e.g. `file:///etc/hostname`);
    - `download_action_headers`: headers every download action asks the client to send;
    - `huge_batch`: batch responses are JSON padded with whitespace to that many bytes, sent
      without a Content-Length;
    - `redirect_downloads_to`: downloads answer 307 to `<that base>/public/<oid>`, e.g. another
      FaultyLFSServer, whose `public_headers` records every header its public downloads got.

    Connections and action lifetimes:

    - `connections` counts the TCP connections accepted (HTTP/1.1 keep-alive is on);
    - `drop_idle`: after each answer the connection is closed without saying so (no
      `Connection: close`), as a server that times idle keep-alive connections out;
    - `expires_in`: actions carry that `expires_in` and their hrefs a token that stops working
      that many seconds after the batch answer (then 401, as a signed URL's expiry);
      `token_lifetime`, when set, is how long the token really works (a server that announces
      more than it grants, as giftless: 900 s announced, 60 s granted);
    - `delay_transfers`: each download and upload waits that many seconds before answering.

    `auth=(user, password)` demands HTTP Basic on every request. Upload actions carry an
    `X-Upload-Token` header that the PUT must send back, to check clients use action headers.
    `log` records (method, path) of every request. `tls=(certfile, keyfile)` serves HTTPS.
    """

    def __init__(
        self, root: Path, auth: tuple[str, str] | None = None, tls: tuple[Path, Path] | None = None
    ) -> None:
        self.tls = tls
        self.storage = Path(root) / "objects"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.auth = auth
        self.fail_statuses: list[int] = []
        self.drop_connections = 0
        self.truncate_downloads = 0
        self.all_missing_404 = False
        self.redirect_downloads = False
        self.public_auth_headers: list[str | None] = []
        self.public_headers: list[dict[str, str]] = []
        self.hang = False
        self.drip_downloads = 0.0
        self.drip_batches = 0.0
        self.slow_uploads = 0.0
        self.endless_downloads = False
        self.endless_sent = 0
        self.download_href: str | None = None
        self.download_action_headers: dict[str, str] = {}
        self.huge_batch = 0
        self.redirect_downloads_to: str | None = None
        self.connections = 0
        self.drop_idle = False
        self.expires_in: int | None = None
        self.token_lifetime: float | None = None
        self.delay_transfers = 0.0
        self.released = threading.Event()
        self.log: list[tuple[str, str]] = []
        self.token = secrets.token_hex(8)
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def git_url(self) -> str:
        return f"{self.base}/{ORG}/{REPO}"

    @property
    def endpoint(self) -> str:
        return f"{self.base}/{ORG}/{REPO}.git/info/lfs"

    def object_path(self, oid: str) -> Path:
        return self.storage / oid

    def count(self, method: str, suffix: str = "") -> int:
        with self.lock:
            return sum(1 for m, p in self.log if m == method and p.split("?")[0].endswith(suffix))

    def take_fault(self) -> tuple[str, int] | None:
        with self.lock:
            if self.drop_connections > 0:
                self.drop_connections -= 1
                return ("drop", 0)
            if self.fail_statuses:
                return ("status", self.fail_statuses.pop(0))
        return None

    def take_truncate(self) -> bool:
        with self.lock:
            if self.truncate_downloads > 0:
                self.truncate_downloads -= 1
                return True
        return False

    def start(self) -> FaultyLFSServer:
        self.httpd = _QuietServer(("127.0.0.1", 0), _make_handler(self))
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile=self.tls[0], keyfile=self.tls[1])
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        _wait_until_answers(self.base + "/")
        with self.lock:
            self.log.clear()
        return self

    def stop(self) -> None:
        self.released.set()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def __enter__(self) -> FaultyLFSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # dropped connections are on purpose


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 made with the openssl command: (certfile, keyfile)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _make_handler(server: FaultyLFSServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with server.lock:
                server.connections += 1

        def handle_one_request(self) -> None:
            super().handle_one_request()
            if server.drop_idle and not self.close_connection:
                self.wfile.flush()
                self.close_connection = True  # hang up without Connection: close

        def _expired(self) -> bool:
            """An href with a lifetime token (expires_in mode) used after its expiry: answered 401."""
            m = re.search(r"[?&]until=([0-9.]+)", self.path)
            if m is None or time.time() <= float(m.group(1)):
                return False
            self._body()
            self._error(401, "action expired")
            return True

        # -- helpers

        def _json(self, status: int, doc: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", LFS_JSON)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if server.drip_batches and doc.get("objects") is not None:
                self._drip(body, server.drip_batches)
                return
            self.wfile.write(body)

        def _drip(self, data: bytes, every: float) -> None:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                if server.released.wait(every):
                    return

        def _error(self, status: int, message: str) -> None:
            headers = {"LFS-Authenticate": 'Basic realm="test"'} if status == 401 else None
            self._json(status, {"message": message}, headers)

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _slow_body(self, every: float) -> bytes:
            left, parts = int(self.headers.get("Content-Length") or 0), []
            while left > 0 and not server.released.wait(every):
                part = self.rfile.read(min(16 << 10, left))
                if not part:
                    break
                parts.append(part)
                left -= len(part)
            return b"".join(parts)

        def _gate(self) -> bool:
            """Log, inject faults, check auth; False when the request has been answered."""
            with server.lock:
                server.log.append((self.command, self.path))
            if server.hang:
                self._body()
                server.released.wait(120)
                self.close_connection = True
                return False
            fault = server.take_fault()
            if fault is not None and fault[0] == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return False
            if fault is not None:
                self._body()
                self._error(fault[1], f"injected failure {fault[1]}")
                return False
            if server.auth is not None and not self.path.startswith("/public/"):
                want = "Basic " + base64.b64encode(f"{server.auth[0]}:{server.auth[1]}".encode()).decode()
                if self.headers.get("Authorization") != want:
                    self._body()
                    self._error(401, "credentials needed")
                    return False
            return True

        def _prefix(self) -> str | None:
            m = re.match(r"^(/.+?\.git/info/lfs)(/.*)?$", self.path.split("?")[0])
            return m.group(1) if m else None

        # -- methods

        def do_GET(self) -> None:
            if not self._gate() or self._expired():
                return
            if server.delay_transfers:
                server.released.wait(server.delay_transfers)
            path = self.path.split("?")[0]
            m = re.search(r"/(?:objects|public)/([0-9a-f]{64})$", path)
            public = path.startswith("/public/")
            if (self._prefix() is None and not public) or not m:
                self._error(404, "not found")
                return
            if public:
                with server.lock:
                    server.public_auth_headers.append(self.headers.get("Authorization"))
                    server.public_headers.append(dict(self.headers.items()))
            elif server.redirect_downloads_to:
                self.send_response(307)
                self.send_header("Location", f"{server.redirect_downloads_to}/public/{m.group(1)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            elif server.redirect_downloads:
                self.send_response(307)
                self.send_header("Location", f"{server.scheme}://localhost:{server.port}/public/{m.group(1)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            p = server.object_path(m.group(1))
            if not p.is_file():
                self._error(404, "object not found")
                return
            data = p.read_bytes()
            if server.endless_downloads:
                self._endless()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if server.drip_downloads:
                self._drip(data, server.drip_downloads)
                return
            if server.take_truncate():
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(data)

        def _endless(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            block = b"\0" * (1 << 20)
            try:
                while server.endless_sent < ENDLESS_CAP and not server.released.is_set():
                    self.wfile.write(block)
                    with server.lock:
                        server.endless_sent += len(block)
            except OSError:
                pass  # the client hung up, as it should

        def do_PUT(self) -> None:
            if not self._gate() or self._expired():
                return
            if server.delay_transfers:
                server.released.wait(server.delay_transfers)
            m = re.search(r"/objects/([0-9a-f]{64})$", self.path.split("?")[0])
            if self._prefix() is None or not m:
                self._body()
                self._error(404, "not found")
                return
            if self.headers.get("X-Upload-Token") != server.token:
                self._body()
                self._error(403, "upload action header missing")
                return
            oid = m.group(1)
            data = self._slow_body(server.slow_uploads) if server.slow_uploads else self._body()
            if hashlib.sha256(data).hexdigest() != oid:
                self._error(422, f"content does not hash to {oid}")
                return
            dest = server.object_path(oid)
            tmp = dest.with_name(dest.name + f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, dest)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            if not self._gate():
                return
            prefix = self._prefix()
            path = self.path.split("?")[0]
            try:
                doc = json.loads(self._body() or b"{}")
            except ValueError:
                self._error(422, "invalid JSON")
                return
            if prefix is None:
                self._error(404, "no such repository")
            elif path == prefix + "/objects/batch":
                self._batch(prefix, doc)
            elif path == prefix + "/verify":
                p = server.object_path(str(doc.get("oid")))
                if not p.is_file() or p.stat().st_size != doc.get("size"):
                    self._error(404, "object not found or wrong size")
                else:
                    self._json(200, {})
            else:
                self._error(404, "not found")

        def _batch(self, prefix: str, doc: dict[str, Any]) -> None:
            op = doc.get("operation")
            if op not in ("upload", "download") or not isinstance(doc.get("objects"), list):
                self._error(422, "bad batch request")
                return
            base = f"{server.scheme}://{self.headers.get('Host')}{prefix}"
            out = []
            for o in doc["objects"]:
                oid, size = str(o.get("oid")), o.get("size")
                have = server.object_path(oid).is_file() if re.fullmatch(r"[0-9a-f]{64}", oid) else False
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": False}
                if op == "upload" and not have:
                    entry["actions"] = {
                        "upload": {
                            "href": f"{base}/objects/{oid}",
                            "header": {"X-Upload-Token": server.token},
                        },
                        "verify": {"href": f"{base}/verify"},
                    }
                elif op == "download" and have:
                    action: dict[str, Any] = {"href": server.download_href or f"{base}/objects/{oid}"}
                    if server.download_action_headers:
                        action["header"] = dict(server.download_action_headers)
                    entry["actions"] = {"download": action}
                elif op == "download":
                    entry["error"] = {"code": 404, "message": "Object does not exist"}
                if server.expires_in is not None:
                    life = server.token_lifetime if server.token_lifetime is not None else server.expires_in
                    until = f"?until={time.time() + life:.3f}"
                    entry["authenticated"] = True  # signed hrefs: no credentials needed
                    for a in entry.get("actions", {}).values():
                        if "/verify" not in a["href"]:
                            a["href"] += until
                        a["expires_in"] = server.expires_in
                out.append(entry)
            if op == "download" and server.all_missing_404 and out and all("error" in e for e in out):
                self._error(404, "Cannot find any of the requested objects")
                return
            if server.huge_batch:
                body = json.dumps({"transfer": "basic", "objects": out}).encode()
                self.send_response(200)
                self.send_header("Content-Type", LFS_JSON)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                pad, left = b" " * (1 << 20), server.huge_batch - len(body)
                try:
                    self.wfile.write(body[:-1])
                    while left > 0 and not server.released.is_set():
                        self.wfile.write(pad[:left])
                        left -= len(pad)
                    self.wfile.write(body[-1:])
                except OSError:
                    pass
                return
            self._json(200, {"transfer": "basic", "objects": out, "hash_algo": "sha256"})

    return Handler


# --------------------------------------------------------------------------------------------
# The Hugging Face Hub's garbage collection, simulated

_POINTER = re.compile(
    rb"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize (\d+)\n"
)


def _git_out(repo: Path, args: list[str], data: bytes) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, input=data, capture_output=True, check=True).stdout


def referenced_by_pointers(bare_repo: Path) -> set[tuple[str, int]]:
    """(oid, size) of every git-lfs pointer blob (spec v1, parsed here independently of the
    package) reachable from the branches and tags of a repository."""
    listed = _git_out(bare_repo, ["rev-list", "--objects", "--branches", "--tags"], b"")
    ids = [line.split(b" ", 1)[0] for line in listed.splitlines() if line]
    if not ids:
        return set()
    checked = _git_out(bare_repo, ["cat-file", "--batch-check"], b"\n".join(ids) + b"\n")
    small = []
    for line in checked.splitlines():
        oid, kind, size = line.split(b" ")
        if kind == b"blob" and int(size) < 1024:
            small.append(oid)
    if not small:
        return set()
    out = _git_out(bare_repo, ["cat-file", "--batch"], b"\n".join(small) + b"\n")
    found: set[tuple[str, int]] = set()
    pos = 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        size = int(out[pos:end].split(b" ")[2])
        data = out[end + 1 : end + 1 + size]
        pos = end + 1 + size + 1
        m = _POINTER.fullmatch(data)
        if m:
            found.add((m.group(1).decode(), int(m.group(2))))
    return found


def hub_gc(bare_repo: Path, server: GiftlessServer | FaultyLFSServer | None = None) -> list[str]:
    """What the Hugging Face Hub's daily garbage collection of "untracked" LFS files does:
    delete every object the LFS server stores (giftless's local storage, FaultyLFSServer's, or
    with no server the bare repository's own `lfs/objects`, a `file://` remote's) that no git-lfs
    pointer blob reachable from its branches and tags references with the object's size.
    Returns the deleted oids, sorted."""
    keep = referenced_by_pointers(bare_repo)
    if server is None:  # git-theta-like's own second links there too (store/local.py keep_link)
        roots = [bare_repo / "lfs" / "objects", bare_repo / "theta-like" / "objects"]
        files = [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]
    else:
        d = server.object_path("0" * 64).parent
        files = [p for p in d.iterdir() if p.is_file()] if d.exists() else []
    deleted = []
    for f in files:
        if re.fullmatch(r"[0-9a-f]{64}", f.name) and (f.name, f.stat().st_size) not in keep:
            f.unlink()
            deleted.append(f.name)
    return sorted(set(deleted))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=["giftless", "faulty"])
    ap.add_argument("--storage", type=Path, required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--auth", help="USER:PASSWORD for HTTP Basic auth")
    args = ap.parse_args(argv)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.kind == "giftless":
        _serve_giftless(args.storage, args.port, auth)  # type: ignore[arg-type]
    else:
        srv = FaultyLFSServer(args.storage, auth).start()  # type: ignore[arg-type]
        print(f"ready {srv.port} {srv.endpoint}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
