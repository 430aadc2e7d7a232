"""How a merge streams its result into clean (merge/execute.py): merged tensors computed into
buffers of their own are handed over uncopied, everything else is read as before; a merged
tensor is computed into theirs's buffer only when nothing else holds it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from git_theta_like.formats import ByteReader
from git_theta_like.manifest import ObjectRef, TensorEntry
from git_theta_like.merge import strategies
from git_theta_like.merge.config import Choice
from git_theta_like.merge.execute import IterSource, _Producer
from git_theta_like.merge.plan import Job, Slot
from git_theta_like.store import LocalStore
from git_theta_like.store.reader import CachedStore


def test_whole_buffers_are_handed_to_clean_uncopied_and_the_rest_is_read() -> None:
    header = b"HEAD"
    merged = bytearray(b"m" * 1000)  # a merged tensor (_in_blocks: a bytearray of its own)
    as_view = bytearray(b"v" * 500)
    shared = b"s" * 300  # bytes (not a buffer that can be handed over)
    part = bytearray(b"p" * 200)
    reader = ByteReader(IterSource(iter([header, merged, memoryview(as_view), shared, part])))
    assert bytes(reader.read_exact(4)) == header
    got = reader.read_exact(1000)
    assert got is merged and reader.position == 1004
    assert reader.read_exact(500) is as_view
    s = reader.read_exact(300)
    assert bytes(s) == shared and s is not shared
    assert bytes(reader.read_exact(50)) == b"p" * 50  # a part of a buffer: copied
    assert bytes(reader.read_exact(150)) == b"p" * 150
    assert reader.at_eof() and reader.position == 2004


def test_a_buffer_of_another_size_is_read_through_readinto() -> None:
    a, b = bytearray(b"a" * 10), bytearray(b"b" * 10)
    reader = ByteReader(IterSource(iter([a, b])))
    got = reader.read_exact(15)
    assert bytes(got) == b"a" * 10 + b"b" * 5
    assert bytes(reader.read_exact(5)) == b"b" * 5
    assert reader.at_eof()


# ------------------------------------------------------------------ computing into theirs

N = 4096  # bytes of each test tensor


def _store(tmp_path: Path, names: list[str]) -> tuple[CachedStore, dict[str, str], dict[str, bytes]]:
    """A merge's store (a CachedStore that keeps everything) with one object per name."""
    from git_theta_like import codecs

    store = CachedStore(LocalStore(tmp_path / "lfs", durable=False), None)
    oids, raws = {}, {}
    for i, name in enumerate(names):
        raw = (np.arange(N // 4) % 4 + i).astype(np.float32).tobytes()  # compressible: decoded
        # into a buffer of its own (a raw object's bytes are a view of what was read)
        ref = codecs.encode(raw, "F32", (N // 4,), hashlib.sha256(raw).hexdigest())
        oids[name], raws[name] = store.write_encoded(ref)[0], raw
    return store, oids, raws


def _slots(pairs: list[tuple[str, str]], oids: dict[str, str], raws: dict[str, bytes]) -> list[Slot]:
    """Linear merge slots of (ours, theirs) names."""
    choice = Choice(strategies.make_strategy("linear"), "test")

    def entry(name: str, of: str) -> TensorEntry:
        ref = ObjectRef(hashlib.sha256(raws[of]).hexdigest(), oids[of], N, "raw")
        return TensorEntry(name, "F32", (N // 4,), 0, N, ref)

    out = []
    for i, (o, t) in enumerate(pairs):
        name = f"t{i}"
        job = Job(name, "F32", (N // 4,), choice, None, entry(name, o), entry(name, t))
        out.append(Slot(name, "F32", (N // 4,), "merged", job=job))
    return out


def _produce(slots: list[Slot], store: CachedStore) -> list[tuple[bool, bytes]]:
    """Per slot: whether the compute was handed theirs's buffer to write into, and the result
    (ours XOR theirs, written into that buffer when it was handed one)."""
    seen: list[bool] = []

    def compute(job: Job, data: list[Any], into: bytearray | None) -> bytearray:
        seen.append(into is not None and into is data[2])
        out = into if into is not None else bytearray(N)
        out[:] = _xor(bytes(data[1]), bytes(data[2]))
        return out

    got = [bytes(r) for _, r in _Producer(slots, store, compute)]
    return list(zip(seen, got, strict=True))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def test_a_merged_tensor_is_computed_into_theirs_when_nothing_else_holds_it(tmp_path: Path) -> None:
    store, oids, raws = _store(tmp_path, ["o", "t", "t2", "t3"])
    # t0's theirs is read by it alone: handed over. t1's theirs is t2's ours too: not handed
    # over, and t2 reads its bytes unchanged. t2's theirs: handed over. t3's theirs was t0's:
    # read once more, and whole
    got = _produce(_slots([("o", "t"), ("o", "t2"), ("t2", "t3"), ("o", "t")], oids, raws), store)
    assert [g[0] for g in got] == [False, False, True, True]
    assert [g[1] for g in got] == [
        _xor(raws["o"], raws["t"]),
        _xor(raws["o"], raws["t2"]),
        _xor(raws["t2"], raws["t3"]),
        _xor(raws["o"], raws["t"]),
    ]
    for name in raws:  # what the store (and its cache) gives back is untouched
        assert bytes(store.read_raw(oids[name])) == raws[name]


def test_a_buffer_someone_else_holds_is_never_written_into(tmp_path: Path) -> None:
    store, oids, raws = _store(tmp_path, ["o", "t"])
    held = store.read_raw(oids["t"])  # as a read thread decoding against it would hold it
    got = _produce(_slots([("o", "t")], oids, raws), store)
    assert got == [(False, _xor(raws["o"], raws["t"]))]
    assert bytes(held) == raws["t"]
    del held
    # ours and theirs the same object (one buffer, twice in the inputs): not handed over either
    assert _produce(_slots([("t", "t")], oids, raws), store) == [(False, bytes(N))]
