"""Progress on stderr for every operation that can take over a second: `label: done/total unit,
bytes, rate[, detail]`, redrawn in place on a terminal, one final line, quiet otherwise.

Shown when stderr is a terminal, or always when GIT_THETA_LIKE_PROGRESS=1 (=0 hides it). With a
`delay`, nothing is drawn before that many seconds have passed (a clean of a small file prints
nothing), unless GIT_THETA_LIKE_PROGRESS=1 forces it. Thread-safe: workers report from threads.
Disabled, every call is one attribute check: no lock, no clock, no formatting.

Lines drawn at the same time on one stream (a delayed checkout writes files while its download
goes on) share the row, `first | second`, cut to the terminal's width; each one's final line
gets a row of its own when it finishes, and the others go on below it.

No tqdm or rich: the filter process starts once per git command and importing either costs about
half its start-up (docs/reliability.md, "Progress").
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO

from git_theta_like.display import human_size

ENV = "GIT_THETA_LIKE_PROGRESS"
SEPARATOR = " | "

# The lines drawn and not finished, per stream (by id), in the order they appeared; one lock
# for every stream's row, so that no two draws interleave.
_rows: dict[int, list[Progress]] = {}
_row_lock = threading.Lock()


def wanted(stream: IO[str] | None = None) -> bool:
    """Whether progress is shown on stream (stderr by default): the variable, else a terminal."""
    env = os.environ.get(ENV)
    if env in ("0", "1"):
        return env == "1"
    return _isatty(stream if stream is not None else sys.stderr)


def forced() -> bool:
    return os.environ.get(ENV) == "1"


class Progress:
    """Counts `unit` done of a total (totals may grow as work is found) and, with `show_bytes`,
    bytes and the rate; `detail` is appended as it is (e.g. the device a merge runs on).

    Use: `add_total(n, nbytes)` as work is found, `advance(nbytes)` for partial bytes, `step(nbytes)`
    when one item is done, `finish()` once at the end (the final line and a newline, if anything
    was drawn or is due)."""

    def __init__(
        self,
        label: str,
        *,
        unit: str = "objects",
        total: int = 0,
        total_bytes: int = 0,
        show_bytes: bool = True,
        detail: str = "",
        delay: float = 0.0,
        enabled: bool | None = None,
        stream: IO[str] | None = None,
        min_interval: float = 0.2,
    ) -> None:
        self.label = label
        self.unit = unit
        self.show_bytes = show_bytes
        self.detail = detail
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = wanted(self.stream) if enabled is None else enabled
        self.delay = 0.0 if forced() else delay
        self.min_interval = min_interval
        self.total_objects = total
        self.total_bytes = total_bytes
        self.done_objects = 0
        self.done_bytes = 0
        self._start = time.monotonic()
        self._last = float("-inf")  # the first update draws
        self._shown = False
        self._finished = False
        self._lock = threading.Lock()

    def add_total(self, objects: int, nbytes: int = 0) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.total_objects += objects
            self.total_bytes += nbytes
        self._draw()

    def advance(self, nbytes: int) -> None:
        if not self.enabled:
            return
        with self._lock:
            self.done_bytes += nbytes
        self._draw()

    def step(self, nbytes: int = 0, count: int = 1) -> None:
        """`count` items done (one by default), with the bytes they add if not reported through
        advance."""
        if not self.enabled:
            return
        with self._lock:
            self.done_objects += count
            self.done_bytes += nbytes
        self._draw()

    def line(self) -> str:
        out = f"{self.label}: {self.done_objects}/{self.total_objects} {self.unit}"
        if self.show_bytes:
            elapsed = max(time.monotonic() - self._start, 1e-6)
            done = human_size(self.done_bytes)
            size = f"{done}/{human_size(self.total_bytes)}" if self.total_bytes else done
            out += f", {size}, {human_size(self.done_bytes / elapsed)}/s"
        if self.detail:
            out += f", {self.detail}"
        return out

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if now - self._start < self.delay:
            return  # quick work stays quiet; finish() decides on the final line
        with self._lock:
            if self._finished or (not force and now - self._last < self.min_interval):
                return
            self._last = now
            self._shown = True
        with _row_lock:
            row = _rows.setdefault(id(self.stream), [])
            if self not in row:
                row.append(self)
            self._write_row(row)

    def _write_row(self, row: list[Progress], final: str = "") -> None:
        """Redraw the stream's row (its lines joined; `final` first, on a row of its own)."""
        text = SEPARATOR.join(p.line() for p in row)
        width = _columns(self.stream)
        if width and len(text) >= width:
            text = text[: width - 1]  # a wrapped row could not be redrawn in place
        self.stream.write(("\r" + final + "\x1b[K\n" if final else "") + "\r" + text + "\x1b[K")
        self.stream.flush()

    def clear(self) -> None:
        """Wipe the drawn row (before other output, which then starts a line of its own); the
        next update draws it again."""
        if not self.enabled:
            return
        with self._lock:
            if not self._shown or self._finished:
                return
            self._last = float("-inf")  # the first update draws
        with _row_lock:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def finish(self) -> None:
        """The final line, ended by a newline (so that git's own progress line, or the next
        file's, starts on a line of its own; lines still going on are drawn again below it);
        nothing if nothing was drawn and the work took less than the delay, or there was no
        work at all."""
        if not self.enabled or self._finished:
            return
        if not self._shown and (
            not (self.total_objects or self.done_objects) or time.monotonic() - self._start < self.delay
        ):
            return
        with self._lock:
            self._finished = True
        with _row_lock:
            row = _rows.get(id(self.stream), [])
            if self in row:
                row.remove(self)
            if not row:
                _rows.pop(id(self.stream), None)
                self.stream.write("\r" + self.line() + "\x1b[K\n")
                self.stream.flush()
            else:
                self._write_row(row, final=self.line())


def _columns(stream: IO[str]) -> int:
    """The terminal's width when stream is one, else 0 (no limit: a pipe or a file)."""
    if not _isatty(stream):
        return 0
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, ValueError, OSError):
        return 0


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
