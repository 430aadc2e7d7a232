"""GGUF (llama.cpp): split while streaming, rejoin byte for byte, refuse hostile headers quickly.

Well-formed files are written by the `gguf` package's own GGUFWriter (and cross-checked with its
GGUFReader); malformed ones are built by hand with `build` below, so tests control every byte.
"""

from __future__ import annotations

import contextlib
import io
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import git, gtl, objects_in
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from git_theta_like import dtypes
from git_theta_like.errors import FormatError
from git_theta_like.formats import ByteReader, Event, Skeleton, Tensor, base, detect
from git_theta_like.formats import gguf as gg
from git_theta_like.formats.gguf import GgufFormat

# ------------------------------------------------------------------------------------ helpers


def split(data: bytes) -> list[Event]:
    return list(GgufFormat().split(ByteReader(io.BytesIO(data))))


def joined(events: Sequence[Event]) -> bytes:
    return b"".join(bytes(e.data) for e in events)


def tensors_of(events: Sequence[Event]) -> list[Tensor]:
    return [e for e in events if isinstance(e, Tensor)]


def split_like_the_filter(data: bytes) -> list[Event]:
    """Split as filters.clean does (mark after each event), checking that no byte is lost: on
    success the events rejoin to data; on FormatError (re-raised) the events so far plus the
    bytes consumed since the last mark are exactly what was read."""
    reader = ByteReader(io.BytesIO(data))
    events: list[Event] = []
    try:
        for event in GgufFormat().split(reader):
            reader.mark()
            events.append(event)
    except FormatError:
        assert joined(events) + reader.consumed_since_mark() == data[: reader.position]
        raise
    assert joined(events) == data
    return events


def check_split(data: bytes) -> list[Tensor]:
    """Split a valid file: exact rejoin, regions where they say they are, the same tensors
    (offsets, byte lengths) as gguf's own reader finds."""
    assert isinstance(detect(data[:64]), GgufFormat)
    events = split_like_the_filter(data)
    tensors = tensors_of(events)
    for t in tensors:
        assert len(t.data) == t.info.length
        assert data[t.info.offset : t.info.offset + t.info.length] == t.data
        assert dtypes.numel(t.info.shape) * dtypes.itemsize(t.info.dtype) == t.info.length
    offsets = [t.info.offset for t in tensors]
    assert offsets == sorted(offsets)
    gguf = pytest.importorskip("gguf")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.gguf"
        path.write_bytes(data)
        reader = gguf.GGUFReader(path)
        theirs = {t.name: (int(t.data_offset), int(t.n_bytes)) for t in reader.tensors}
        del reader
    assert {t.info.name: (t.info.offset, t.info.length) for t in tensors} == theirs
    return tensors


