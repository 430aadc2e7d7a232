"""RemoteStore against real LFS servers (giftless, and our fault-injecting one) and file remotes.

These drive the transfer layer directly on repositories made with `git init`; the filter is not
involved. The giftless tests need tests/requirements-lfs-server.txt installed.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git
from lfs_server import FaultyLFSServer, GiftlessServer, giftless_available, self_signed_cert

from git_theta_like.errors import (
    ObjectMissingError,
    RemoteAuthError,
    RemoteCorruptError,
    RemoteDiskFullError,
    RemoteError,
    RemoteObjectMissingError,
    RemoteUnreachableError,
)
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.endpoint import resolve_endpoint
from git_theta_like.lfs.transfer import RemoteStore
from git_theta_like.progress import Progress
from git_theta_like.store import store_of

Server = GiftlessServer | FaultyLFSServer
FAST = {"backoff": 0.01}  # retries stay at 3, with short delays


def make_repo(path: Path, remote_url: str | None = None, bare: bool = False) -> Repo:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", *(["--bare"] if bare else []))
    if remote_url is not None:
        git(path, "remote", "add", "origin", remote_url)
    return Repo(path)


def add_objects(repo: Repo, n: int, size: int = 3000, seed: int = 0) -> list[tuple[str, int]]:
    out = []
    for i in range(n):
        data = (f"object {seed}-{i} ".encode() * (size // 10 + 1))[: size + i]
        out.append(store_of(repo).write([data]))
    return out


def leftovers(repo: Repo) -> list[Path]:
    tmp = store_of(repo).tmp
    return list(tmp.iterdir()) if tmp.exists() else []


def _server(kind: str, root: Path, auth: tuple[str, str] | None = None) -> Server:
    if kind == "giftless":
        if not giftless_available():
            pytest.fail("giftless is not installed: run scripts/setup (tests/requirements-lfs-server.txt)")
        return GiftlessServer(root, auth=auth)
    return FaultyLFSServer(root, auth=auth)


@pytest.fixture(params=["giftless", "faulty"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with _server(request.param, tmp_path / "server") as srv:
        yield srv


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyLFSServer]:
    with FaultyLFSServer(tmp_path / "faulty") as srv:
        yield srv


# --------------------------------------------------------------------------------------------
# Round trips


def test_http_round_trip(server: Server, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", server.git_url)
    objs = add_objects(a, 5)
    assert RemoteStore(a).upload(objs) == 5
    for oid, size in objs:
        assert server.object_path(oid).stat().st_size == size

    b = make_repo(tmp_path / "b", server.git_url)
    rs = RemoteStore(b)
    assert rs.endpoint("download").url == server.endpoint
    assert rs.download(objs) == 5
    for oid, _ in objs:
        assert store_of(b).path(oid).read_bytes() == store_of(a).path(oid).read_bytes()
    assert rs.download(objs) == 0  # all local now
    assert leftovers(b) == []


def test_already_on_server_is_not_uploaded_again(server: Server, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", server.git_url)
    objs = add_objects(a, 5)
    rs = RemoteStore(a)
    assert rs.missing_on_remote(objs) == [o for o, _ in objs]
    assert rs.upload(objs[:3]) == 3
    assert rs.missing_on_remote(objs) == [o for o, _ in objs[3:]]
    assert rs.upload(objs + objs[:1]) == 2
    assert rs.missing_on_remote(objs) == []
    assert rs.upload(objs) == 0
    if isinstance(server, FaultyLFSServer):
        assert server.count("PUT") == 5
        assert server.count("POST", "/verify") == 5


def test_batches_and_concurrency(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 23, size=500)
    assert RemoteStore(a, batch_size=10, concurrency=4).upload(objs) == 23
    assert faulty.count("POST", "/objects/batch") == 3
    b = make_repo(tmp_path / "b", faulty.git_url)
    assert RemoteStore(b, batch_size=10).download(objs) == 23


@pytest.mark.parametrize("bare", [True, False])
def test_file_remote_round_trip(tmp_path: Path, bare: bool) -> None:
    far = tmp_path / "far.git"
    make_repo(far, bare=bare)
    far_objects = far / "lfs" / "objects" if bare else far / ".git" / "lfs" / "objects"

    a = make_repo(tmp_path / "a", far.as_uri())
    objs = add_objects(a, 4)
    rs = RemoteStore(a)
    assert rs.endpoint("upload").lfs_dir == far_objects.parent
    assert rs.missing_on_remote(objs) == [o for o, _ in objs]
    assert rs.upload(objs[:1]) == 1
    assert rs.upload(objs) == 3
    assert rs.missing_on_remote(objs) == []
    for oid, _ in objs:
        assert (far_objects / oid[:2] / oid[2:4] / oid).read_bytes() == store_of(a).path(oid).read_bytes()

    b = make_repo(tmp_path / "b", str(far))  # a plain path works too
    assert RemoteStore(b).download(objs) == 4
    assert all(store_of(b).has(o) for o, _ in objs)

    c = make_repo(tmp_path / "c", str(far))
    ghost = "0" * 64
    with pytest.raises(RemoteObjectMissingError, match=ghost):
        RemoteStore(c).download([*objs, (ghost, 1)])
    assert all(store_of(c).has(o) for o, _ in objs)  # the others still came


def test_git_lfs_reads_what_we_pushed_to_a_file_remote(tmp_path: Path) -> None:
    """Objects land where git-lfs's own file transfer looks for them."""
    far = tmp_path / "far.git"
    make_repo(far, bare=True)
    a = make_repo(tmp_path / "a", far.as_uri())
    git(a.workdir, "lfs", "install", "--local")  # type: ignore[arg-type]
    git(a.workdir, "lfs", "track", "*.bin")  # type: ignore[arg-type]
    data = b"plain lfs content\n" * 100
    (a.workdir / "x.bin").write_bytes(data)  # type: ignore[operator]
    git(a.workdir, "add", ".")  # type: ignore[arg-type]
    git(a.workdir, "commit", "-qm", "x")  # type: ignore[arg-type]
    oid = hashlib.sha256(data).hexdigest()
    assert RemoteStore(a).upload([(oid, len(data))]) == 1
    git(a.workdir, "push", "-q", "--no-verify", "origin", "HEAD:main")  # type: ignore[arg-type]
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", far.as_uri(), str(clone))
    git(clone, "lfs", "install", "--local")
    git(clone, "lfs", "pull")
    assert (clone / "x.bin").read_bytes() == data


