"""Moving objects to and from a Git LFS remote: the batch API (`POST <endpoint>/objects/batch`)
and a concurrent transfer queue of "basic" transfers (PUT with an optional verify POST, GET).

Any Git LFS server works (GitHub, Hugging Face Hub, GitLab, giftless, ...), as does a `file://` or
local-path remote, where objects are copied straight into that repository's own `lfs/objects`
directory (what git-lfs's standalone file transfer does). Every downloaded object streams into
`<lfs>/tmp`, is checked against its oid (SHA-256), synced and renamed into place: the store never
holds a partial or corrupt object."""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from git_theta_like import faults
from git_theta_like.errors import (
    HttpStatusError,
    ObjectMissingError,
    RemoteAuthError,
    RemoteCorruptError,
    RemoteDiskFullError,
    RemoteError,
    RemoteObjectMissingError,
    RemoteUnreachableError,
    RetryableError,
    ThetaLikeError,
)
from git_theta_like.gitio.repo import Repo
from git_theta_like.lfs.endpoint import Endpoint, resolve_endpoint
from git_theta_like.lfs.http import LFS_MEDIA_TYPE, Http, describe
from git_theta_like.progress import Progress
from git_theta_like.store import store_of
from git_theta_like.store.atomic import AtomicFile
from git_theta_like.store.local import LocalStore

BATCH_SIZE = 100
CONCURRENCY = 8
CHUNK = 1 << 20
# a request body goes out in pieces this small: Python gives one send of a piece the whole
# activity timeout, so a 64 KiB piece keeps uploads alive down to ~2 KB/s at the default 30 s
SEND_CHUNK = 64 << 10
BATCH_RESPONSE_LIMIT = 64 << 20  # theta-like.maxBatchResponse
# an action that expires sooner than this is asked for again before it is used (git-lfs's
# objectExpirationToTransfer); for an action with a shorter lifetime, half of it
EXPIRY_MARGIN = 5.0
PROGRESS_TITLES = {"upload": "Uploading LFS objects", "download": "Downloading LFS objects"}

