"""A hostile or broken LFS server (tests/lfs_server.py's hostile modes): one that stalls, drips,
sends endless bodies or batch responses, points at file:// hrefs or redirects to another origin.
Each test asserts the outcome: a clear error, nothing in the store or its tmp dir, bounded memory,
no header leaked, no secret echoed. Timeouts are set to 1 s; a generous bound says "no hang"."""

from __future__ import annotations

import resource
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import git, run
from lfs_server import ENDLESS_CAP, FaultyLFSServer
from test_remote_store import add_objects, leftovers, make_repo

from git_theta_like.errors import RemoteCorruptError, RemoteError, RemoteStallError, redact
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.endpoint import resolve_endpoint
from git_theta_like.lfs.transfer import RemoteStore
from git_theta_like.store import store_of

NO_HANG = 30.0  # seconds: far more than a 1 s stall timeout needs, far less than "forever"


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[FaultyLFSServer]:
    with FaultyLFSServer(tmp_path / "faulty") as srv:
        yield srv


def _pushed(faulty: FaultyLFSServer, tmp_path: Path, size: int = 200) -> list[tuple[str, int]]:
    a = make_repo(tmp_path / "a", faulty.git_url)
    objs = add_objects(a, 1, size=size)
    RemoteStore(a).upload(objs)
    return objs


def _clone(faulty: FaultyLFSServer, tmp_path: Path, **config: str) -> Repo:
    make_repo(tmp_path / "b", faulty.git_url)
    for k, v in config.items():
        git(tmp_path / "b", "config", k, v)
    return Repo(tmp_path / "b")


def _nothing_stored(repo: Repo, objs: list[tuple[str, int]]) -> None:
    assert not any(store_of(repo).has(o) for o, _ in objs)
    assert leftovers(repo) == []


# --------------------------------------------------------------------------------------------
# Stalls (lfs.activitytimeout)


