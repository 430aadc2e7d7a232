"""Transfer progress on stderr: `label: done/total objects, bytes, rate`, redrawn in place on a
terminal, quiet otherwise."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO

from git_theta_like.display import human_size


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
            f"{human_size(self.done_bytes)}/{human_size(self.total_bytes)}, "
            f"{human_size(self.done_bytes / elapsed)}/s"
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
