"""The one atomic writer: content goes to a temporary file next to its destination (or in a
given temp folder on the same file system), is synced when asked, and is renamed into place only
when complete. A failure, an exception or a crash leaves the destination as it was and no
temporary file behind (a crash can leave one in the temp folder, which `gc` sweeps)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from git_theta_like.dtypes import Buffer


class AtomicFile:
    """`with AtomicFile(folder) as f: f.write(...); f.commit(dest)`: without commit, discarded."""

    def __init__(self, folder: str | os.PathLike[str], prefix: str = ".gtl-", durable: bool = False) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fd, self.name = tempfile.mkstemp(dir=folder, prefix=prefix)
        self._f = os.fdopen(fd, "wb")
        self.durable = durable
        self.done = False

    def write(self, data: Buffer) -> int:
        return self._f.write(data)

    def writelines(self, parts: Iterable[Buffer]) -> None:
        for p in parts:
            self._f.write(p)

    def close(self) -> None:
        """Flush (and sync, when durable) the content; the file stays temporary."""
        if not self._f.closed:
            self._f.flush()
            if self.durable:
                os.fsync(self._f.fileno())
            self._f.close()

    def commit(self, dest: str | os.PathLike[str]) -> None:
        """Rename the complete content to dest (replacing what was there)."""
        self.close()
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.name, dest)
        self.done = True

    def discard(self) -> None:
        """Remove the temporary file (nothing when committed). Never raises for the close of a
        file whose writes already failed (a full disk): the error that got us here is the one."""
        try:
            if not self._f.closed:
                with contextlib.suppress(OSError):
                    self._f.close()
        finally:
            if not self.done:
                Path(self.name).unlink(missing_ok=True)
                self.done = True

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


def write_atomic(
    dest: str | os.PathLike[str], data: Buffer | Iterable[Buffer], durable: bool = False
) -> None:
    """Replace dest with data (bytes, or an iterable of byte parts), atomically."""
    target = Path(dest)
    with AtomicFile(target.parent, prefix=f".{target.name}.gtl-", durable=durable) as f:
        if isinstance(data, bytes | bytearray | memoryview):
            f.write(data)
        else:
            f.writelines(data)
        f.commit(target)