def write_gguf(
    tensors: dict[str, np.ndarray | tuple[np.ndarray, Any]],
    metadata: Callable[[Any], None] | None = None,
    alignment: int | None = None,
    arch: str = "llama",
    **writer_args: Any,
) -> bytes:
    """A GGUF file written by gguf.GGUFWriter. A tensor given as (uint8 bytes, type) is written
    raw with that ggml type (quantized data)."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(None, arch, **writer_args)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    if metadata is not None:
        metadata(w)
    for name, t in tensors.items():
        if isinstance(t, tuple):
            w.add_tensor(name, t[0], raw_dtype=t[1])
        else:
            w.add_tensor(name, t)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.gguf"
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def every_value_type(w: Any) -> None:
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 2**32 - 1)
    w.add_int32("t.i32", -(2**31))
    w.add_float32("t.f32", 3.5)
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", -1e300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo wörld ✓ \x00 nul")
    w.add_string("general.name", "tiny")
    w.add_array("t.ints", [1, 2, 3, -4])
    w.add_array("t.floats", [0.5, 1.5])
    w.add_array("t.bools", [True, False, True])
    w.add_array("t.strs", ["a", "", "ü" * 1000])
    w.add_array("t.nested", [[1, 2], [3, 4, 5], ["x", "y"], [[1.5], [2.5, 3.5]]])
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(20_000)])


def small_model(seed: int = 0) -> dict[str, np.ndarray | tuple[np.ndarray, Any]]:
    gguf = pytest.importorskip("gguf")
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    return {
        "token_embd.weight": rng.standard_normal((64, 32)).astype(np.float32),
        "blk.0.attn_q.weight": (
            quantize(rng.standard_normal((32, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
            gguf.GGMLQuantizationType.Q8_0,
        ),
        "blk.0.ffn_up.weight": (
            quantize(rng.standard_normal((16, 256)).astype(np.float32), gguf.GGMLQuantizationType.Q4_0),
            gguf.GGMLQuantizationType.Q4_0,
        ),
        "blk.0.attn_norm.weight": rng.standard_normal(32).astype(np.float16),
        "output.weight": rng.standard_normal((32, 64)).astype(np.float32),
    }


# Hand-built files. Strings: u64 length + bytes; tensor info: name, u32 n_dims, u64 ne..., u32
# type, u64 offset.


def s(text: bytes | str) -> bytes:
    b = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(b)) + b


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return s(key) + struct.pack("<I", vtype) + payload


def ti(name: bytes | str, ne: Sequence[int], type_id: int, offset: int) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(ne))
        + struct.pack(f"<{len(ne)}Q", *ne)
        + struct.pack("<IQ", type_id, offset)
    )


def build(
    kvs: Sequence[bytes] = (),
    infos: Sequence[bytes] = (),
    data: bytes = b"",
    alignment: int = 32,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ", version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % alignment) + data


def f32(*shape: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).tobytes()


HAND = build(
    kvs=[kv("general.architecture", 8, s("llama")), kv("general.alignment", 4, struct.pack("<I", 16))],
    # listed out of file order, with a gap (16 bytes) between the two and trailing bytes
    infos=[ti("b", [4], 0, 48), ti("a", [3, 2], 0, 0)],
    data=f32(2, 3) + b"\0" * 8 + b"\xee" * 16 + f32(4, seed=1) + b"tail",
    alignment=16,
)


# ------------------------------------------------------------------------------ well-formed files


def test_every_metadata_type_and_plain_dtype() -> None:
    gguf = pytest.importorskip("gguf")
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {
        "f32": rng.standard_normal((3, 5, 7)).astype(np.float32),
        "f16": rng.standard_normal((4, 6)).astype(np.float16),
        "f64": rng.standard_normal(5),
        "i8": rng.integers(-128, 127, (2, 3, 4, 5), dtype=np.int8),
        "i16": rng.integers(-1000, 1000, 9, dtype=np.int16),
        "i32": rng.integers(-(2**31), 2**31 - 1, (3, 3), dtype=np.int32),
        "i64": rng.integers(-(2**62), 2**62, (2, 2), dtype=np.int64),
    }
    bf16 = rng.integers(0, 2**16, (3, 8), dtype=np.uint16)
    tensors: dict[str, np.ndarray | tuple[np.ndarray, Any]] = dict(arrays)
    tensors["bf16"] = (bf16.view(np.uint8), gguf.GGMLQuantizationType.BF16)
    data = write_gguf(tensors, every_value_type)
    got = {t.info.name: t for t in check_split(data)}
    expected = {name: (a.shape, a.tobytes()) for name, a in arrays.items()}
    expected["bf16"] = ((3, 8), bf16.tobytes())
    assert set(got) == set(expected)
    canonical = {"f32": "F32", "f16": "F16", "f64": "F64", "bf16": "BF16"}
    for name, (shape, raw) in expected.items():
        t = got[name]
        assert t.info.dtype == canonical.get(name, name.upper())
        assert t.info.shape == shape, "row-major (numpy) order: ggml dims reversed"
        assert bytes(t.data) == raw
    # the header (all metadata) is skeleton, in one piece
    header_end = min(t.info.offset for t in got.values())
    events = split(data)
    assert isinstance(events[0], Skeleton) and b"tokenizer.ggml.tokens" in events[0].data
    assert sum(len(e.data) for e in events if isinstance(e, Skeleton)) >= header_end


def test_quantized_types_are_opaque_regions() -> None:
    gguf = pytest.importorskip("gguf")
    from gguf.quants import quantize

    Q = gguf.GGMLQuantizationType
    rng = np.random.default_rng(1)
    tensors: dict[str, np.ndarray | tuple[np.ndarray, Any]] = {}
    for qtype in (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0):  # real quantized data
        tensors[f"real.{qtype.name}"] = (
            quantize(rng.standard_normal((4, 64)).astype(np.float32), qtype),
            qtype,
        )
    for type_id, t in gg.GGML_TYPES.items():  # raw blocks of every quantized type gguf knows
        if t.dtype == dtypes.OPAQUE and type_id in Q._value2member_map_:
            qtype = Q(type_id)
            tensors[f"raw.{t.name}"] = (rng.integers(0, 256, (3, 2 * t.type_size), dtype=np.uint8), qtype)
    data = write_gguf(tensors)
    got = {t.info.name: t for t in check_split(data)}
    assert set(got) == set(tensors)
    for name, (raw, _qtype) in tensors.items():
        t = got[name]
        assert t.info.dtype == "BYTES", name
        assert t.info.shape == (raw.nbytes,)
        assert bytes(t.data) == raw.tobytes()
    assert len([n for n in got if n.startswith("raw.")]) >= 20


def test_type_table_matches_gguf_py() -> None:
    gguf = pytest.importorskip("gguf")
    sizes = gguf.GGML_QUANT_SIZES
    for qtype, (block, size) in sizes.items():
        ours = gg.GGML_TYPES.get(int(qtype))
        if ours is None:  # a type newer than our table: refused (stored whole), never misread
            assert int(qtype) > max(gg.GGML_TYPES)
            continue
        assert (ours.name, ours.block_size, ours.type_size) == (qtype.name, block, size)
    plain = {t.name: t.dtype for t in gg.GGML_TYPES.values() if t.dtype != dtypes.OPAQUE}
    assert plain == {n: n for n in ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64")}
    assert all(dtypes.ITEMSIZE[t.dtype] == t.type_size for t in gg.GGML_TYPES.values() if t.dtype in plain)


@pytest.mark.slow
@pytest.mark.parametrize("alignment", [1, 8, 64, 256, 4096])
def test_non_default_alignment(alignment: int) -> None:
    model = small_model()
    data = write_gguf(model, every_value_type, alignment=alignment)
    tensors = check_split(data)
    assert len(tensors) == len(model)
    if alignment > 1:
        assert all(t.info.offset % alignment == 0 for t in tensors)


def test_edge_cases_no_tensors_zero_dim_empty_and_trailing_bytes() -> None:
    data = write_gguf({}, every_value_type)
    events = split_like_the_filter(data)
    assert not tensors_of(events)
    data = write_gguf(
        {
            "empty": np.zeros((0, 4), np.float32),
            "scalar": np.array(7.5, np.float32),
            "after": np.arange(6, dtype=np.int32),
            "empty2": np.zeros(0, np.float16),
        }
    )
    got = {t.info.name: t.info for t in check_split(data)}
    assert got["empty"].length == 0 and got["empty"].shape == (0, 4)
    assert got["scalar"].shape == () and got["scalar"].length == 4
    with_tail = data + b"trailing bytes that are not tensor data"
    assert joined(split_like_the_filter(with_tail)) == with_tail


def test_hand_built_file_out_of_order_infos_gaps_and_trailing_bytes() -> None:
    events = split_like_the_filter(HAND)
    got = [t.info for t in tensors_of(events)]
    assert [(i.name, i.dtype, i.shape, i.length) for i in got] == [
        ("a", "F32", (2, 3), 24),
        ("b", "F32", (4,), 16),
    ]
    assert bytes(tensors_of(events)[1].data) == f32(4, seed=1)
    skeleton = [bytes(e.data) for e in events if isinstance(e, Skeleton)]
    assert skeleton[-1] == b"tail"
    assert b"\0" * 8 + b"\xee" * 16 in skeleton, "the gap between the tensors is skeleton"


class CountingSource(io.BytesIO):
    """A file that counts the bytes and the calls its reader asks for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.calls = 0
        self.bytes = 0

    def readinto(self, buffer: memoryview, /) -> int:  # type: ignore[override]
        n = super().readinto(buffer)
        self.calls += 1
        self.bytes += n
        return n


