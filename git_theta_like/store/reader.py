"""The one verified, cached reader of raw tensor contents (diff, merge, the API and smudge's
callers use it): each object read once per session, every read checked against its raw hash,
deltas resolved against bases already in hand, missing objects downloaded through a fetch
callback (the store never imports the LFS client)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import ObjectMissingError, ThetaLikeError
from git_theta_like.store.local import LocalStore

# Downloads the given (oid, size) objects into the local store (the lfs room supplies it: the store
# itself never talks to a remote).
Fetch = Callable[[list[tuple[str, int]]], None]


class ObjectReader:
    """Reads and verifies raw tensor contents, each object once per `session`.

    A delta whose base is the other side of the comparison (the usual case: the new version is
    stored against the old one) is decoded against the raw bytes already in hand, so a changed
    tensor costs the reads of exactly the objects of its two versions' chains.
    """

    def __init__(self, store: LocalStore, sizes: dict[str, int] | None = None, fetch: Fetch | None = None):
        self.store = store
        self.sizes = sizes if sizes is not None else {}
        self.fetch = fetch
        self._cache: dict[str, tuple[Buffer, ObjectHeader]] = {}

    def clear(self) -> None:
        self._cache.clear()

    def ensure(self, items: Iterable[tuple[str, int, str]]) -> None:
        """Fetch, in one batch, the objects among items ((oid, size, what)) the store lacks."""
        missing: dict[str, tuple[int, str]] = {}
        for oid, size, what in items:
            if oid not in missing and not self.store.has(oid):
                missing[oid] = (size, what)
        if missing and self.fetch is not None:
            try:
                self.fetch(sorted((o, s) for o, (s, _) in missing.items()))
            except ThetaLikeError as e:
                named = ", ".join(f"{what} (object {oid})" for oid, (_, what) in list(missing.items())[:5])
                more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
                raise ObjectMissingError(
                    f"{named}{more}: not in the local store, and downloading failed: {e}"
                ) from None

    def raw(
        self,
        oid: str,
        what: str,
        expect_raw: str | None = None,
        expect_size: int | None = None,
        _depth: int = 0,
    ) -> tuple[Buffer, ObjectHeader]:
        """Raw bytes and header of an object, verified (sizes are checked before decoding, so a
        crafted header cannot make us allocate more than the tensor it claims to be)."""
        hit = self._cache.get(oid)
        if hit is not None:
            return hit
        if not self.store.has(oid):
            self.ensure([(oid, self.sizes.get(oid, 0), what)])
        data = self.store.read(oid, what)

        def base_of(header: ObjectHeader) -> Buffer:
            assert header.base is not None
            if header.base not in self.sizes:
                self.sizes[header.base] = int(header.params.get("base_size", 0))
            return self.raw(header.base, f"{what} (delta base)", None, header.size, _depth + 1)[0]

        raw, header = self.store.decode_verified(oid, data, what, expect_raw, expect_size, base_of, _depth)
        self._cache[oid] = (raw, header)
        return raw, header