T = TypeVar("T")


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

    Returns False when the object was already there. Nothing is left behind on failure. Holds
    the store's shared lock meanwhile (a gc waits).
    """
    with store.lock.shared():
        dest = store.path(oid)
        got = 0
        try:
            with AtomicFile(store.tmp, prefix="gtl-recv-", durable=store.durable) as f:
                h = hashlib.sha256()
                for chunk in chunks:
                    if got + len(chunk) > size:
                        raise RemoteCorruptError(
                            f"object {oid} from {source} is corrupt: more than its {size} bytes were sent; "
                            "nothing was stored",
                            [oid],
                        )
                    h.update(chunk)
                    f.write(chunk)
                    got += len(chunk)
                    progress.advance(len(chunk))
                if got < size:
                    raise RetryableError(
                        RemoteError(
                            f"transfer of object {oid} from {source} was cut short: {got} of {size} bytes",
                            [oid],
                        )
                    )
                if h.hexdigest() != oid:
                    raise RemoteCorruptError(
                        f"object {oid} from {source} is corrupt: its {got} bytes hash to {h.hexdigest()}; "
                        "nothing was stored",
                        [oid],
                    )
                if dest.exists():
                    return False
                f.commit(dest)
            store.keep_link(oid)
            faults.point(fault)
            return True
        except BaseException as e:
            progress.advance(-got)
            if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise RemoteDiskFullError(
                    f"no space left on device while writing object {oid} to {store.root}: {e.strerror}", [oid]
                ) from None
            if isinstance(e, http.client.HTTPException | ConnectionError | TimeoutError):
                raise RetryableError(
                    RemoteUnreachableError(
                        f"transfer of object {oid} from {source} failed: {describe(e)}", [oid]
                    )
                ) from None
            raise


def _file_chunks(path: Path, size: int = CHUNK) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(size):
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
    if cls is HttpStatusError:
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


def _expiry(action: object, asked: object) -> tuple[float, float] | None:
    """When a batch action stops working (time.time()) and how long it lived from the batch
    answer (`asked`): `expires_in` seconds after the answer (preferred, as in git-lfs) or
    `expires_at` (RFC 3339). None when it says nothing usable; a server's nonsense (a negative
    lifetime, a malformed date) is nothing usable, not a reason to ask again and again."""
    if not isinstance(action, dict) or not isinstance(asked, float):
        return None
    expires_in = action.get("expires_in")
    if isinstance(expires_in, int) and not isinstance(expires_in, bool) and expires_in > 0:
        return asked + expires_in, float(expires_in)
    expires_at = action.get("expires_at")
    if isinstance(expires_at, str) and expires_at:
        try:
            at = datetime.fromisoformat(expires_at)
        except ValueError:
            return None
        if at.tzinfo is None or at.year < 2000:  # Go's zero time "0001-01-01T00:00:00Z": none
            return None
        deadline = at.timestamp()
        return (deadline, deadline - asked) if deadline > asked else None
    return None


def _unique(oids: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for oid, size in oids:
        out.setdefault(oid, int(size))
    return out


def _chunks(items: list[T], n: int) -> Iterator[list[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class RemoteStore:
    """Objects on a Git LFS remote, moved to and from `store_of(repo)`.

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
        timeout: float | None = None,
    ) -> None:
        self.repo = repo
        self.remote = remote
        self.url = url
        self.batch_size = max(1, batch_size)
        self.concurrency = concurrency or max(1, repo.config_int("lfs.concurrenttransfers", CONCURRENCY))
        self.http = Http(repo, retries=retries, backoff=backoff, timeout=timeout)
        self.batch_limit = max(1, repo.config_int("theta-like.maxBatchResponse", BATCH_RESPONSE_LIMIT))
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
        return self._transfer("upload", _unique(oids), progress)

    def download(self, oids: Iterable[tuple[str, int]], progress: Progress | None = None) -> int:
        """Download those of `oids` not already in store_of(repo); returns how many were fetched."""
        store = store_of(self.repo)
        wanted = {o: s for o, s in _unique(oids).items() if not store.has(o)}
        return self._transfer("download", wanted, progress)

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
        # objects asked about of all, for a query of many batches (fsck --remote of a big history)
        progress = Progress("Asking the remote", show_bytes=False, total=len(wanted), delay=1.0)
        try:
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
                progress.step(count=len(batch))
        finally:
            progress.finish()
        return missing

    # -- pieces

    def _transfer(self, operation: str, wanted: dict[str, int], progress: Progress | None) -> int:
        """Move `wanted` (oid -> size) up or down (`operation`): copied straight between the
        stores for a local-path remote, else asked for in batches and sent or fetched by
        concurrent transfers. Returns how many objects were moved. The failures of single
        objects are collected and raised at the end, as one error; the run stops early on a
        fatal one (unreachable, unauthorized, disk full)."""
        if not wanted:
            return 0
        ep = self.endpoint(operation)
        progress = progress if progress is not None else Progress(PROGRESS_TITLES[operation])
        run = _Run(self.concurrency)
        try:
            if ep.is_file:
                src, dest, copies = self._file_plan(ep, operation, wanted, run)
                progress.add_total(len(copies), sum(s for _, s in copies))
                for oid, size in copies:
                    run.submit(self._file_copy_task(src, dest, oid, size, ep.url, progress))
            else:
                task = self._upload_task if operation == "upload" else self._download_task
                for batch, objects in self._batches(ep, operation, wanted, run):
                    ready = self._ready(ep, operation, batch, objects, run)
                    progress.add_total(len(ready), sum(s for _, s, _ in ready))
                    for oid, size, obj in ready:
                        run.submit(task(ep, oid, size, obj, progress))
            return run.finish()
        finally:
            run.pool.shutdown(wait=True, cancel_futures=True)
            progress.finish()

    def _file_plan(
        self, ep: Endpoint, operation: str, wanted: dict[str, int], run: _Run
    ) -> tuple[LocalStore, LocalStore, list[tuple[str, int]]]:
        """For a local-path remote: the store objects are copied from, the store they are copied
        to, and the (oid, size) pairs to copy. An upload copies what the remote lacks, all of
        which must be here (else ObjectMissingError); a download fails, in `run`, the objects
        the remote lacks and copies the others."""
        assert ep.lfs_dir is not None
        store = store_of(self.repo)
        if operation == "upload":
            remote = LocalStore(ep.lfs_dir, durable=store.durable)
            need = [(o, s) for o, s in wanted.items() if not remote.has(o)]
            self._check_local(need)
            return store, remote, need
        remote = LocalStore(ep.lfs_dir)
        missing = [o for o in wanted if not remote.has(o)]
        if missing:
            run.fail(self._missing_error(ep.url, missing))
        gone = set(missing)
        return remote, store, [(o, s) for o, s in wanted.items() if o not in gone]

    def _ready(
        self,
        ep: Endpoint,
        operation: str,
        batch: list[tuple[str, int]],
        objects: dict[str, dict[str, Any]],
        run: _Run,
    ) -> list[tuple[str, int, dict[str, Any]]]:
        """The objects of a batch answer that have an action for `operation`, as (oid, size,
        object). An object the server refused fails in `run`, and so does a download without
        an action; an upload without one is not needed (the remote has it). The objects to
        upload must be here (else ObjectMissingError)."""
        ready: list[tuple[str, int, dict[str, Any]]] = []
        for oid, size in batch:
            obj = objects.get(oid)
            err = self._object_error(ep, operation, oid, obj)
            has_action = obj is not None and operation in (obj.get("actions") or {})
            if err is None and not has_action and operation == "download":
                err = RemoteError(f"LFS server at {ep.url} gave no download action for {oid}", [oid])
            if err is not None:
                run.fail(err)
            elif has_action:
                assert obj is not None
                ready.append((oid, size, obj))
        if operation == "upload":
            self._check_local([(o, s) for o, s, _ in ready])
        return ready

    def _batches(
        self, ep: Endpoint, operation: str, wanted: dict[str, int], run: _Run
    ) -> Iterator[tuple[list[tuple[str, int]], dict[str, dict[str, Any]]]]:
        """The batch API's answer for `wanted`, batch_size objects at a time, until the run
        stops (a batch request that fails stops it)."""
        for batch in _chunks(list(wanted.items()), self.batch_size):
            if run.stop.is_set():
                return
            try:
                objects = self._batch(ep, operation, batch)
            except ThetaLikeError as e:
                run.fail(e)
                return
            yield batch, objects

    def _check_local(self, need: list[tuple[str, int]]) -> None:
        store = store_of(self.repo)
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
            raw = self.http.read_body(
                resp, url, f"batch {operation}", self.batch_limit, "theta-like.maxBatchResponse"
            )
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
        except HttpStatusError as e:
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
        asked = time.time()
        return {str(o.get("oid")): {**o, "_asked": asked} for o in doc["objects"] if isinstance(o, dict)}

    def _live(
        self, ep: Endpoint, operation: str, oid: str, size: int, obj: dict[str, Any], force: bool = False
    ) -> dict[str, Any] | None:
        """obj, or, when its action for `operation` expires within EXPIRY_MARGIN (or `force`), a
        fresh batch answer for the object (None: an upload the server no longer needs)."""
        actions = obj.get("actions") or {}
        expiry = _expiry(actions.get(operation), obj.get("_asked"))
        fine = expiry is None or time.time() < expiry[0] - min(EXPIRY_MARGIN, expiry[1] / 2)
        if fine and not force:
            return obj
        fresh = self._batch(ep, operation, [(oid, size)]).get(oid)
        err = self._object_error(ep, operation, oid, fresh)
        if err is not None:
            raise err
        assert fresh is not None
        if operation not in (fresh.get("actions") or {}):
            if operation == "upload":
                return None
            raise RemoteError(f"LFS server at {ep.url} gave no download action for {oid}", [oid])
        return fresh

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
            path = store_of(self.repo).path(oid)
            current: dict[str, Any] | None = obj
            sent = 0

            def body() -> Iterable[bytes]:
                nonlocal sent
                progress.advance(-sent)
                sent = 0
                what = f"upload of {oid}"
                for chunk in self.http.paced(_file_chunks(path, SEND_CHUNK), href, what):
                    sent += len(chunk)
                    progress.advance(len(chunk))
                    yield chunk

            href = ""

            refreshed = False

            def put() -> None:
                nonlocal current, href, refreshed
                if current is None:
                    return
                current = self._live(ep, "upload", oid, size, current)  # an expired action: a new one
                if current is None:
                    return  # meanwhile the server got it (another client's push)
                href, headers, use_creds = self._action(current, "upload")
                headers = {"Content-Type": "application/octet-stream", **headers, "Content-Length": str(size)}
                try:
                    resp = self.http.open(
                        "PUT", href, headers, body, use_creds=use_creds, what=f"upload of {oid}", note=ep.note
                    )
                    self.http.read_body(
                        resp, href, f"upload of {oid}", self.batch_limit, "theta-like.maxBatchResponse"
                    )
                except RemoteAuthError:
                    if use_creds or refreshed:
                        raise
                    refreshed = True  # a signed href refused before its announced expiry: once more
                    current = self._live(ep, "upload", oid, size, current, force=True)
                    put()
                except HttpStatusError as e:
                    raise RemoteError(
                        f"upload of object {oid} to {href} failed: {e.status} {e.message}", [oid]
                    ) from None

            self.http.retrying(put)
            if current is None:
                progress.step()
                return False
            if "verify" in (current.get("actions") or {}):
                vhref, vheaders, vcreds = self._action(current, "verify")
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
                        self.http.read_body(
                            resp, vhref, f"verify of {oid}", self.batch_limit, "theta-like.maxBatchResponse"
                        )
                    except HttpStatusError as e:
                        raise RemoteError(
                            f"LFS server at {vhref} could not verify uploaded object {oid}: "
                            f"{e.status} {e.message}",
                            [oid],
                        ) from None

                self.http.retrying(verify)
            progress.step()
            faults.point("upload")
            return True

        return task

    def _download_task(
        self, ep: Endpoint, oid: str, size: int, obj: dict[str, Any], progress: Progress
    ) -> Callable[[], bool]:
        def task() -> bool:
            current, refreshed = obj, False

            def get() -> bool:
                nonlocal current, refreshed
                live = self._live(ep, "download", oid, size, current)  # an expired action: a new one
                assert live is not None
                current = live
                href, headers, use_creds = self._action(live, "download")
                try:
                    resp = self.http.open(
                        "GET", href, headers, use_creds=use_creds, what=f"download of {oid}"
                    )
                except RemoteAuthError:
                    if use_creds or refreshed:
                        raise
                    # a signed href refused: its lifetime was shorter than announced (giftless's
                    # tokens live 60 s, whatever expires_in says); a new action, once
                    refreshed = True
                    fresh = self._live(ep, "download", oid, size, current, force=True)
                    assert fresh is not None
                    current = fresh
                    return get()
                except HttpStatusError as e:
                    if e.status in (404, 410):
                        raise self._missing_error(href, [oid]) from None
                    raise RemoteError(
                        f"download of object {oid} from {href} failed: {e.status} {e.message}", [oid]
                    ) from None
                declared = resp.getheader("Content-Length")
                if declared and declared.isdigit() and int(declared) != size:
                    resp.close()
                    raise RemoteCorruptError(
                        f"object {oid} from {ep.url} is corrupt: the server sends {declared} bytes, "
                        f"the object has {size}; nothing was stored",
                        [oid],
                    )
                chunks = self.http.chunks(resp, href, f"download of {oid}", size + 1)
                with resp:
                    return _receive(store_of(self.repo), oid, size, chunks, ep.url, progress)

            new = self.http.retrying(get)
            progress.step()
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
                        "download" if dest is store_of(self.repo) else "upload",
                    )
                )
            except FileNotFoundError:
                raise self._missing_error(str(src.objects), [oid]) from None
            except OSError as e:
                raise RemoteError(f"copying object {oid} ({where}) failed: {e}", [oid]) from None
            progress.step()
            return new

        return task
