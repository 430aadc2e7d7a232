"""The `exponent` keyframe codec: bit-exact for every float dtype and bit pattern, every size and
chunk boundary; hostile payloads refused with ObjectCorruptError before anything large is
allocated; `planes` objects decode as before."""

from __future__ import annotations

import hashlib
import io
import struct

import numpy as np
import pytest
import zstandard
from fixtures import tensor_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from git_theta_like import codecs, dtypes
from git_theta_like.codecs import exponent, planes, registry
from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.errors import ObjectCorruptError
from git_theta_like.store import LocalStore

FLOATS = ["F64", "F32", "F16", "BF16"]


def _obj(raw: bytes, dtype: str) -> tuple[ObjectHeader, bytes]:
    """The exponent object of raw (encoded even where raw would be smaller)."""
    params, chunks = exponent.encode(memoryview(raw), dtype)
    h = ObjectHeader(exponent.NAME, dtype, (len(raw) // dtypes.itemsize(dtype),), len(raw), _sha(raw), params)
    return h, b"".join(chunks)


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _round_trip(raw: bytes, dtype: str) -> bytes:
    header, payload = _obj(raw, dtype)
    whole = bytes(codecs.decode(header, memoryview(payload)))
    streamed = b"".join(codecs.iter_decode(header, io.BytesIO(payload).read))
    assert whole == raw and streamed == raw
    return payload


def _weights(dtype: str, n: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    if dtype == "BF16":
        bits = (rng.standard_normal(n) * 0.02).astype(np.float32).view(np.uint32)
        return (bits >> 16).astype(np.uint16).tobytes()
    return tensor_bytes(rng, dtype, (n,))  # with NaN, -0.0, inf, -inf and a subnormal first


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, 1001])
def test_round_trip_small_and_odd_sizes(dtype: str, n: int) -> None:
    _round_trip(_weights(dtype, n, n), dtype)


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_round_trip_across_chunk_boundaries(dtype: str, delta: int) -> None:
    k = dtypes.itemsize(dtype)
    n = planes.CHUNK // k + delta
    raw = _weights(dtype, n)
    payload = _round_trip(raw, dtype)
    header, _ = _obj(raw, dtype)
    assert header.params["chunk"] == min(planes.CHUNK, n * k) and len(payload) < 0.9 * n * k


@pytest.mark.parametrize("dtype", ["F16", "BF16"])
def test_every_16_bit_pattern(dtype: str) -> None:
    every = np.arange(1 << 16, dtype=np.uint16)
    _round_trip(every.tobytes(), dtype)
    _round_trip(every[::-1].tobytes(), dtype)
    _round_trip(np.random.default_rng(1).permutation(every).tobytes(), dtype)


@pytest.mark.parametrize("dtype", ["F32", "F64"])
def test_special_bit_patterns(dtype: str) -> None:
    u = np.uint32 if dtype == "F32" else np.uint64
    k = dtypes.itemsize(dtype)
    top = [0x7FC00001, 0xFFFFFFFF, 0x7F800001, 0xFF800000, 0x80000000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF]
    specials = np.array([v << (32 * (k // 4 - 1)) | (v if k == 8 else 0) for v in top], dtype=u)
    rng = np.random.default_rng(2)
    randoms = rng.integers(0, np.iinfo(u).max, 5000, dtype=u, endpoint=True)
    _round_trip(np.concatenate([specials, randoms, specials]).tobytes(), dtype)


@pytest.mark.parametrize("dtype", ["F32", "BF16"])
def test_escapes_and_exponent_windows_that_wrap(dtype: str) -> None:
    rng = np.random.default_rng(3)
    n = 20000
    for exps in (
        rng.integers(0, 256, n),
        rng.integers(0, 8, n),
        255 - rng.integers(0, 8, n),
        (rng.integers(-4, 4, n)) % 256,
    ):
        mant = rng.integers(0, 1 << 23, n)
        sign = rng.integers(0, 2, n)
        f32 = ((sign << 31) | (exps << 23) | mant).astype(np.uint32)
        raw = f32.tobytes() if dtype == "F32" else (f32 >> 16).astype(np.uint16).tobytes()
        _round_trip(raw, dtype)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FLOATS), st.binary(max_size=4096), st.integers(0, 255))
def test_random_bytes_round_trip(dtype: str, data: bytes, fill: int) -> None:
    k = dtypes.itemsize(dtype)
    # mostly one exponent byte (pairs mode) with random bytes mixed in (escapes)
    raw = (data + bytes([fill]) * 200 + data)[: (len(data) * 2 + 200) // k * k]
    if raw:
        _round_trip(raw, dtype)


def test_pairs_mode_is_chosen_and_beats_planes() -> None:
    for dtype in ("F32", "BF16"):
        raw = _weights(dtype, 1 << 20)
        header, payload = _obj(raw, dtype)
        assert payload[0] == exponent.PAIRS  # the exponent plane of the first chunk
        _, pchunks = planes.encode(memoryview(raw), dtypes.itemsize(dtype))
        assert len(payload) < (0.995 if dtype == "F32" else 0.98) * sum(len(c) for c in pchunks)


def test_encode_keyframe_only_for_floats_it_shrinks() -> None:
    h = "0" * 64
    assert exponent.encode_keyframe(b"", "F32", (0,), h) is None
    assert exponent.encode_keyframe(np.arange(100, dtype=np.int32).tobytes(), "I32", (100,), h) is None
    assert exponent.encode_keyframe(b"\x00" * 4001, "BYTES", (4001,), h) is None
    assert exponent.encode_keyframe(b"\x00" * 4002, "F32", (1000,), h) is None  # not whole elements
    noise = np.random.default_rng(4).bytes(1 << 16)
    assert exponent.encode_keyframe(noise, "F32", (1 << 14,), h) is None  # raw is smaller
    raw = _weights("F32", 10000)
    enc = exponent.encode_keyframe(raw, "F32", (100, 100), _sha(raw))
    assert enc is not None and enc.header.codec == "exponent" and enc.header.shape == (100, 100)
    assert enc.payload_size < 0.9 * len(raw)


def test_empty_object_decodes() -> None:
    header = ObjectHeader(exponent.NAME, "F32", (0,), 0, _sha(b""), {"chunk": planes.CHUNK, "width": 4})
    assert bytes(codecs.decode(header, memoryview(b""))) == b""
    assert list(codecs.iter_decode(header, io.BytesIO(b"").read)) == []


def test_store_writes_verifies_and_streams_exponent_objects(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = LocalStore(tmp_path / "lfs")
    raw = _weights("F32", 300000)
    enc = exponent.encode_keyframe(raw, "F32", (300000,), _sha(raw))
    assert enc is not None
    oid, _ = store.write_encoded(enc)
    assert bytes(store.read_raw(oid)) == raw
    assert b"".join(store.iter_raw(oid)) == raw


def test_planes_objects_still_decode() -> None:
    # a planes object as today's writer lays it out, by hand: 2 F32 elements, 4 stored planes
    raw = np.array([1.5, -0.0], dtype=np.float32).tobytes()
    grid = np.frombuffer(raw, np.uint8).reshape(2, 4)
    payload = b"".join(struct.pack("<BI", 0, 2) + grid[:, i].tobytes() for i in range(4))
    header = ObjectHeader("planes", "F32", (2,), 8, _sha(raw), {"chunk": planes.CHUNK, "width": 4})
    assert bytes(codecs.decode(header, memoryview(payload))) == raw
    # and what planes encodes (zstd planes) decodes through the registry unchanged
    w = _weights("F32", 100000)
    params, chunks = planes.encode(memoryview(w), 4)
    h = ObjectHeader("planes", "F32", (100000,), len(w), _sha(w), params)
    assert bytes(codecs.decode(h, memoryview(b"".join(chunks)))) == w
    assert registry.CODECS["planes"] is planes and registry.CODECS["exponent"] is exponent


# ------------------------------------------------------------------ hostile payloads


def _refused(header: ObjectHeader, payload: bytes, match: str | None = None) -> None:
    with pytest.raises(ObjectCorruptError, match=match):
        codecs.decode(header, memoryview(payload), "evil")
    with pytest.raises(ObjectCorruptError, match=match):
        b"".join(codecs.iter_decode(header, io.BytesIO(payload).read, "evil"))


def _with(header: ObjectHeader, **changes: object) -> ObjectHeader:
    d = {**header.__dict__, **changes}
    return ObjectHeader(**d)  # type: ignore[arg-type]


def test_size_lies_and_bad_parameters_are_refused() -> None:
    header, payload = _obj(_weights("F32", 5000), "F32")
    with pytest.raises(ObjectCorruptError, match="more than its"):
        codecs.decode(_with(header, size=len(payload) * exponent.MAX_RATIO + 4), memoryview(payload), "evil")
    for params in (
        {"chunk": planes.CHUNK, "width": 3},
        {"chunk": planes.CHUNK, "width": 1},
        {"chunk": planes.MAX_CHUNK + 4, "width": 4},
        {"chunk": planes.CHUNK + 2, "width": 4},
        {"chunk": 0, "width": 4},
        {"width": 4},
    ):
        _refused(_with(header, params=params), payload, "bad exponent parameters")
    _refused(_with(header, size=header.size - 2), payload, "whole 4-byte elements")
    _refused(_with(header, size=header.size + 4), payload)  # more than the planes hold


def test_truncated_and_padded_payloads_are_refused() -> None:
    header, payload = _obj(_weights("F32", 5000), "F32")
    for cut in (0, 1, 4, 5, 6, len(payload) // 2, len(payload) - 1):
        _refused(header, payload[:cut])
    with pytest.raises(ObjectCorruptError, match="unexpected bytes"):
        codecs.decode(header, memoryview(payload + b"\x00"), "evil")


def _plane(mode: int, body: bytes) -> bytes:
    return struct.pack("<BI", mode, len(body)) + body


def _bf16_object(n: int, exp_record: bytes, sm_record: bytes | None = None) -> tuple[ObjectHeader, bytes]:
    sm = sm_record if sm_record is not None else _plane(exponent.STORED, bytes(n))
    h = ObjectHeader(exponent.NAME, "BF16", (n,), 2 * n, "0" * 64, {"chunk": planes.CHUNK, "width": 2})
    return h, exp_record + sm


def test_hostile_plane_records_are_refused() -> None:
    n = 1000
    cctx = zstandard.ZstdCompressor()
    # a well-formed pairs plane decodes (the reference for the lies below)
    sym = bytes([0x12]) * (n // 2)
    good = _plane(exponent.PAIRS, bytes([100]) + _plane(exponent.ZSTD, cctx.compress(sym)) + _plane(0, b""))
    h, p = _bf16_object(n, good)
    out = np.frombuffer(bytes(codecs.decode(h, memoryview(p))), np.uint16)
    assert set((out >> 7).tolist()) == {101, 102}
    cases = {
        "unknown plane mode 7": _plane(7, bytes(n)),
        "stored plane has 999": _plane(exponent.STORED, bytes(n - 1)),
        "a plane of 1001 bytes": _plane(exponent.STORED, bytes(n + 1)),
        "zstd frame declares": _plane(exponent.ZSTD, cctx.compress(bytes(n + 1))),
        # a frame that claims a terabyte: refused from its header, nothing allocated
        "declares 1099511627776": _plane(
            exponent.ZSTD,
            zstandard.ZstdCompressor().compress(b"\x00" * 16)[:4] + b"\xe0" + (1 << 40).to_bytes(8, "little"),
        ),
        # pairs whose symbols say 2 escapes but whose escape stream has 3 (or none)
        "stored plane has 3 bytes, expected 2": _plane(
            exponent.PAIRS, bytes([0]) + _plane(0, b"\xff" + bytes(n // 2 - 1)) + _plane(0, b"abc")
        ),
        "zstd frame declares 0 bytes, expected 2": _plane(
            exponent.PAIRS,
            bytes([0]) + _plane(0, b"\xff" + bytes(n // 2 - 1)) + _plane(1, cctx.compress(b"")),
        ),
        "symbols": _plane(exponent.PAIRS, bytes([0]) + _plane(0, bytes(n // 2 + 1)) + _plane(0, b"")),
        "pairs plane has trailing bytes": _plane(
            exponent.PAIRS, bytes([0]) + _plane(0, bytes(n // 2)) + _plane(0, b"") + b"x"
        ),
        "pairs plane has no base": _plane(exponent.PAIRS, b""),
        "ends inside a plane header": _plane(exponent.PAIRS, bytes([0]) + b"\x00\x01"),
    }
    for match, record in cases.items():
        h, p = _bf16_object(n, record)
        if match == "symbols":
            match = "expected 500"
        _refused(h, p, match)


def test_bit_flips_give_an_error_or_bytes_never_a_crash() -> None:
    raw = _weights("BF16", 50000)
    header, payload = _obj(raw, "BF16")
    rng = np.random.default_rng(5)
    for _ in range(300):
        bad = bytearray(payload)
        i = int(rng.integers(0, len(bad)))
        bad[i] ^= 1 << int(rng.integers(0, 8))
        try:
            out = codecs.decode(header, memoryview(bytes(bad)), "evil")
        except ObjectCorruptError:
            continue
        assert len(out) == len(raw)  # decodable bytes: the store's raw-hash check catches them
