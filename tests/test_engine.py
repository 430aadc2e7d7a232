"""Clean and smudge through the Engine directly (no git): exactness, dedup, fallbacks."""

import io
from pathlib import Path

import numpy as np
import pytest
from fixtures import every_dtype_file, safetensors_bytes, small_model

from git_theta_like.filters.engine import Engine
from git_theta_like.formats import ByteReader
from git_theta_like.manifest import Manifest
from git_theta_like.store import LocalStore


@pytest.fixture
def engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    warnings: list[str] = []
    with Engine(LocalStore(tmp_path / "lfs"), workers=2, inflight_bytes=1 << 16, warn=warnings.append) as e:
        e.warnings = warnings  # type: ignore[attr-defined]
        yield e


def clean(engine: Engine, data: bytes, previous: Manifest | None = None) -> Manifest:
    return Manifest.from_bytes(engine.clean(ByteReader(io.BytesIO(data)), previous, "f"))


def smudge(engine: Engine, m: Manifest) -> bytes:
    out = io.BytesIO()
    engine.smudge(m, out.write)
    return out.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        every_dtype_file(),
        safetensors_bytes(small_model(scale=4), gap=5, trailing=b"xyz"),
        b"not a checkpoint at all\n" * 1000,
    ],
    ids=["every-dtype", "model", "text"],
)
def test_clean_smudge_exact(engine: Engine, data: bytes) -> None:
    m = clean(engine, data)
    assert m.size == len(data)
    assert smudge(engine, m) == data


def test_empty_file_cleans_to_the_empty_blob(engine: Engine) -> None:
    """git never smudges the empty blob, so an empty file must be one (not a manifest)."""
    assert engine.clean(ByteReader(io.BytesIO(b"")), None, "f") == b""
    assert engine.store.writes == 0


def _pointer(data: bytes) -> bytes:
    import hashlib

    oid = hashlib.sha256(data).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n".encode()


def test_clean_over_a_staged_git_lfs_pointer(engine: Engine) -> None:
    """Content that is the staged pointer's object gives the pointer back, byte for byte; other
    content (even of the same size) gives a manifest; a pointer being cleaned is kept."""
    data = safetensors_bytes(small_model())
    ptr = _pointer(data)
    assert engine.clean(ByteReader(io.BytesIO(data)), None, "f", lfs_pointer=ptr) == ptr
    changed = bytearray(data)
    changed[-1] ^= 1
    out = engine.clean(ByteReader(io.BytesIO(bytes(changed))), None, "f", lfs_pointer=ptr)
    assert smudge(engine, Manifest.from_bytes(out)) == bytes(changed)
    assert engine.clean(ByteReader(io.BytesIO(ptr)), None, "f") == ptr
    assert engine.clean(ByteReader(io.BytesIO(ptr)), None, "f", lfs_pointer=_pointer(b"other")) == ptr


def test_identical_tensors_are_one_object(engine: Engine) -> None:
    zeros = np.zeros(1000, np.float32).tobytes()
    data = safetensors_bytes({"a": ("F32", (1000,), zeros), "b": ("F32", (1000,), zeros)})
    m = clean(engine, data)
    assert m.tensors[0].obj == m.tensors[1].obj
    assert engine.store.writes == 2  # one tensor object + the skeleton


def test_reclean_reuses_previous_entries(engine: Engine) -> None:
    data = safetensors_bytes(small_model())
    first = clean(engine, data)
    writes = engine.store.writes
    again = clean(engine, data, previous=first)
    assert again.to_text() == first.to_text()
    assert engine.store.writes == writes


def test_truncated_checkpoint_is_stored_whole_with_warning(engine: Engine) -> None:
    data = safetensors_bytes(small_model(scale=4))
    cut = data[: len(data) - 1000]
    m = clean(engine, cut)
    assert m.format == "opaque" and not m.tensors
    assert any("stored whole" in w and "ends inside" in w for w in engine.warnings)  # type: ignore[attr-defined]
    assert smudge(engine, m) == cut


def test_large_opaque_file_streams(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    data = rng.bytes(20 * 1024 * 1024 + 17)
    m = clean(engine, data)
    assert m.format == "opaque" and m.size == len(data)
    assert smudge(engine, m) == data