def test_large_vocabulary_is_read_once_in_large_windows() -> None:
    """300k strings in the header: each byte comes from the file once, in window-sized reads (a
    parser that re-reads or peeks string by string would ask for the header over and over)."""
    tokens = b"".join(s(f"token_{i}") for i in range(300_000))
    data = build(
        kvs=[kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, 300_000) + tokens)],
        infos=[ti("w", [8], 0, 0)],
        data=f32(8),
    )
    src = CountingSource(data)
    events = list(GgufFormat().split(ByteReader(src)))
    assert joined(events) == data and len(tensors_of(events)) == 1
    assert src.bytes == len(data)
    assert src.calls <= len(data) // gg.WINDOW + 50, f"{src.calls} reads for {len(data)} bytes"


def test_small_window_and_allocation_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings and arrays longer than the peek window, regions above the exact-allocation limit."""
    monkeypatch.setattr(gg, "WINDOW", 64)
    monkeypatch.setattr(base, "EXACT_ALLOC", 40)
    monkeypatch.setattr(gg, "CHUNK", 7)
    data = write_gguf(small_model(), every_value_type, alignment=64)
    check_split(data)
    check_split(data + b"x" * 100)
    split_like_the_filter(HAND)


def test_skeleton_events_are_not_reused() -> None:
    """The filter keeps each event's data object: the parser must never mutate it later."""
    events: list[Event] = []
    at_yield: list[bytes] = []
    for event in GgufFormat().split(ByteReader(io.BytesIO(HAND))):
        events.append(event)
        at_yield.append(bytes(event.data))
    assert [bytes(e.data) for e in events] == at_yield
    assert len({id(e.data) for e in events}) == len(events)


