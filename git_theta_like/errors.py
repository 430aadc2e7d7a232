"""Every exception of the package, in one hierarchy under ThetaLikeError. Each names what failed,
for the user to read. Bottom layer: imports nothing of the package."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/@\s:'\"]*):[^/\s'\"]*@")
_AUTH_VALUE = re.compile(
    r"(?i)\b((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:(basic|bearer|token)\s+)?[^'\"\s,}]+"
)
REDACTED = "<redacted>"


def redact(text: str) -> str:
    """text with credentials hidden: the password of every `scheme://user:password@` URL and the
    value of every Authorization header (as git does in its messages)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{REDACTED}@", text)
    return _AUTH_VALUE.sub(lambda m: m.group(1) + (f"{m.group(2)} " if m.group(2) else "") + REDACTED, text)


class ThetaLikeError(Exception):
    """Base class: an error with a message meant for the user (credentials in it redacted).

    `exit_status` is the command line's: 1, printed as git's `error: ...` line (a command that
    failed); 128 for the few where git itself dies with `fatal: ...` (not a repository, no work
    tree, a bad revision)."""

    exit_status = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class FormatError(ThetaLikeError):
    """A checkpoint could not be split into skeleton + tensors (it is then stored whole)."""


class UnsafePickleError(FormatError):
    """A pickle references something other than tensor rebuild functions; it is never executed."""


class ObjectMissingError(ThetaLikeError):
    """An object a manifest needs is not in the local store."""


class ObjectCorruptError(ThetaLikeError):
    """An object exists but its content does not match its hashes or cannot be decoded."""


class WaitCycleError(ThetaLikeError):
    """Work run through SingleFlight would wait on itself (directly, or through other threads
    waiting in turn): the work for a key needs its own result (a delta chain that leads back to
    one of its objects, say)."""


class StoreBusyError(ThetaLikeError):
    """The object store's lock could not be taken in time: gc waits for the commands writing
    objects, writers wait for a gc."""


class SharedStorageError(ThetaLikeError):
    """gc was asked to collect an object store that other repositories use too (`lfs.storage`
    naming one directory) without `--shared-storage`, or their roots cannot be read."""


class ManifestError(ThetaLikeError):
    """Text that should be a manifest is malformed."""


class RemoteError(ThetaLikeError):
    """A transfer to or from a remote failed; `oids` names the objects concerned (if any)."""

    def __init__(self, message: str, oids: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.oids: list[str] = list(oids)


class RemoteUnreachableError(RemoteError):
    """The server could not be reached (connection refused, DNS, timeout, repeated 5xx)."""


class RemoteStallError(RemoteUnreachableError):
    """The server sent or accepted nothing for `lfs.activitytimeout` seconds (not retried)."""


class RemoteAuthError(RemoteError):
    """The server refused our credentials (401 after asking for them, or 403)."""


class RemoteObjectMissingError(RemoteError):
    """The server does not have an object we asked for."""


class RemoteCorruptError(RemoteError):
    """What the server sent does not hash to the object's id."""


class RemoteDiskFullError(RemoteError):
    """No space left on the device an object was being written to."""


class MigrateError(ThetaLikeError):
    """migrate cannot go on; nothing was changed."""


class PublishError(ThetaLikeError):
    """publish or export cannot go on; no branch was moved and nothing was left half-written."""


class DeviceError(ThetaLikeError):
    """A merge device (cpu, cuda:N, mps) that is unknown or not available."""


class MergeBuildError(ThetaLikeError):
    """A merged checkpoint could not be assembled from its parts."""


class MergeToolError(ThetaLikeError):
    """mergetool cannot prepare or resolve a conflicted checkpoint."""


class MergeConfigError(ThetaLikeError):
    """An unknown strategy, an unknown parameter or a bad parameter value."""


class ShardedMergeError(ThetaLikeError):
    pass


class TruncatedError(FormatError):
    """The input ended inside a structure (a truncated file)."""

    def __init__(self, what: str, wanted: int, got: int) -> None:
        super().__init__(f"file ends inside {what}: expected {wanted} bytes, found {got}")


class ProtocolError(ThetaLikeError):
    """Git sent something the filter protocol does not allow."""


class RevisionError(ThetaLikeError):
    """A name that is neither a revision nor a path, worded as git words it (`bad revision 'x'`,
    `ambiguous argument 'x': ...`); the command line prints it as git's `fatal:` line, with
    `hint` below it, and exits with git's status 128."""

    exit_status = 128

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class NotARepositoryError(ThetaLikeError):
    """The current directory is not inside a Git repository (git's `fatal:`, status 128)."""

    exit_status = 128


class WorkTreeRequiredError(ThetaLikeError):
    """A command that needs a work tree ran in a bare repository (git's `fatal: this operation
    must be run in a work tree`, status 128)."""

    exit_status = 128


class RetryableError(ThetaLikeError):
    """An attempt failed in a way worth retrying; `error` is what to raise when tries run out."""

    def __init__(self, error: RemoteError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class HttpStatusError(RemoteError):
    """A non-retryable HTTP status other than 401/403 (the caller decides what it means)."""

    def __init__(self, status: int, message: str, url: str) -> None:
        super().__init__(f"LFS server at {url} answered {status}: {message}")
        self.status = status
        self.message = message
        self.url = url


class MergeConflictError(ThetaLikeError):
    """A tensor cannot be merged: the merge stops with a conflict that names it."""


class MissingExtraError(ThetaLikeError):
    """A feature needs an optional dependency that is not installed; the message names the extra
    that installs it (`pip install 'git-theta-like[merge]'`)."""

    def __init__(self, message: str, extra: str, module: str) -> None:
        super().__init__(message)
        self.extra = extra
        self.module = module
