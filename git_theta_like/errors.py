"""Exceptions shared across the package. Each names what failed, for the user to read."""


class ThetaLikeError(Exception):
    """Base class: an error with a message meant for the user."""


class FormatError(ThetaLikeError):
    """A checkpoint could not be split into skeleton + tensors (it is then stored whole)."""


class UnsafePickleError(FormatError):
    """A pickle references something other than tensor rebuild functions; it is never executed."""


class ObjectMissingError(ThetaLikeError):
    """An object a manifest needs is not in the local store."""


class ObjectCorruptError(ThetaLikeError):
    """An object exists but its content does not match its hashes or cannot be decoded."""


class ManifestError(ThetaLikeError):
    """Text that should be a manifest is malformed."""
