"""The object store's lock: every writer shares it, `git theta-like gc` takes it alone.

A process that writes objects into a store holds a shared `flock` on `<lfs dir>/theta-like.lock`
while it does: the filter's Engine from its first clean until it is closed (the filter process
lives as long as the git command, which writes the index that names the new objects before it
lets the filter go), every `LocalStore.write`, every download. gc holds it exclusively while it
scans what is reachable and deletes the rest, so an object written by a clean in flight is never
deleted, however young or old it is. gc waits a bounded time for the writers, then stops with
a clear error; a writer waits for a gc to finish.

Within one process the shared lock is counted: threads and nested writers share one file
descriptor, taken once. A lock dies with its process (flock), so a crash leaves nothing stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from git_theta_like.errors import StoreBusyError

LOCK_NAME = "theta-like.lock"
WRITER_WAIT = 600.0  # how long a writer waits for a gc (seconds)
BUSY = "another git command is writing objects; try again"


class _Held:
    """This process's shared hold on one lock file: one descriptor, a count of holders."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.fd: int | None = None
        self.count = 0


_HELD: dict[str, _Held] = {}
_HELD_MUTEX = threading.Lock()


def _say(msg: str) -> None:
    print(f"git-theta-like: {msg}", file=sys.stderr, flush=True)


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o666)


def _try(fd: int, how: int) -> bool:
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
        return True
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


def _wait(fd: int, how: int, timeout: float) -> bool:
    """Take the lock, polling until timeout (seconds); False when it stayed taken."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while not _try(fd, how):
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.2)
    return True


class StoreLock:
    """The lock of the store rooted at `root` (an lfs dir)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.path = Path(root) / LOCK_NAME

    def _held(self) -> _Held:
        key = os.path.abspath(self.path)
        with _HELD_MUTEX:
            return _HELD.setdefault(key, _Held())

    @property
    def held_shared(self) -> bool:
        """Whether this process holds the shared lock now."""
        return self._held().count > 0

    def acquire_shared(self, timeout: float = WRITER_WAIT) -> None:
        held = self._held()
        with held.mutex:
            if held.count == 0:
                fd = _open(self.path)
                try:
                    if not _try(fd, fcntl.LOCK_SH):
                        _say(f"waiting for git theta-like gc to finish (it holds {self.path})")
                        if not _wait(fd, fcntl.LOCK_SH, timeout):
                            raise StoreBusyError(
                                f"git theta-like gc has held {self.path} for {timeout:.0f}s; "
                                "nothing was written: try again when it has finished"
                            )
                except BaseException:
                    os.close(fd)
                    raise
                held.fd = fd
            held.count += 1

    def release_shared(self) -> None:
        held = self._held()
        with held.mutex:
            if held.count == 0:
                return
            held.count -= 1
            if held.count == 0 and held.fd is not None:
                os.close(held.fd)  # closing the descriptor releases the flock
                held.fd = None

    @contextlib.contextmanager
    def shared(self, timeout: float = WRITER_WAIT) -> Iterator[None]:
        """Held while objects are written into the store."""
        self.acquire_shared(timeout)
        try:
            yield
        finally:
            self.release_shared()

    @contextlib.contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        """Held by gc for its scan and its deletes: no writer runs meanwhile. Waits up to timeout
        seconds for the writers, then raises StoreBusyError."""
        if self.held_shared:
            raise StoreBusyError(f"{BUSY} (this process is writing objects into {self.path.parent})")
        fd = _open(self.path)
        try:
            if not _try(fd, fcntl.LOCK_EX):
                if timeout > 0:
                    where = self.path.parent
                    _say(f"waiting for the git commands writing objects into {where} (up to {timeout:.0f}s)")
                if not _wait(fd, fcntl.LOCK_EX, timeout):
                    raise StoreBusyError(f"{BUSY} (it holds {self.path}); nothing was deleted")
            yield
        finally:
            os.close(fd)