# ---------------------------------------------------------------------------------- malformed

F32_4 = ti("w", [4], 0, 0)


MALFORMED: dict[str, tuple[bytes, str]] = {
    "v1": (build(version=1), "version 1"),
    "v7": (build(version=7), "unknown GGUF version"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "tensor-count": (build(n_tensors=2**63), "tensor count"),
    "kv-count": (build(n_kv=2**40), "metadata count"),
    "key-length": (build(kvs=[struct.pack("<Q", 2**62) + b"key"]), "header"),
    "string-length": (build(kvs=[kv("k", 8, struct.pack("<Q", 2**60))]), "header"),
    "u8-array": (build(kvs=[kv("k", 9, struct.pack("<IQ", 0, 2**61))]), "exceeds the header limit"),
    "string-array": (build(kvs=[kv("k", 9, struct.pack("<IQ", 8, 2**61))]), "exceeds the header limit"),
    "nested-array-count": (build(kvs=[kv("k", 9, struct.pack("<IQ", 9, 2**61))]), "exceeds the header limit"),
    "nesting-depth": (build(kvs=[kv("k", 9, struct.pack("<IQ", 9, 1) * 40)]), "nested"),
    "value-type": (build(kvs=[kv("k", 13, b"")]), "unknown metadata value type"),
    "element-type": (build(kvs=[kv("k", 9, struct.pack("<IQ", 99, 1))]), "unknown array element type"),
    "duplicate-key": (build(kvs=[kv("k", 4, b"\0" * 4), kv("k", 4, b"\0" * 4)]), "appears twice"),
    "alignment-24": (build(kvs=[kv("general.alignment", 4, struct.pack("<I", 24))]), "power of two"),
    "alignment-0": (build(kvs=[kv("general.alignment", 4, struct.pack("<I", 0))]), "power of two"),
    "alignment-type": (build(kvs=[kv("general.alignment", 10, struct.pack("<Q", 32))]), "not uint32"),
    "type-5": (build(infos=[ti("w", [4], 5, 0)], data=b"\0" * 32), "unknown ggml type 5"),
    "type-31": (build(infos=[ti("w", [4], 31, 0)], data=b"\0" * 32), "unknown ggml type 31"),
    "type-1000": (build(infos=[ti("w", [4], 1000, 0)], data=b"\0" * 32), "unknown ggml type"),
    "five-dims": (build(infos=[ti("w", [1, 1, 1, 1, 1], 0, 0)], data=b"\0" * 32), "dimensions"),
    "dim-range": (build(infos=[ti("w", [2**63, 1], 0, 0)]), "out of range"),
    "dims-product": (build(infos=[ti("w", [2**40, 2**40], 0, 0)]), "more than"),
    "dims-product-4d": (build(infos=[ti("w", [2**20] * 4, 0, 0)]), "more than"),
    "q8-row": (build(infos=[ti("w", [33], 8, 0)], data=b"\0" * 64), "block size"),
    "name-utf8": (build(infos=[ti(b"\xff\xfe", [4], 0, 0)], data=b"\0" * 32), "not UTF-8"),
    "duplicate-name": (build(infos=[F32_4, F32_4], data=b"\0" * 64), "appears twice"),
    "misaligned": (build(infos=[F32_4, ti("v", [4], 0, 8)], data=b"\0" * 64), "not a multiple of 32"),
    "overlap": (build(infos=[ti("w", [16], 0, 0), ti("v", [4], 0, 32)], data=b"\0" * 96), "overlaps"),
    "overlap-reversed": (
        build(infos=[ti("w", [4], 0, 32), ti("v", [16], 0, 0)], data=b"\0" * 96),
        "overlaps",
    ),
    "truncated-tensor": (build(infos=[ti("w", [64], 0, 0)], data=b"\0" * 100), "ends inside tensor 'w'"),
    "offset-beyond-end": (build(infos=[ti("w", [4], 0, 2**40)], data=b"\0" * 100), "ends inside"),
    "huge-tensor": (build(infos=[ti("w", [2**30, 2**14], 0, 0)], data=b"\0" * 100), "ends inside"),
    "truncated-infos": (build(n_tensors=1), "ends inside"),
    "truncated-preamble": (b"GGUF\3\0\0", "ends inside"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_files_raise_format_error_in_bounded_memory(case: str) -> None:
    data, message = MALFORMED[case]
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match=message):
            split_like_the_filter(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200 * 1024 * 1024, f"{peak} bytes allocated for a {len(data)}-byte file"


def test_big_endian_file_from_gguf_writer_raises_format_error() -> None:
    gguf = pytest.importorskip("gguf")
    data = write_gguf(small_model(), endianess=gguf.GGUFEndian.BIG)
    assert isinstance(detect(data[:64]), GgufFormat)
    with pytest.raises(FormatError, match="big-endian"):
        split_like_the_filter(data)


def cut_points(data: bytes) -> list[int]:
    step = max(1, len(data) // 300)
    return sorted({*range(0, min(len(data), 200)), *range(0, len(data), step), len(data) - 1})


def test_truncated_files_raise_format_error() -> None:
    data = write_gguf(small_model(), every_value_type)
    tensors = check_split(data)
    last_end = max(t.info.offset + t.info.length for t in tensors)
    for cut in cut_points(data):
        if cut >= last_end:
            continue  # only trailing padding is missing: still a valid split
        with pytest.raises(FormatError):
            split_like_the_filter(data[:cut])
    for cut in cut_points(HAND):
        if cut < len(HAND) - 4:
            with pytest.raises(FormatError):
                split_like_the_filter(HAND[:cut])


def test_detect_claims_only_gguf() -> None:
    assert isinstance(detect(HAND[:64]), GgufFormat)
    assert not GgufFormat().sniff(b"GGU")
    assert not GgufFormat().sniff(b"PK\x03\x04")
    assert not isinstance(detect(b"\x10\0\0\0\0\0\0\0{}"), GgufFormat)


# --------------------------------------------------------------------------------- hypothesis


def _sample() -> bytes:
    q8 = struct.pack("<e", 0.5) + bytes(range(32))  # one Q8_0 block: f16 scale + 32 int8
    return build(
        kvs=[
            kv("general.architecture", 8, s("llama")),
            kv("general.alignment", 4, struct.pack("<I", 16)),
            kv("t.arr", 9, struct.pack("<IQ", 8, 3) + s("a") + s("bc") + s("")),
            kv("t.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 5, 2) + b"\1\0\0\0\2\0\0\0")
            + struct.pack("<IQ", 6, 1)
            + struct.pack("<f", 1.5),
            kv("t.f64", 12, struct.pack("<d", 2.0)),
        ],
        infos=[ti("w", [4, 2], 0, 0), ti("q", [32, 2], 8, 32), ti("h", [3], 1, 112)],
        data=f32(2, 4) + q8 * 2 + b"\0" * 12 + np.ones(3, np.float16).tobytes() + b"\0" * 10,
        alignment=16,
    )


SAMPLE = _sample()


def test_sample_is_valid() -> None:
    got = [(t.info.name, t.info.dtype, t.info.shape) for t in tensors_of(split_like_the_filter(SAMPLE))]
    assert got == [("w", "F32", (2, 4)), ("q", "BYTES", (68,)), ("h", "F16", (3,))]


@settings(max_examples=400, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(SAMPLE)),
    flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 7)), max_size=4),
    values=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), max_size=2),
)
def test_corrupted_files_only_raise_format_error(
    cut: int, flips: list[tuple[int, int]], values: list[tuple[int, int]]
) -> None:
    data = bytearray(SAMPLE)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    for pos, value in values:
        data[pos] = value
    with contextlib.suppress(FormatError):
        split_like_the_filter(bytes(data[:cut]))