def test_https_with_configured_ca(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = self_signed_cert(tmp_path)
    with FaultyLFSServer(tmp_path / "server", tls=(cert, key)) as srv:
        a = make_repo(tmp_path / "a", srv.git_url)
        objs = add_objects(a, 2)
        with pytest.raises(RemoteUnreachableError, match="certificate"):
            RemoteStore(a, **FAST).upload(objs)
        git(a.workdir, "config", "http.sslCAInfo", str(cert))  # type: ignore[arg-type]
        assert RemoteStore(a).upload(objs) == 2
        b = make_repo(tmp_path / "b", srv.git_url)
        git(b.workdir, "config", "http.sslVerify", "false")  # type: ignore[arg-type]
        assert RemoteStore(b).download(objs) == 2


# --------------------------------------------------------------------------------------------
# Failures


def test_missing_object_on_server_is_named(server: Server, tmp_path: Path) -> None:
    b = make_repo(tmp_path / "b", server.git_url)
    ghost = "ab" * 32
    with pytest.raises(RemoteObjectMissingError, match=ghost) as e:
        RemoteStore(b).download([(ghost, 10)])
    assert e.value.oids == [ghost]
    assert not store_of(b).has(ghost)


def test_missing_among_present_objects(server: Server, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", server.git_url)
    objs = add_objects(a, 3)
    RemoteStore(a).upload(objs)
    ghost = "cd" * 32
    b = make_repo(tmp_path / "b", server.git_url)
    with pytest.raises(RemoteObjectMissingError, match=ghost) as e:
        RemoteStore(b).download([*objs, (ghost, 10)])
    assert e.value.oids == [ghost]
    assert all(store_of(b).has(o) for o, _ in objs)


def test_whole_batch_404_names_the_objects(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    faulty.all_missing_404 = True
    b = make_repo(tmp_path / "b", faulty.git_url)
    ghosts = ["1" * 64, "2" * 64]
    with pytest.raises(RemoteObjectMissingError) as e:
        RemoteStore(b).download([(g, 5) for g in ghosts])
    assert all(g in str(e.value) for g in ghosts)


def test_server_stopped(server: Server, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", server.git_url)
    objs = add_objects(a, 2)
    endpoint = server.endpoint
    server.stop()
    with pytest.raises(RemoteUnreachableError, match="cannot reach LFS server at") as e:
        RemoteStore(a, **FAST).upload(objs)
    assert endpoint in str(e.value)
    with pytest.raises(RemoteError, match="cannot reach"):
        RemoteStore(a, **FAST).download([("e" * 64, 3)])


def test_corrupt_object_from_server(server: Server, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", server.git_url)
    objs = add_objects(a, 2)
    RemoteStore(a).upload(objs)
    bad_oid, _ = objs[0]
    p = server.object_path(bad_oid)
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    p.write_bytes(bytes(data))

    b = make_repo(tmp_path / "b", server.git_url)
    with pytest.raises(RemoteCorruptError, match=bad_oid) as e:
        RemoteStore(b).download(objs)
    assert e.value.oids == [bad_oid]
    assert not store_of(b).has(bad_oid)
    assert not store_of(b).path(bad_oid).exists()
    assert leftovers(b) == []
    assert store_of(b).has(objs[1][0])  # the good one was stored


def test_corrupt_object_in_file_remote(tmp_path: Path) -> None:
    far = tmp_path / "far.git"
    make_repo(far, bare=True)
    a = make_repo(tmp_path / "a", str(far))
    (oid, size), *_ = add_objects(a, 1)
    RemoteStore(a).upload([(oid, size)])
    stored = far / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    stored.write_bytes(b"x" * size)
    b = make_repo(tmp_path / "b", str(far))
    with pytest.raises(RemoteCorruptError, match=oid):
        RemoteStore(b).download([(oid, size)])
    assert not store_of(b).has(oid) and leftovers(b) == []


def test_retries_5xx_and_dropped_connections(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 2)
    faulty.fail_statuses = [503, 429]
    assert RemoteStore(a, **FAST).upload(objs[:1]) == 1
    faulty.drop_connections = 2
    assert RemoteStore(a, **FAST).upload(objs[1:]) == 1
    b = make_repo(tmp_path / "b", faulty.git_url)
    faulty.truncate_downloads = 1
    assert RemoteStore(b, **FAST).download(objs) == 2
    assert leftovers(b) == []


def test_gives_up_after_three_tries(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 1)
    faulty.fail_statuses = [500, 502, 503]
    with pytest.raises(RemoteUnreachableError, match="503"):
        RemoteStore(a, **FAST).upload(objs)
    assert faulty.count("POST", "/objects/batch") == 3


def test_truncated_downloads_give_up_cleanly(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 1, size=200_000)
    RemoteStore(a).upload(objs)
    faulty.truncate_downloads = 3
    b = make_repo(tmp_path / "b", faulty.git_url)
    with pytest.raises(RemoteError, match=objs[0][0]):
        RemoteStore(b, **FAST).download(objs)
    assert not store_of(b).has(objs[0][0]) and leftovers(b) == []


def test_4xx_is_not_retried(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    faulty.fail_statuses = [422]
    with pytest.raises(RemoteError, match="422"):
        RemoteStore(a, **FAST).upload(add_objects(a, 1))
    assert faulty.count("POST", "/objects/batch") == 1


def test_upload_of_object_missing_locally(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    ghost = "9" * 64
    with pytest.raises(ObjectMissingError, match=ghost):
        RemoteStore(a).upload([(ghost, 4)])


def test_disk_full_leaves_nothing(
    faulty: FaultyLFSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 1)
    RemoteStore(a).upload(objs)
    b = make_repo(tmp_path / "b", faulty.git_url)
    real_mkstemp = tempfile.mkstemp

    def full_mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name  # every write: ENOSPC

    monkeypatch.setattr(tempfile, "mkstemp", full_mkstemp)
    with pytest.raises(RemoteDiskFullError, match="no space left on device") as e:
        RemoteStore(b).download(objs)
    assert objs[0][0] in str(e.value)
    assert not store_of(b).has(objs[0][0]) and leftovers(b) == []
    assert errno.ENOSPC  # (the error above is what ENOSPC becomes)


# --------------------------------------------------------------------------------------------
# Authentication


def helper(log: Path, username: str, password: str) -> str:
    """A credential helper that answers with fixed credentials and logs what git asked."""
    return f'!f() {{ echo "$1" >> "{log}"; echo username={username}; echo password={password}; }}; f'


@pytest.mark.parametrize("kind", ["giftless", "faulty"])
def test_auth_with_credential_helper(kind: str, tmp_path: Path) -> None:
    with _server(kind, tmp_path / "server", auth=("u", "p")) as srv:
        log = tmp_path / "helper.log"
        a = make_repo(tmp_path / "a", srv.git_url)
        git(a.workdir, "config", "credential.helper", helper(log, "u", "p"))  # type: ignore[arg-type]
        objs = add_objects(a, 3)
        assert RemoteStore(a).upload(objs) == 3
        assert log.read_text().split() == ["get", "store"]  # filled once, approved once

        b = make_repo(tmp_path / "b", srv.git_url)
        git(b.workdir, "config", "credential.helper", helper(log, "u", "p"))  # type: ignore[arg-type]
        assert RemoteStore(b).download(objs) == 3


@pytest.mark.parametrize("kind", ["giftless", "faulty"])
def test_auth_with_wrong_credentials(kind: str, tmp_path: Path) -> None:
    with _server(kind, tmp_path / "server", auth=("u", "p")) as srv:
        log = tmp_path / "helper.log"
        a = make_repo(tmp_path / "a", srv.git_url)
        git(a.workdir, "config", "credential.helper", helper(log, "u", "wrong"))  # type: ignore[arg-type]
        with pytest.raises(RemoteAuthError, match="authentication failed for") as e:
            RemoteStore(a, **FAST).upload(add_objects(a, 1))
        assert srv.endpoint in str(e.value)
        assert log.read_text().split() == ["get", "erase"]  # rejected


def test_auth_without_any_credentials(
    faulty: FaultyLFSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    faulty.auth = ("u", "p")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.delenv("GIT_ASKPASS", raising=False)
    monkeypatch.delenv("SSH_ASKPASS", raising=False)
    a = make_repo(tmp_path / "a", faulty.git_url)
    with pytest.raises(RemoteAuthError, match="authentication failed for"):
        RemoteStore(a).upload(add_objects(a, 1))


def test_credentials_in_url_and_extra_header(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    faulty.auth = ("u", "p")
    objs_url = faulty.git_url.replace("http://", "http://u:p@")
    a = make_repo(tmp_path / "a", objs_url)
    objs = add_objects(a, 1)
    assert RemoteStore(a).upload(objs) == 1

    b = make_repo(tmp_path / "b", faulty.git_url)
    token = base64.b64encode(b"u:p").decode()
    git(b.workdir, "config", "http.extraHeader", f"Authorization: Basic {token}")  # type: ignore[arg-type]
    assert RemoteStore(b).download(objs) == 1


def test_redirect_to_another_host_drops_credentials(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    faulty.auth = ("u", "p")
    a = make_repo(tmp_path / "a", faulty.git_url.replace("http://", "http://u:p@"))
    objs = add_objects(a, 2)
    RemoteStore(a).upload(objs)
    faulty.redirect_downloads = True
    b = make_repo(tmp_path / "b", faulty.git_url.replace("http://", "http://u:p@"))
    assert RemoteStore(b).download(objs) == 2
    assert faulty.public_auth_headers == [None, None]


def test_forbidden_is_an_auth_error(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    faulty.fail_statuses = [403]
    with pytest.raises(RemoteAuthError, match="authentication failed"):
        RemoteStore(a).upload(add_objects(a, 1))


# --------------------------------------------------------------------------------------------
# Endpoint discovery


def test_endpoint_from_remote_url(tmp_path: Path) -> None:
    r = make_repo(tmp_path / "r", "https://git.example.com/foo/bar")
    assert resolve_endpoint(r, "origin", "download").url == "https://git.example.com/foo/bar.git/info/lfs"
    git(r.workdir, "remote", "set-url", "origin", "https://git.example.com/foo/bar.git")  # type: ignore[arg-type]
    r = Repo(r.workdir)  # type: ignore[arg-type]
    assert resolve_endpoint(r, "origin", "upload").url == "https://git.example.com/foo/bar.git/info/lfs"
    git(r.workdir, "remote", "set-url", "--push", "origin", "https://push.example.com/x")  # type: ignore[arg-type]
    r = Repo(r.workdir)  # type: ignore[arg-type]
    assert resolve_endpoint(r, "origin", "upload").url == "https://push.example.com/x.git/info/lfs"
    assert resolve_endpoint(r, "origin", "download").url == "https://git.example.com/foo/bar.git/info/lfs"
    # a URL given as the remote (git push <url>)
    assert resolve_endpoint(r, "https://h.example/a/b", "upload").url == "https://h.example/a/b.git/info/lfs"
    with pytest.raises(RemoteError, match="no remote named 'nope'"):
        resolve_endpoint(r, "nope", "download")


def test_endpoint_from_config_and_lfsconfig(tmp_path: Path) -> None:
    wt = tmp_path / "r"
    make_repo(wt, "https://git.example.com/foo/bar")
    git(wt, "config", "-f", ".lfsconfig", "lfs.url", "https://lfs.example.com/committed")
    git(wt, "add", ".lfsconfig")
    git(wt, "commit", "-qm", "lfsconfig")
    (wt / ".lfsconfig").unlink()  # read from HEAD when the work tree lacks it
    assert resolve_endpoint(Repo(wt), "origin", "download").url == "https://lfs.example.com/committed"
    git(wt, "checkout", "--", ".lfsconfig")
    git(wt, "config", "remote.origin.lfsurl", "https://lfs.example.com/remote")
    # lfs.url (from .lfsconfig) beats remote.<name>.lfsurl, as in git-lfs
    assert resolve_endpoint(Repo(wt), "origin", "download").url == "https://lfs.example.com/committed"
    git(wt, "config", "lfs.url", "https://lfs.example.com/config")
    assert resolve_endpoint(Repo(wt), "origin", "download").url == "https://lfs.example.com/config"
    git(wt, "config", "lfs.pushurl", "https://lfs.example.com/push")
    assert resolve_endpoint(Repo(wt), "origin", "upload").url == "https://lfs.example.com/push"
    assert resolve_endpoint(Repo(wt), "origin", "download").url == "https://lfs.example.com/config"


def test_endpoint_over_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "fake-ssh"
    log = tmp_path / "ssh.log"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'echo \'{"href": "https://lfs.example.com/via-ssh", "header": {"Authorization": "RemoteAuth t"}}\'\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake))
    r = make_repo(tmp_path / "r", "git@git.example.com:foo/bar.git")
    ep = resolve_endpoint(r, "origin", "upload")
    assert ep.url == "https://lfs.example.com/via-ssh"
    assert ep.headers == {"Authorization": "RemoteAuth t"}
    git(r.workdir, "remote", "set-url", "origin", "ssh://git@git.example.com:2222/foo/bar.git")  # type: ignore[arg-type]
    resolve_endpoint(Repo(r.workdir), "origin", "download")  # type: ignore[arg-type]
    assert log.read_text().splitlines() == [
        "git@git.example.com git-lfs-authenticate foo/bar.git upload",
        "-p 2222 git@git.example.com git-lfs-authenticate foo/bar.git download",
    ]
    # when ssh fails, the derived https URL is used and the failure kept for error messages
    monkeypatch.setenv("GIT_SSH_COMMAND", "false")
    ep = resolve_endpoint(Repo(r.workdir), "origin", "download")  # type: ignore[arg-type]
    assert ep.url == "https://git.example.com/foo/bar.git/info/lfs"
    assert "git-lfs-authenticate" in ep.note


def test_ssh_endpoint_is_used_for_transfers(
    faulty: FaultyLFSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-ssh"
    fake.write_text(f'#!/bin/sh\necho \'{{"href": "{faulty.endpoint}"}}\'\n')
    fake.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(fake))
    a = make_repo(tmp_path / "a", "git@git.example.com:org/repo.git")
    objs = add_objects(a, 2)
    assert RemoteStore(a).upload(objs) == 2
    assert all(faulty.object_path(o).is_file() for o, _ in objs)


def test_progress_shown_when_asked(
    faulty: FaultyLFSServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 3)
    RemoteStore(a).upload(objs)
    assert capfd.readouterr().err == ""  # stderr is not a terminal: quiet
    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")
    b = make_repo(tmp_path / "b", faulty.git_url)
    RemoteStore(b).download(objs)
    err = capfd.readouterr().err
    assert "Downloading LFS objects: 3/3 objects" in err
    # the batch queries of fsck --remote, counted batch by batch
    more = add_objects(a, 2, size=300)
    assert RemoteStore(a, batch_size=2).missing_on_remote(objs + more) == [o for o, _ in more]
    lines = [x.rsplit("\r", 1)[-1].replace("\x1b[K", "") for x in capfd.readouterr().err.split("\n") if x]
    assert lines == ["Asking the remote: 5/5 objects"]
    p = Progress("x", enabled=False)
    p.add_total(1, 1)
    p.finish()


# --------------------------------------------------------------------------------------------
# Connections and action lifetimes


def test_connections_are_kept_alive_and_reused(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 40, size=500)
    assert RemoteStore(a, batch_size=10, concurrency=4).upload(objs) == 40
    b = make_repo(tmp_path / "b", faulty.git_url)
    rs = RemoteStore(b, batch_size=10, concurrency=4)
    before = faulty.connections
    assert rs.download(objs) == 40
    # 4 batch requests + 40 GETs over a handful of connections, not one each
    assert faulty.count("GET") == 40
    assert faulty.connections - before <= 4 + 2
    assert rs.http.pool.opened == faulty.connections - before


def test_connections_the_server_closed_while_idle_are_replaced(
    faulty: FaultyLFSServer, tmp_path: Path
) -> None:
    faulty.drop_idle = True  # every kept-alive connection is dead by the next request
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 12, size=500)
    rs = RemoteStore(a, batch_size=4, concurrency=2, retries=1)  # no retries: reuse must not need one
    assert rs.upload(objs) == 12
    b = make_repo(tmp_path / "b", faulty.git_url)
    assert RemoteStore(b, batch_size=4, concurrency=2, retries=1).download(objs) == 12
    for oid, _ in objs:
        assert store_of(b).path(oid).read_bytes() == store_of(a).path(oid).read_bytes()


def test_a_response_cut_short_does_not_spoil_its_connection(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 6, size=5000)
    assert RemoteStore(a).upload(objs) == 6
    # an object whose declared length is wrong is refused before its body is read: the body is
    # still on that connection, and the next request must not read it as its own answer
    b = make_repo(tmp_path / "b", faulty.git_url)
    lie = [(objs[0][0], objs[0][1] - 1)] + objs[1:]
    with pytest.raises(RemoteCorruptError):
        RemoteStore(b, concurrency=1).download(lie)
    assert RemoteStore(b, concurrency=1).download(objs) == 1  # the other five came the first time
    for oid, _ in objs:
        assert store_of(b).path(oid).read_bytes() == store_of(a).path(oid).read_bytes()


def test_expired_actions_are_asked_for_again(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 3, size=500)
    assert RemoteStore(a).upload(objs) == 3
    faulty.expires_in = 1
    faulty.delay_transfers = 0.7  # one at a time: the third starts ~1.4 s after the batch answer
    b = make_repo(tmp_path / "b", faulty.git_url)
    before = faulty.count("POST", "/objects/batch")
    assert RemoteStore(b, concurrency=1, retries=1).download(objs) == 3
    assert faulty.count("POST", "/objects/batch") - before >= 2  # fresh actions were asked for
    for oid, _ in objs:
        assert store_of(b).path(oid).read_bytes() == store_of(a).path(oid).read_bytes()


def test_a_signed_href_refused_before_its_announced_expiry_is_asked_for_again(
    faulty: FaultyLFSServer, tmp_path: Path
) -> None:
    # what giftless does: actions say expires_in 900, their tokens work for 60 s; a transfer
    # queue longer than that (a 1 GB clone on a slow link) met 401s
    faulty.expires_in, faulty.token_lifetime = 900, 1.0
    faulty.delay_transfers = 0.7  # one at a time: the last ones start after the token died
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 3, size=500)
    assert RemoteStore(a, concurrency=1, retries=1).upload(objs) == 3
    b = make_repo(tmp_path / "b", faulty.git_url)
    before = faulty.count("POST", "/objects/batch")
    assert RemoteStore(b, concurrency=1, retries=1).download(objs) == 3
    assert faulty.count("POST", "/objects/batch") - before >= 2
    for oid, _ in objs:
        assert store_of(b).path(oid).read_bytes() == store_of(a).path(oid).read_bytes()
