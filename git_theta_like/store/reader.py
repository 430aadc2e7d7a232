"""The one verified, cached reader of raw tensor contents: diff reads through it, and a merge
(its own reads and those of the clean Engine it drives, through `CachedStore`). Smudge and the
API read each object once and go to `LocalStore.read_raw` directly, with the same checks.

`ObjectReader` keeps the decoded objects it read (raw bytes and header) for reuse: all of them
(`budget=None`: a diff keeps the objects of one changed tensor), or up to a budget in bytes, the
least recently used leaving first (a merge). Every read is checked against its raw hash, a cache
hit too (against the verified header kept with it); sizes are checked before decoding. Deltas
are resolved against bases already in hand, and concurrent reads of one object decode it once
(threads share the reader). Missing objects are downloaded through a fetch callback (the store
never imports the LFS client). Cached buffers are shared: readers must not write to them.

`CachedStore` is a `LocalStore` whose reads of raw content (`read_raw`) go through such a reader,
for code written against the store (the clean Engine, the merge's producer).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Container, Iterable

from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.concurrency import SingleFlight
from git_theta_like.dtypes import Buffer
from git_theta_like.errors import ObjectCorruptError, ObjectMissingError, ThetaLikeError, WaitCycleError
from git_theta_like.store.local import LocalStore, check_expected

# Downloads the given (oid, size) objects into the local store (the lfs room supplies it: the store
# itself never talks to a remote).
Fetch = Callable[[list[tuple[str, int]]], None]
Decoded = tuple[bytearray | memoryview, ObjectHeader]


class ObjectReader:
    """Reads and verifies raw tensor contents, keeping what it decoded (see the module).

    A delta whose base is the other side of a comparison (the usual case: the new version is
    stored against the old one) is decoded against the raw bytes already in hand, so a changed
    tensor costs the reads of exactly the objects of its two versions' chains. Safe to share
    between threads.
    """

    def __init__(
        self,
        store: LocalStore,
        sizes: dict[str, int] | None = None,
        fetch: Fetch | None = None,
        *,
        budget: int | None = None,
    ) -> None:
        self.store = store
        self.sizes = sizes if sizes is not None else {}  # oid -> stored size, for fetch
        self.fetch = fetch
        self.budget = budget  # bytes of decoded objects kept; None: all of them
        self.held = 0  # bytes of decoded objects kept now
        self._cache: collections.OrderedDict[str, Decoded] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._decoding: SingleFlight[str, Decoded] = SingleFlight()
        self._last_reads: dict[str, int] = {}  # oid -> reads left before it leaves the cache

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()
            self.held = 0

    def forget(self, oids: Iterable[str], keep: Container[str] = ()) -> None:
        """Drop the given objects from the cache, and the delta bases they were decoded from
        (their chains, as far as the cache holds them), except those in keep: what a merge has
        read for the last time (its buffers are freed once their readers let go of them)."""
        with self._lock:
            todo = list(oids)
            while todo:
                oid = todo.pop()
                found = self._cache.get(oid)
                if found is None:
                    continue
                if found[1].base:
                    todo.append(found[1].base)
                if oid not in keep:
                    del self._cache[oid]
                    self.held -= memoryview(found[0]).nbytes

    def drop_after(self, oid: str, reads: int) -> None:
        """Drop oid from the cache after `reads` more reads of it (a merge: clean's read of ours
        as the parent of the merged tensor's delta is its last)."""
        with self._lock:
            self._last_reads[oid] = reads

    def cached(self) -> list[str]:
        """The objects kept now, least recently used first."""
        with self._lock:
            return list(self._cache)

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
    ) -> Decoded:
        """Raw bytes and header of an object, verified (sizes are checked before decoding, so a
        crafted header cannot make us allocate more than the tensor it claims to be)."""
        with self._lock:
            found = self._cache.get(oid)
            if found is not None:
                self._cache.move_to_end(oid)
                left = self._last_reads.pop(oid, None)
                if left is not None and left > 1:
                    self._last_reads[oid] = left - 1
                elif left is not None:
                    del self._cache[oid]
                    self.held -= memoryview(found[0]).nbytes
        if found is None:
            try:
                found = self._decoding.run(
                    oid, lambda: self._decode(oid, what, expect_raw, expect_size, _depth)
                )
            except WaitCycleError:
                raise ObjectCorruptError(
                    f"{what}: object {oid}: its delta chain leads back to itself"
                ) from None
        # a hit, or another thread's decode: its content was verified against its header (the
        # sha256 of the bytes kept is header.raw); check the header against this caller's manifest
        try:
            check_expected(found[1], oid, expect_raw, expect_size)
        except ObjectCorruptError as e:
            raise ObjectCorruptError(f"{what}: {e}") from None
        return found

    def _decode(
        self, oid: str, what: str, expect_raw: str | None, expect_size: int | None, depth: int
    ) -> Decoded:
        """Read, decode and verify an object (its delta base through `raw`, so from the cache
        when it is there), and keep it when it fits the budget."""
        if self.fetch is not None and not self.store.has(oid):
            self.ensure([(oid, self.sizes.get(oid, 0), what)])
        data = self.store.read(oid, what)

        def base_of(header: ObjectHeader) -> Buffer:
            assert header.base is not None
            if header.base not in self.sizes:
                self.sizes[header.base] = int(header.params.get("base_size", 0))
            return self.raw(header.base, f"{what} (delta base)", None, header.size, depth + 1)[0]

        found = self.store.decode_verified(oid, data, what, expect_raw, expect_size, base_of, depth)
        self._keep(oid, found)
        return found

    def _keep(self, oid: str, found: Decoded) -> None:
        n = memoryview(found[0]).nbytes
        if self.budget is not None and n > self.budget:
            return
        with self._lock:
            old = self._cache.pop(oid, None)
            if old is not None:
                self.held -= memoryview(old[0]).nbytes
            self._cache[oid] = found
            self.held += n
            while self.budget is not None and self.held > self.budget:
                _, gone = self._cache.popitem(last=False)
                self.held -= memoryview(gone[0]).nbytes


class CachedStore(LocalStore):
    """The store, its `read_raw` (`read_decoded`) going through an ObjectReader that keeps up to
    `budget` bytes of decoded objects (None: all), for code written against LocalStore.

    A merge uses one: it reads the base, ours and theirs of each tensor; ours and theirs are
    usually deltas against the base (decoded through the reader, so the base once), and clean
    reads ours once more as the parent of the merged tensor's delta. Objects are read through
    `store` (its counters count them); writes go to the same directory, under the same lock.
    """

    def __init__(self, store: LocalStore, budget: int | None) -> None:
        super().__init__(store.root, durable=store.durable)
        self.lock = store.lock  # one lock state for the store's writers, gc's view of them
        self.reader = ObjectReader(store, budget=budget)

    def read_decoded(
        self, oid: str, what: str, expect_raw: str | None, expect_size: int | None, depth: int = 0
    ) -> Decoded:
        return self.reader.raw(oid, what, expect_raw, expect_size, depth)