# ------------------------------------------------------------------------------ through real git


@pytest.fixture
def gguf_repo(repo: Path) -> Path:
    gtl(repo, "track", "*.gguf")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "track gguf")
    return repo


def test_git_round_trip_and_one_changed_tensor(gguf_repo: Path) -> None:
    repo = gguf_repo
    model = small_model(seed=0)
    base = write_gguf(model, every_value_type)
    (repo / "model.gguf").write_bytes(base)
    git(repo, "add", "model.gguf")
    git(repo, "commit", "-qm", "base")
    manifest = git(repo, "show", "HEAD:model.gguf").stdout
    assert manifest.startswith("git-theta-like manifest v1 format=gguf")
    assert manifest.count("\ntensor ") == len(model)
    assert " BYTES " in manifest and " F32 " in manifest
    before = objects_in(repo)

    changed = dict(model)
    changed["output.weight"] = np.random.default_rng(9).standard_normal((32, 64)).astype(np.float32)
    ft = write_gguf(changed, every_value_type)
    assert len(ft) == len(base)
    (repo / "model.gguf").write_bytes(ft)
    git(repo, "add", "model.gguf")
    git(repo, "commit", "-qm", "ft")
    assert len(objects_in(repo) - before) == 1, "only the changed tensor is a new object"
    old_lines = set(manifest.splitlines())
    plus = [
        line for line in git(repo, "show", "HEAD:model.gguf").stdout.splitlines() if line not in old_lines
    ]
    assert len(plus) == 1 and plus[0].startswith("tensor output.weight F32 [32,64] ")

    # a changed quantized tensor: one new opaque object too
    before = objects_in(repo)
    gguf = pytest.importorskip("gguf")
    q = np.asarray(changed["blk.0.ffn_up.weight"][0]).copy()
    q[3, 5] ^= 0x10
    changed["blk.0.ffn_up.weight"] = (q, gguf.GGMLQuantizationType.Q4_0)
    q_changed = write_gguf(changed, every_value_type)
    (repo / "model.gguf").write_bytes(q_changed)
    git(repo, "add", "model.gguf")
    git(repo, "commit", "-qm", "requantized")
    assert len(objects_in(repo) - before) == 1

    for rev, expected in (("HEAD~2", base), ("HEAD~1", ft), ("HEAD", q_changed)):
        (repo / "model.gguf").unlink()
        git(repo, "checkout", rev, "--", "model.gguf")
        assert (repo / "model.gguf").read_bytes() == expected, rev
    assert git(repo, "status", "--porcelain").stdout == ""


