"""Property-based tests of every parser of untrusted input: they either succeed exactly or raise
their own specific error, never anything else, never hang.

(The PyTorch zip and GGUF parsers have theirs in test_format_pytorch.py / test_format_gguf.py.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct

import numpy as np
import pytest
from fixtures import safetensors_bytes, small_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from git_theta_like import codecs, dtypes
from git_theta_like.codecs.container import split_object
from git_theta_like.errors import (
    FormatError,
    ManifestError,
    ObjectCorruptError,
    ObjectMissingError,
    ProtocolError,
)
from git_theta_like.formats import ByteReader, Tensor
from git_theta_like.formats.safetensors import SafetensorsFormat
from git_theta_like.gitio.pktline import PktReader
from git_theta_like.manifest import Manifest, ObjectRef, TensorEntry
from git_theta_like.store import LocalStore

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VALID = safetensors_bytes(small_model(seed=1))


def split_all(data: bytes) -> bytes:
    events = list(SafetensorsFormat().split(ByteReader(io.BytesIO(data))))
    return b"".join(bytes(e.data) for e in events)


@FUZZ
@given(st.data())
def test_safetensors_mutations(data: st.DataObject) -> None:
    buf = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    sample = bytes(buf[:cut])
    with contextlib.suppress(FormatError):
        assert split_all(sample) == sample


entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from([*dtypes.ITEMSIZE, "Q4", ""]),
        "shape": st.lists(st.integers(-2, 2**40), max_size=4),
        "data_offsets": st.lists(st.integers(-5, 2**62), min_size=0, max_size=3),
    }
)


@FUZZ
@given(st.dictionaries(st.text(max_size=8), entry, max_size=6), st.binary(max_size=256))
def test_safetensors_hostile_headers(header: dict, body: bytes) -> None:  # type: ignore[type-arg]
    h = json.dumps(header).encode()
    sample = struct.pack("<Q", len(h)) + h + body
    with contextlib.suppress(FormatError):
        assert split_all(sample) == sample


@FUZZ
@given(st.integers(0, 2**64 - 1), st.binary(max_size=64))
def test_safetensors_absurd_header_lengths(n: int, rest: bytes) -> None:
    sample = struct.pack("<Q", n) + b"{" + rest
    with contextlib.suppress(FormatError):
        assert split_all(sample) == sample


def _manifest_text() -> str:
    ref = ObjectRef("a" * 64, "b" * 64, 10, "xor", (("depth", "1"), ("base", "c" * 64)))
    tensors = [TensorEntry(f"t{i}", "F32", (2, 2), 8 + 16 * i, 16, ref) for i in range(3)]
    return Manifest("safetensors", 8 + 48, 8, ref, tensors).to_text()


@FUZZ
@given(st.data())
def test_manifest_mutations(data: st.DataObject) -> None:
    text = list(_manifest_text())
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(text) - 1))
        text[i] = data.draw(st.characters())
    sample = "".join(text)
    try:
        m = Manifest.from_text(sample)
    except ManifestError:
        return
    assert Manifest.from_text(m.to_text()).to_text() == m.to_text()


@FUZZ
@given(st.text(max_size=400))
def test_manifest_arbitrary_text(sample: str) -> None:
    with contextlib.suppress(ManifestError):
        Manifest.from_text("git-theta-like manifest v1 format=x size=0\n" + sample)


def _objects(tmp: LocalStore) -> list[tuple[str, str, bytes | None]]:
    """An exponent object (F32), a planes one (F16), a raw one, and xor/sparse/lowrank deltas on
    the first: (oid, raw hash, base)."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((32, 48)) * 0.05).astype(np.float32)
    raw = a.tobytes()
    h = hashlib.sha256(raw).hexdigest()
    out = []
    base_oid, _ = tmp.write_encoded(codecs.encode(raw, "F32", a.shape, h))
    out.append((base_oid, h, None))
    half = a.astype(np.float16).tobytes()
    half_h = hashlib.sha256(half).hexdigest()
    oid, _ = tmp.write_encoded(codecs.encode(half, "F16", a.shape, half_h))
    out.append((oid, half_h, None))
    noise = rng.bytes(3000)
    oid, _ = tmp.write_encoded(codecs.encode(noise, "U8", (3000,), hashlib.sha256(noise).hexdigest()))
    out.append((oid, hashlib.sha256(noise).hexdigest(), None))
    u, v = rng.standard_normal((32, 2)) * 0.1, rng.standard_normal((2, 48)) * 0.1
    for new in (a * 1.001, np.where(rng.random(a.shape) < 0.02, a + 1, a), a + u @ v):
        nb = new.astype(np.float32).tobytes()
        nh = hashlib.sha256(nb).hexdigest()
        enc = codecs.encode_delta(nb, raw, "F32", a.shape, nh, base_oid, 1)
        oid, _ = tmp.write_encoded(enc)
        out.append((oid, nh, raw))
    return out


@pytest.mark.slow
@FUZZ
@given(st.data())
def test_object_mutations(tmp_path_factory, data: st.DataObject) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path_factory.mktemp("fuzz") / "lfs")
    objs = _objects(store)
    oid, raw_hash, base = data.draw(st.sampled_from(objs))
    blob = bytearray(store.path(oid).read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(blob)))
    mutated = bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob)
    try:
        header, payload = split_object(mutated, "fuzzed")
        codecs.decode(header, payload, "fuzzed", base)
    except ObjectCorruptError:
        return
    # decoding may succeed on a mutation the codec cannot see (a flipped mantissa bit, or the
    # header's own hash field): the store's verification must then catch it
    fake = hashlib.sha256(mutated).hexdigest()
    p = store.path(fake)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(mutated)
    try:
        got = store.read_raw(fake, "fuzzed", raw_hash)
        assert hashlib.sha256(bytes(got)).hexdigest() == raw_hash
    except (ObjectCorruptError, ObjectMissingError):
        pass


@FUZZ
@given(st.binary(max_size=600))
def test_pktline_reader(data: bytes) -> None:
    r = PktReader(io.BytesIO(data))
    try:
        while True:
            r.read_text_list()
            c = r.content()
            buf = memoryview(bytearray(100))
            while c.readinto(buf):
                pass
    except (ProtocolError, EOFError):
        pass


def test_every_tensor_of_a_valid_file_is_found() -> None:
    events = list(SafetensorsFormat().split(ByteReader(io.BytesIO(VALID))))
    assert sum(isinstance(e, Tensor) for e in events) == 16
