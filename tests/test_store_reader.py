"""The object reader (store/reader.py): what it keeps (all, or a budget in bytes, least recently
used out first), one decode per object among concurrent readers, verification of hits, deltas
resolved against bases in hand, and the LocalStore view a merge hands to clean."""

from __future__ import annotations

import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from git_theta_like import codecs
from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.errors import ObjectCorruptError
from git_theta_like.store import LocalStore
from git_theta_like.store.reader import CachedStore, ObjectReader

N = 1000  # bytes of each test tensor


def _raw(seed: int) -> bytes:
    return np.random.default_rng(seed).standard_normal(N // 4).astype(np.float32).tobytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _put(store: LocalStore, raw: bytes) -> str:
    return store.write_encoded(codecs.encode(raw, "F32", (N // 4,), _sha(raw)))[0]


def _objects(tmp_path: Path, n: int) -> tuple[LocalStore, list[str], list[bytes]]:
    store = LocalStore(tmp_path / "lfs", durable=False)
    raws = [_raw(i) for i in range(n)]
    return store, [_put(store, r) for r in raws], raws


def test_a_bounded_reader_evicts_the_least_recently_used(tmp_path: Path) -> None:
    store, (a, b, c), raws = _objects(tmp_path, 3)
    reader = ObjectReader(store, budget=2 * N + N // 2)  # room for two
    reader.raw(a, "a")
    reader.raw(b, "b")
    assert bytes(reader.raw(a, "a", _sha(raws[0]))[0]) == raws[0]  # a hit: a is now the newest
    assert store.reads == 2
    reader.raw(c, "c")
    assert reader.cached() == [a, c] and reader.held == 2 * N  # b, least recently used, left
    reader.raw(a, "a")
    assert store.reads == 3
    reader.raw(b, "b")  # read again
    assert store.reads == 4 and reader.cached() == [a, b]


def test_an_object_larger_than_the_budget_is_read_but_not_kept(tmp_path: Path) -> None:
    store, (a,), raws = _objects(tmp_path, 1)
    reader = ObjectReader(store, budget=N - 1)
    assert bytes(reader.raw(a, "a")[0]) == raws[0]
    assert reader.cached() == [] and reader.held == 0


def test_an_unbounded_reader_keeps_everything_until_cleared(tmp_path: Path) -> None:
    store, oids, raws = _objects(tmp_path, 5)
    reader = ObjectReader(store)
    for _ in range(3):
        for oid, raw in zip(oids, raws, strict=True):
            assert bytes(reader.raw(oid, "t", _sha(raw), N)[0]) == raw
    assert store.reads == 5 and reader.cached() == oids and reader.held == 5 * N
    reader.clear()
    assert reader.cached() == [] and reader.held == 0
    reader.raw(oids[0], "t")
    assert store.reads == 6


def test_concurrent_reads_of_one_object_decode_it_once(tmp_path: Path) -> None:
    store, (a,), raws = _objects(tmp_path, 1)
    reader = ObjectReader(store, budget=10 * N)
    first = threading.Event()
    decodes = []
    verified = store.decode_verified

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        decodes.append(1)
        first.set()
        time.sleep(0.3)  # the other readers arrive meanwhile and wait for this decode
        return verified(*args, **kwargs)

    store.decode_verified = slow  # type: ignore[method-assign]
    with ThreadPoolExecutor(6) as pool:
        lead = pool.submit(reader.raw, a, "a", _sha(raws[0]), N)
        assert first.wait(10)
        rest = [pool.submit(reader.raw, a, "a", _sha(raws[0]), N) for _ in range(5)]
        results = [f.result(10)[0] for f in (lead, *rest)]
    assert len(decodes) == 1 and store.reads == 1
    assert all(r is results[0] for r in results)  # one shared buffer


def test_a_hit_the_manifest_disagrees_with_is_an_error(tmp_path: Path) -> None:
    store, (a,), raws = _objects(tmp_path, 1)
    reader = ObjectReader(store, budget=10 * N)
    reader.raw(a, "a")  # kept, read without expectations
    with pytest.raises(ObjectCorruptError, match=f"tensor 'w': object {a} holds content"):
        reader.raw(a, "tensor 'w'", _sha(b"something else"))
    with pytest.raises(ObjectCorruptError, match=f"object {a} holds {N} bytes, the manifest expects 8"):
        reader.raw(a, "tensor 'w'", _sha(raws[0]), 8)
    assert bytes(reader.raw(a, "tensor 'w'", _sha(raws[0]), N)[0]) == raws[0]
    assert store.reads == 1


def test_a_delta_is_resolved_against_the_base_in_hand(tmp_path: Path) -> None:
    store, (base,), raws = _objects(tmp_path, 1)
    new = bytearray(raws[0])
    new[:4] = b"\0\0\0\0"
    enc = codecs.encode_delta(new, raws[0], "F32", (N // 4,), _sha(bytes(new)), base, 1)
    assert enc.header.base == base
    delta, _ = store.write_encoded(enc)
    reader = ObjectReader(store)
    reader.raw(base, "old", _sha(raws[0]), N)
    got, header = reader.raw(delta, "new", _sha(bytes(new)), N)
    assert bytes(got) == bytes(new) and header.base == base
    assert store.reads == 2  # the base once


def test_a_delta_chain_that_loops_is_an_error_not_a_hang(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lfs", durable=False)
    x, y = "a" * 64, "b" * 64
    for oid, base in ((x, y), (y, x)):
        header = ObjectHeader("xor", "F32", (1,), 4, _sha(b"1234"), {}, base)
        p = store.path(oid)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"junk" + header.trailer())
    reader = ObjectReader(store, budget=10 * N)
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(reader.raw, x, "tensor 'w'")
        with pytest.raises(ObjectCorruptError, match="delta chain leads back to itself"):
            fut.result(30)


def test_cached_store_reads_through_the_reader(tmp_path: Path) -> None:
    store, (a, b), raws = _objects(tmp_path, 2)
    cached = CachedStore(store, budget=N)
    for _ in range(2):
        assert bytes(cached.read_raw(a, "a", _sha(raws[0]), 0, N)) == raws[0]
    assert store.reads == 1 and cached.reader.cached() == [a]
    cached.read_raw(b, "b")
    assert cached.reader.cached() == [b] and store.reads == 2
    with pytest.raises(ObjectCorruptError):
        cached.read_raw(b, "b", _sha(raws[0]))
    assert cached.lock is store.lock


def test_forget_drops_objects_and_their_chains_and_drop_after_counts_reads(tmp_path: Path) -> None:
    """What a merge has read for the last time leaves the cache: `forget` takes the objects and
    the delta bases they were decoded from, except those kept; `drop_after(oid, n)` lets an
    object go on its n-th next read (clean's read of ours as the delta parent)."""
    store, (k1, k2), raws = _objects(tmp_path, 2)
    new = np.frombuffer(raws[0], dtype=np.uint32) ^ np.uint32(1)
    delta = codecs.encode_delta(new.tobytes(), raws[0], "F32", (N // 4,), _sha(new.tobytes()), k1, 1)
    assert delta.header.base == k1
    d = store.write_encoded(delta)[0]
    reader = ObjectReader(store, budget=None)
    assert bytes(reader.raw(d, "d")[0]) == new.tobytes()
    reader.raw(k2, "k2")
    assert set(reader.cached()) == {k1, k2, d} and reader.held == 3 * N
    reader.forget([d], keep={d})  # d stays, its base goes
    assert set(reader.cached()) == {k2, d} and reader.held == 2 * N
    reader.forget([d, k2])
    assert reader.cached() == [] and reader.held == 0
    reader.raw(k1, "k1")
    reader.drop_after(k1, 2)
    reader.raw(k1, "k1")
    assert reader.cached() == [k1]
    reader.raw(k1, "k1")  # the last read: served, then dropped
    assert reader.cached() == [] and reader.held == 0 and store.reads == 4


def test_a_large_object_is_mapped_and_decodes_the_same_after_its_pages_are_dropped(tmp_path: Path) -> None:
    """LocalStore.read maps objects of MAP_MIN bytes and more (a read-only view); the decoders
    give each decoded chunk's pages back (drop_read_pages) and a second decode of the same
    mapping, its pages read again from the page cache, gives the same verified bytes."""
    from git_theta_like.codecs.container import split_object
    from git_theta_like.store import local

    store = LocalStore(tmp_path / "lfs", durable=False)
    rng = np.random.default_rng(5)
    raw = (rng.standard_normal(3 * local.MAP_MIN // 4) * 0.02).astype(np.float32).tobytes()
    oid = store.write_encoded(codecs.encode(raw, "F32", (len(raw) // 4,), _sha(raw)))[0]
    data = store.read(oid)
    assert isinstance(data, memoryview) and data.readonly
    header, payload = split_object(data, oid)
    for _ in range(2):
        assert bytes(codecs.decode(header, payload, oid)) == raw
    assert bytes(store.read_raw(oid, "w", _sha(raw))) == raw
    small = _raw(1)
    assert isinstance(store.read(_put(store, small)), bytes)