@pytest.mark.parametrize(
    "name, make",
    [
        ("truncated.gguf", lambda: write_gguf(small_model(), every_value_type)[:-700]),
        (
            "overlapping.gguf",
            lambda: build(infos=[ti("w", [16], 0, 0), ti("v", [4], 0, 32)], data=b"\1" * 96),
        ),
        ("misaligned.gguf", lambda: build(infos=[F32_4, ti("v", [4], 0, 8)], data=b"\2" * 64)),
        ("huge-count.gguf", lambda: build(n_tensors=2**63, data=b"\3" * 64)),
        ("big-endian.gguf", lambda: b"GGUF" + struct.pack(">IQQ", 3, 0, 0) + b"\0" * 40),
    ],
    ids=lambda v: v.removesuffix(".gguf") if isinstance(v, str) else "",
)
@pytest.mark.slow
def test_git_unparseable_gguf_is_stored_whole_and_exact(
    gguf_repo: Path, name: str, make: Callable[[], bytes]
) -> None:
    repo = gguf_repo
    data = make()
    (repo / name).write_bytes(data)
    r = git(repo, "add", name)
    assert "stored whole" in r.stderr
    git(repo, "commit", "-qm", name)
    assert "format=opaque" in git(repo, "show", f"HEAD:{name}").stdout
    (repo / name).unlink()
    git(repo, "checkout", "--", name)
    assert (repo / name).read_bytes() == data
    assert git(repo, "status", "--porcelain").stdout == ""