def test_a_dripping_download_is_abandoned(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.drip_downloads = 2.0  # one byte every 2 s: never "down", never done
    b = _clone(faulty, tmp_path, **{"lfs.activitytimeout": "1"})
    t0 = time.monotonic()
    with pytest.raises(RemoteStallError) as e:
        RemoteStore(b).download(objs)
    assert time.monotonic() - t0 < NO_HANG
    msg = str(e.value)
    assert faulty.base in msg and objs[0][0] in msg and "lfs.activitytimeout" in msg
    _nothing_stored(b, objs)


@pytest.mark.parametrize("where", ["download", "batch"])
def test_a_trickle_under_the_low_speed_limit_is_abandoned(
    faulty: FaultyLFSServer, tmp_path: Path, where: str
) -> None:
    """A byte every 50 ms is never silent for the activity timeout (30 s here, the default), so
    only the low-speed limit (git's http.lowSpeedLimit / http.lowSpeedTime) stops it."""
    objs = _pushed(faulty, tmp_path)
    setattr(faulty, f"drip_{where}es" if where == "batch" else "drip_downloads", 0.05)
    b = _clone(faulty, tmp_path, **{"lfs.activitytimeout": "30", "http.lowSpeedTime": "1"})
    t0 = time.monotonic()
    with pytest.raises(RemoteStallError) as e:
        RemoteStore(b).download(objs)
    assert time.monotonic() - t0 < NO_HANG  # and the message says which limit ended it
    msg = str(e.value)
    assert "under 1000 bytes/s for 1s" in msg and "http.lowSpeedLimit" in msg and faulty.base in msg
    _nothing_stored(b, objs)


def test_a_slow_link_within_the_limit_completes(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    objs = _pushed(faulty, tmp_path, size=1000)
    faulty.drip_downloads = 0.0002  # a byte every 0.2-1 ms: 1-5 KB/s
    b = _clone(faulty, tmp_path, **{"http.lowSpeedLimit": "100", "http.lowSpeedTime": "0.3"})
    assert RemoteStore(b).download(objs) == 1


def test_an_upload_the_server_takes_in_too_slowly_is_abandoned(
    faulty: FaultyLFSServer, tmp_path: Path
) -> None:
    """The send side: the server reads 16 KiB every 50 ms (320 KB/s), under a 4 MB/s limit; the
    socket buffers fill, the pieces of the body go out slower, and the upload is given up."""
    faulty.slow_uploads = 0.05
    a = make_repo(tmp_path / "a", faulty.git_url)
    git(tmp_path / "a", "config", "http.lowSpeedLimit", str(4 << 20))
    git(tmp_path / "a", "config", "http.lowSpeedTime", "1")
    objs = add_objects(a, 1, size=24 << 20)
    t0 = time.monotonic()
    with pytest.raises(RemoteStallError, match=r"under 4194304 bytes/s for 1s during upload of"):
        RemoteStore(a).upload(objs)
    assert time.monotonic() - t0 < NO_HANG


def test_low_speed_settings_are_checked(tmp_path: Path) -> None:
    a = make_repo(tmp_path / "a", "http://127.0.0.1:1/x.git")
    git(tmp_path / "a", "config", "http.lowSpeedLimit", "fast")
    with pytest.raises(RemoteError, match="lowSpeedLimit must be a number of bytes per second, not 'fast'"):
        RemoteStore(a)


def test_a_server_that_never_answers_is_abandoned(
    faulty: FaultyLFSServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.hang = True
    b = _clone(faulty, tmp_path)
    asked = faulty.count("POST", "/objects/batch")
    monkeypatch.setenv("GIT_THETA_LIKE_ACTIVITY_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(RemoteStallError, match=r"stalled.*batch download.*lfs\.activitytimeout = 1"):
        RemoteStore(b).download(objs)
    assert time.monotonic() - t0 < NO_HANG
    assert faulty.count("POST", "/objects/batch") == asked + 1  # a stall is not retried
    _nothing_stored(b, objs)
    a = Repo(tmp_path / "a")
    with pytest.raises(RemoteStallError, match="batch upload"):
        RemoteStore(a).upload(add_objects(a, 1, seed=1))


def test_a_stall_fails_the_command_fast(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.hang = True
    b = tmp_path / "b"
    _clone(faulty, tmp_path, **{"lfs.activitytimeout": "1"})
    oid, size = objs[0]
    code = (
        "import sys; from git_theta_like.gitio.repo import Repo; "
        "from git_theta_like.lfs.transfer import RemoteStore; "
        f"RemoteStore(Repo('.')).download([({oid!r}, {size})])"
    )
    t0 = time.monotonic()
    p = run(shutil.which("python") or "python", "-c", code, cwd=b, check=False)
    assert time.monotonic() - t0 < NO_HANG
    assert p.returncode != 0 and "RemoteStallError" in p.stderr and "lfs.activitytimeout" in p.stderr


# --------------------------------------------------------------------------------------------
# Sizes and schemes


def test_an_endless_body_is_cut_at_the_objects_size(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.endless_downloads = True
    b = _clone(faulty, tmp_path)
    with pytest.raises(RemoteCorruptError, match=rf"{objs[0][0]}.*more than its {objs[0][1]} bytes"):
        RemoteStore(b).download(objs)
    _nothing_stored(b, objs)
    assert faulty.endless_sent < ENDLESS_CAP  # we hung up; the server did not run into its cap


@pytest.mark.parametrize("href", ["file:///etc/hostname", "file:///dev/zero", "ftp://127.0.0.1:1/x"])
def test_hrefs_other_than_http_are_refused(faulty: FaultyLFSServer, tmp_path: Path, href: str) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.download_href = href
    b = _clone(faulty, tmp_path)
    with pytest.raises(RemoteError, match="not an http or https URL"):
        RemoteStore(b, backoff=0.01).download(objs)
    _nothing_stored(b, objs)


@pytest.mark.parametrize("target", ["file:///etc", "ftp://127.0.0.1:1"])
def test_a_redirect_to_another_scheme_is_refused(
    faulty: FaultyLFSServer, tmp_path: Path, target: str
) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.redirect_downloads_to = target
    b = _clone(faulty, tmp_path)
    # urllib itself refuses file: redirects; ftp: ones are ours to refuse
    with pytest.raises(RemoteError, match=r"not an http or https URL|Redirection to url .* is not allowed"):
        RemoteStore(b, backoff=0.01).download(objs)
    _nothing_stored(b, objs)


def test_a_huge_batch_response_is_refused(faulty: FaultyLFSServer, tmp_path: Path) -> None:
    objs = _pushed(faulty, tmp_path)
    faulty.huge_batch = 200 << 20
    b = _clone(faulty, tmp_path, **{"theta-like.maxBatchResponse": "1m"})
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(RemoteError, match="theta-like.maxBatchResponse"):
        RemoteStore(b, backoff=0.01).download(objs)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 100 << 10  # far less than the 200 MiB the server sends
    _nothing_stored(b, objs)


# --------------------------------------------------------------------------------------------
# Headers across origins, and secrets in messages


def test_redirect_to_another_origin_drops_headers_scoped_to_the_lfs_host(
    faulty: FaultyLFSServer, tmp_path: Path
) -> None:
    objs = add_objects(make_repo(tmp_path / "a", faulty.git_url), 2)
    RemoteStore(Repo(tmp_path / "a")).upload(objs)
    with FaultyLFSServer(tmp_path / "other") as other:
        for oid, _ in objs:
            shutil.copy(faulty.object_path(oid), other.object_path(oid))
        faulty.redirect_downloads_to = other.base  # another port: another origin
        faulty.download_action_headers = {"X-Action": "action-secret", "Authorization": "Bearer tok"}
        b = _clone(
            faulty,
            tmp_path,
            **{
                f"http.{faulty.base}/.extraHeader": "X-Scoped: lfs-host-secret",
                f"http.{other.base}/.extraHeader": "X-Other: for-the-other-host",
                "http.extraHeader": "X-Everywhere: any-host",
            },
        )
        assert RemoteStore(b).download(objs) == 2
        assert len(other.public_headers) == 2
        for got in other.public_headers:
            names = {k.lower(): v for k, v in got.items()}
            assert "x-scoped" not in names and "x-action" not in names and "authorization" not in names
            assert names["x-other"] == "for-the-other-host"  # scoped to the new origin
            assert names["x-everywhere"] == "any-host"  # unscoped: meant for every URL
        for oid, _ in objs:
            assert store_of(b).has(oid)


def test_credentials_never_appear_in_messages(tmp_path: Path) -> None:
    r = make_repo(tmp_path / "r", "foo://user:s3cr3t@example.invalid/org/repo")
    with pytest.raises(RemoteError) as e:
        resolve_endpoint(r, "origin", "download")
    assert "unsupported remote URL scheme" in str(e.value) and "s3cr3t" not in str(e.value)
    assert "user:<redacted>@" in str(e.value)

    git(tmp_path / "r", "config", "lfs.url", "ftp://user:s3cr3t@127.0.0.1:1/x")
    p = run("git", "theta-like", "fetch", cwd=tmp_path / "r", check=False)
    assert p.returncode != 0 and "s3cr3t" not in p.stdout + p.stderr

    assert "abc123" not in redact("headers {'Authorization': 'Basic abc123'}")
    assert "tok" not in redact("Authorization: Bearer tok")
    assert redact("https://u:p@ss@host/x") == "https://u:<redacted>@host/x"
