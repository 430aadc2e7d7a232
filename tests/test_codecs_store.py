import hashlib

import numpy as np
import pytest

from git_theta_like import codecs
from git_theta_like.codecs import planes
from git_theta_like.errors import ObjectCorruptError, ObjectMissingError
from git_theta_like.store import LocalStore


def _enc(raw: bytes, dtype: str = "F32") -> codecs.Encoded:
    return codecs.encode(raw, dtype, (len(raw),), hashlib.sha256(raw).hexdigest())


@pytest.mark.parametrize("dtype", ["F64", "F32", "BF16", "F16", "I8", "BYTES"])
@pytest.mark.parametrize("n", [0, 1, 7, 1000, planes.CHUNK // 4 + 3])
def test_round_trip_any_length(dtype: str, n: int) -> None:
    from git_theta_like import dtypes

    rng = np.random.default_rng(n)
    k = dtypes.itemsize(dtype)
    raw = (rng.standard_normal(n) * 0.01).astype(np.float64).tobytes()[: n * k]
    enc = _enc(raw, dtype)
    payload = b"".join(bytes(p) for p in enc.parts)
    assert bytes(codecs.decode(enc.header, memoryview(payload))) == raw


def test_keyframes_compress_floats_and_raw_wins_on_noise() -> None:
    """F32 and BF16 keyframes are `exponent`, the other dtypes' `planes`; noise stays raw."""
    rng = np.random.default_rng(0)
    floats = (rng.standard_normal(1 << 20) * 0.02).astype(np.float32)
    enc = _enc(floats.tobytes())
    assert enc.header.codec == "exponent" and enc.payload_size < 0.9 * floats.nbytes
    bf16 = (floats.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    enc = _enc(bf16, "BF16")
    assert enc.header.codec == "exponent" and enc.payload_size < 0.8 * len(bf16)
    halves = floats.astype(np.float16).tobytes()
    enc = _enc(halves, "F16")
    assert enc.header.codec == "planes" and enc.payload_size < 0.95 * len(halves)
    noise = rng.bytes(1 << 20)
    assert _enc(noise, "U8").header.codec == "raw"


def test_store_write_read_verify(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "lfs")
    raw = np.arange(100000, dtype=np.float32).tobytes()
    oid, size = store.write_encoded(_enc(raw))
    path = store.path(oid)
    assert path.parent.parent.parent == tmp_path / "lfs" / "objects"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == oid and path.stat().st_size == size
    assert bytes(store.read_raw(oid)) == raw
    assert b"".join(store.iter_raw(oid)) == raw
    assert not list((tmp_path / "lfs" / "tmp").iterdir())  # no temp file left behind
    # writing the same content again is a no-op
    assert store.write_encoded(_enc(raw)) == (oid, size)


def test_corrupt_and_missing_objects_are_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "lfs")
    raw = np.arange(100000, dtype=np.float32).tobytes()
    oid, _ = store.write_encoded(_enc(raw))
    p = store.path(oid)
    data = bytearray(p.read_bytes())
    data[100] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ObjectCorruptError, match=f"tensor 'w'.*{oid}"):
        store.read_raw(oid, "tensor 'w'")
    with pytest.raises(ObjectCorruptError, match=oid):
        b"".join(store.iter_raw(oid, "tensor 'w'"))
    p.write_bytes(b"garbage")
    with pytest.raises(ObjectCorruptError, match="not a git-theta-like object|too short"):
        store.read_raw(oid)
    store.delete(oid)
    with pytest.raises(ObjectMissingError, match=f"tensor 'w'.*{oid}"):
        store.read_raw(oid, "tensor 'w'")


def test_objects_survive_git_lfs_prune_deleting_their_lfs_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "lfs")
    raw = np.arange(1000, dtype=np.float32).tobytes()
    oid, _ = store.write_encoded(_enc(raw))
    store.path(oid).unlink()  # what `git lfs prune` does to objects no LFS pointer references
    assert store.has(oid) and bytes(store.read_raw(oid)) == raw
    assert store.path(oid).is_file()  # the git-lfs path is back
