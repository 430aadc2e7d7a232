"""PyTorch zip checkpoints: split while streaming, rejoin byte for byte, never run the pickle.

Fixtures are written by torch.save itself, plus a few zips built by hand (torch-like layout,
zip64 descriptors, other zip writers, hostile pickles) to reach the paths torch rarely takes.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from git_theta_like.errors import FormatError, UnsafePickleError
from git_theta_like.formats import ByteReader, Event, Skeleton, Tensor, base, detect
from git_theta_like.formats import pytorch as pt
from git_theta_like.formats.pytorch import PyTorchZipFormat
from git_theta_like.formats.pytorch.pickle_reader import prescan, read_torch_pickle

CANONICAL = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.uint16: "U16",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
    torch.complex64: "C64",
}


# ------------------------------------------------------------------------------------ helpers


def save(obj: object, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def split(data: bytes) -> list[Event]:
    return list(PyTorchZipFormat().split(ByteReader(io.BytesIO(data))))


def joined(events: list[Event]) -> bytes:
    return b"".join(bytes(e.data) for e in events)


def tensors(events: list[Event]) -> dict[str, Tensor]:
    out = {e.info.name: e for e in events if isinstance(e, Tensor)}
    assert len(out) == sum(isinstance(e, Tensor) for e in events), "region names are unique"
    return out


def storage_bytes(t: torch.Tensor) -> bytes:
    s = t.untyped_storage()
    return torch.empty(0, dtype=torch.uint8).set_(s, 0, (s.nbytes(),), (1,)).numpy().tobytes()


def lookup(obj: Any, dotted: str) -> Any:
    """The tensor at a dotted key path (dict keys may themselves contain dots)."""

    def find(obj: Any, parts: list[str]) -> Any:
        if not parts:
            return obj if isinstance(obj, torch.Tensor) else None
        if isinstance(obj, dict):
            for key, value in obj.items():
                kparts = str(key).split(".")
                if parts[: len(kparts)] == kparts and (hit := find(value, parts[len(kparts) :])) is not None:
                    return hit
        elif isinstance(obj, list | tuple) and parts[0].isdigit() and int(parts[0]) < len(obj):
            return find(obj[int(parts[0])], parts[1:])
        return None

    found = find(obj, dotted.split("."))
    assert found is not None, dotted
    return found


def check_split(data: bytes) -> dict[str, Tensor]:
    """Split data; check exact rejoining and every region against what torch.load gives."""
    assert isinstance(detect(data[:64]), PyTorchZipFormat)
    events = split(data)
    assert joined(events) == data
    regions = tensors(events)
    loaded = torch.load(io.BytesIO(data), weights_only=False)  # our own fixtures: trusted
    for name, ev in regions.items():
        info = ev.info
        assert len(ev.data) == info.length
        assert data[info.offset : info.offset + info.length] == ev.data
        if name.startswith("storage."):
            continue
        t = loaded if name == "tensor" else lookup(loaded, name)
        assert bytes(ev.data) == storage_bytes(t), name
        assert info.dtype == CANONICAL[t.dtype], name
        if info.shape != (t.untyped_storage().nbytes() // t.element_size(),):
            assert info.shape == tuple(t.shape), name
    return regions


def torch_like_zip(
    records: list[tuple[str, bytes]],
    *,
    zip64: bool = False,
    descriptors: bool = True,
    comment: bytes = b"",
) -> bytes:
    """A zip laid out as torch (miniz) writes it: stored records, data descriptors, 64-byte
    alignment in an 'FB' extra field, zip64 end records. With zip64=True every record gets
    the zip64 extra field and 24-byte descriptor that miniz writes for records past 4 GiB."""
    out = bytearray()
    central = bytearray()
    for name, data in records:
        offset = len(out)
        raw = name.encode()
        crc = zlib.crc32(data)
        z64 = struct.pack("<HHQQ", 1, 16, len(data), len(data)) if zip64 else b""
        pad = -(offset + 30 + len(raw) + len(z64) + 4) % 64
        extra = z64 + b"FB" + struct.pack("<H", pad) + b"Z" * pad
        flags = 0x0808 if descriptors else 0x0800
        sizes = (0, 0, 0) if descriptors else (crc, len(data), len(data))
        out += struct.pack("<4sHHHHH", b"PK\x03\x04", 0, flags, 0, 0, 0x21)
        out += struct.pack("<IIIHH", *sizes, len(raw), len(extra)) + raw + extra + data
        if descriptors:
            fmt = "<4sIQQ" if zip64 else "<4sIII"
            out += struct.pack(fmt, b"PK\x07\x08", crc, len(data), len(data))
        cd_extra = struct.pack("<HHQQ", 1, 16, len(data), len(data)) if zip64 else b""
        size32 = 0xFFFFFFFF if zip64 else len(data)
        versions_flags_method_time_date = (0, 0, flags, 0, 0, 0x21)
        lengths_disk_attrs = (len(raw), len(cd_extra), 0, 0, 0, 0)
        central += struct.pack("<4s6H3I5H2I", b"PK\x01\x02", *versions_flags_method_time_date,
                               crc, size32, size32, *lengths_disk_attrs, offset)  # fmt: skip
        central += raw + cd_extra
    cd_offset = len(out)
    out += central
    n = len(records)
    zip64_at = len(out)
    out += struct.pack("<4sQHHIIQQQQ", b"PK\x06\x06", 44, 0x31E, 45, 0, 0, n, n, len(central), cd_offset)
    out += struct.pack("<4sIQI", b"PK\x06\x07", 0, zip64_at, 1)
    out += struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, n, n, len(central), cd_offset, len(comment))
    return bytes(out + comment)


def records_of(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def rezip(
    data: bytes, compress: Callable[[str], int] = lambda _: zipfile.ZIP_STORED, **open_kwargs: Any
) -> bytes:
    """data's records rewritten by Python's zipfile (sizes in the local headers, no padding)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in records_of(data):
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compress(name)
            with z.open(info, "w", **open_kwargs) as f:
                f.write(content)
    return buf.getvalue()


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.buf += b
        return len(b)


def state_dict_of_every_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=g)
    return {
        "f32": base,
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "f64": base.double(),
        "i64": torch.arange(7),
        "i8": torch.arange(-4, 4, dtype=torch.int8),
        "u8": torch.arange(9, dtype=torch.uint8),
        "bool": base > 0,
        "u16": torch.randint(0, 1 << 16, (4, 2), generator=g, dtype=torch.int32).to(torch.uint16),
        "f8": base.to(torch.float8_e4m3fn),
        "c64": torch.complex(base, base),
    }


def small_checkpoint() -> bytes:
    return save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)})


# ------------------------------------------------------------------------ what torch writes


def test_every_dtype() -> None:
    sd = state_dict_of_every_dtype()
    regions = check_split(save(sd))
    assert set(regions) == set(sd)
    for name, t in sd.items():
        assert regions[name].info.shape == tuple(t.shape)
        assert regions[name].info.dtype == CANONICAL[t.dtype]


def test_zero_dim_and_empty_tensors() -> None:
    regions = check_split(
        save({"scalar": torch.tensor(2.5), "empty": torch.empty(0), "e3": torch.zeros(2, 0, 3)})
    )
    assert regions["scalar"].info.shape == ()
    assert regions["scalar"].info.length == 4
    assert regions["empty"].info.shape == (0,)
    assert regions["empty"].info.length == 0
    assert regions["e3"].info.shape == (2, 0, 3)


def test_full_checkpoint_with_optimizer_state() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3, "note": "x"}
    regions = check_split(save(ckpt))
    assert {
        "model.0.weight",
        "model.1.num_batches_tracked",
        "optimizer.state.0.exp_avg",
        "optimizer.state.0.exp_avg_sq",
        "optimizer.state.0.step",
    } <= set(regions)
    assert regions["model.0.weight"].info.shape == (8, 4)
    assert len(regions) == len(model.state_dict()) + 3 * len(opt.state_dict()["state"])


def test_module_state_dict_and_parameters() -> None:
    model = torch.nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32)
    regions = check_split(save(model.state_dict()))
    assert set(regions) == set(model.state_dict())
    p = torch.nn.Parameter(torch.randn(3, 2))
    p.tag = "with python state"  # type: ignore[attr-defined]
    t = torch.randn(2)
    t.note = 1  # type: ignore[attr-defined]
    regions = check_split(save({"param": torch.nn.Parameter(torch.randn(4)), "p2": p, "t": t}))
    assert regions["p2"].info.shape == (3, 2)
    assert regions["t"].info.shape == (2,)


def test_tied_weights_are_one_region() -> None:
    w = torch.randn(5, 3)
    regions = check_split(save({"embed.weight": w, "lm_head.weight": w, "other": torch.ones(1)}))
    assert set(regions) == {"embed.weight", "other"}
    assert regions["embed.weight"].info.shape == (5, 3)

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(3, 3, bias=False)
            self.b = torch.nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight

    sd = Tied().state_dict()  # two tensor objects, one storage
    regions = check_split(save(sd))
    assert set(regions) == {"a.weight"}
    assert regions["a.weight"].info.shape == (3, 3)


def test_views_keep_the_whole_storage_flat() -> None:
    base = torch.arange(24.0).reshape(4, 6)
    regions = check_split(
        save({"slice": base[1:, ::2], "t": torch.ones(3, 2).T, "row": torch.arange(10)[2:5]})
    )
    assert regions["slice"].info.shape == (24,)
    assert regions["t"].info.shape == (6,)
    assert regions["row"].info.shape == (10,)
    # A view and its base on one storage: one region, flat.
    regions = check_split(save({"base": base, "view": base[1]}))
    assert set(regions) == {"base"}
    assert regions["base"].info.shape == (24,)


def test_nested_lists_root_tensor_and_bare_storage() -> None:
    regions = check_split(save({"layers": [{"w": torch.ones(2)}, (torch.zeros(1),)]}))
    assert set(regions) == {"layers.0.w", "layers.1.0"}
    regions = check_split(save(torch.ones(3, 3)))
    assert set(regions) == {"tensor"}
    events = split(save(torch.ones(3).untyped_storage()))
    (region,) = tensors(events).values()
    assert (region.info.name, region.info.dtype, region.info.shape) == ("storage.0", "BYTES", (12,))


def test_colliding_key_paths_get_unique_names() -> None:
    data = save({"a.b": torch.ones(1), "a": {"b": torch.zeros(1)}})
    events = split(data)
    assert joined(events) == data
    regions = tensors(events)
    assert set(regions) == {"a.b", "a.b#storage.1"}
    assert regions["a.b"].data == storage_bytes(torch.ones(1))
    assert regions["a.b#storage.1"].data == storage_bytes(torch.zeros(1))


def test_large_tensor_new_zipfile_serialization() -> None:
    t = torch.randn(1024, 1024)  # 4 MiB: past the CRC check limit
    data = save({"big": t, "small": torch.ones(3)}, _use_new_zipfile_serialization=True)
    regions = check_split(data)
    assert regions["big"].info.length == 4 * 1024 * 1024
    assert regions["big"].info.offset % 64 == 0


def test_archive_name_comes_from_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "my.model.pt"
    torch.save({"w": torch.ones(2)}, path)
    data = path.read_bytes()
    assert data[30:46] == b"my.model/data.pk"
    assert set(check_split(data)) == {"w"}


def test_other_pickle_protocols_and_metadata() -> None:
    import numpy as np

    obj = {
        "w": torch.ones(2),
        "meta": {
            "np": np.float64(1.5),
            "arr": np.arange(3),
            "dtype": torch.float16,
            "size": torch.Size([2, 3]),
            "dev": torch.device("cpu"),
            "set": {1, 2},
            "bytes": b"\x00PK\x07\x08",
            "empty": b"",
            "slice": slice(1, 2),
            "c": 1j,
        },
    }
    for protocol in (2, 3, 4, 5):
        assert set(check_split(save(obj, pickle_protocol=protocol))) == {"w"}


def test_legacy_format_is_not_claimed() -> None:
    data = save({"w": torch.ones(2)}, _use_new_zipfile_serialization=False)
    assert not PyTorchZipFormat().sniff(data[:64])


# ------------------------------------------------------------------------- other zip writers


def test_torch_like_zip_reader_accepts_our_fixture_builder() -> None:
    data = torch_like_zip(records_of(small_checkpoint()))
    assert torch.equal(torch.load(io.BytesIO(data), weights_only=True)["w"], torch.arange(6.0).reshape(2, 3))
    check_split(data)


def test_zip64_descriptors_and_extra_fields() -> None:
    data = torch_like_zip(records_of(small_checkpoint()), zip64=True, comment=b"a comment")
    assert torch.load(io.BytesIO(data), weights_only=True)["b"].tolist() == [1, 1]
    regions = check_split(data)
    assert regions["w"].info.shape == (2, 3)


@pytest.mark.parametrize(
    "variant",
    ["sizes-in-headers", "forced-zip64", "deflated-small-records", "unseekable-writer"],
)
def test_records_written_by_python_zipfile(variant: str) -> None:
    original = save(state_dict_of_every_dtype())
    if variant == "sizes-in-headers":
        data = rezip(original)
    elif variant == "forced-zip64":
        data = rezip(original, force_zip64=True)
    elif variant == "deflated-small-records":
        data = rezip(original, lambda n: zipfile.ZIP_STORED if "/data/" in n else zipfile.ZIP_DEFLATED)
    else:
        sink = _Unseekable()
        with zipfile.ZipFile(sink, "w") as z:  # type: ignore[arg-type]
            for name, content in records_of(original):
                z.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), content)
        data = bytes(sink.buf)
        assert data[6] & 0x08  # zipfile used data descriptors
    assert set(check_split(data)) == set(state_dict_of_every_dtype())


def test_scanning_across_small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Descriptor scanning that spans many peek windows, over a pickle holding the descriptor
    signature; big-storage code paths forced with small limits."""
    monkeypatch.setattr(pt, "SCAN_WINDOW", 16)
    monkeypatch.setattr(pt, "CRC_CHECK_LIMIT", 8)
    monkeypatch.setattr(base, "EXACT_ALLOC", 100)
    obj = {"meta": b"PK\x07\x08" * 40, "w": torch.randn(50), "tiny": torch.ones(1)}
    check_split(save(obj, pickle_protocol=4))


# ------------------------------------------------------------------------------------- errors


def split_like_the_filter(data: bytes) -> list[Event]:
    """Split as filters.clean does (mark after each event), checking that no byte is lost: on
    success the events rejoin to data; on FormatError (re-raised) the events so far plus the
    bytes consumed since the last mark are exactly what was read."""
    reader = ByteReader(io.BytesIO(data))
    events: list[Event] = []
    try:
        for event in PyTorchZipFormat().split(reader):
            reader.mark()
            events.append(event)
    except FormatError:
        leftover = reader.consumed_since_mark()
        assert joined(events) + leftover == data[: reader.position]
        raise
    assert joined(events) == data
    return events


def cut_points(data: bytes) -> list[int]:
    ends = [data.index(b"data.pkl") + 20, data.index(b"PK\x07\x08") + 8]
    ends += [data.index(b"/data/0") + 40, data.index(b"PK\x01\x02") + 10]
    return [
        0,
        3,
        10,
        29,
        31,
        *ends,
        data.index(b"PK\x01\x02"),
        len(data) - 30,
        len(data) - 22,
        len(data) - 1,
    ]


def test_truncated_files_raise_format_error() -> None:
    data = save({"w": torch.randn(8, 8), "b": torch.ones(4)})
    for cut in cut_points(data):
        with pytest.raises(FormatError):
            split_like_the_filter(data[:cut])


def test_non_torch_zip_raises_format_error() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("hello.txt", "hello " * 100)
        z.writestr("dir/data.pkl", "not a pickle")
    assert PyTorchZipFormat().sniff(buf.getvalue()[:64])
    with pytest.raises(FormatError, match="first zip record is 'hello.txt'"):
        split_like_the_filter(buf.getvalue())


def test_compressed_storages_raise_format_error() -> None:
    data = rezip(small_checkpoint(), lambda _: zipfile.ZIP_DEFLATED)
    with pytest.raises(FormatError, match="storage record 'archive/data/0' is compressed"):
        split_like_the_filter(data)


def test_big_endian_checkpoint_raises_format_error() -> None:
    records = [(n, b"big" if n.endswith("/byteorder") else c) for n, c in records_of(small_checkpoint())]
    with pytest.raises(FormatError, match="byte order is b'big'"):
        split_like_the_filter(torch_like_zip(records))


def test_storage_size_mismatch_raises_format_error() -> None:
    records = [(n, c[:-4] if n.endswith("/data/0") else c) for n, c in records_of(small_checkpoint())]
    with pytest.raises(FormatError, match="no data descriptor for 24 bytes"):
        split_like_the_filter(torch_like_zip(records))
    with pytest.raises(FormatError, match="holds 20 bytes, but data.pkl describes 24"):
        split_like_the_filter(torch_like_zip(records, descriptors=False))
    records = [(n, c) for n, c in records_of(small_checkpoint()) if not n.endswith("/data/1")]
    with pytest.raises(FormatError, match="no record archive/data/1"):
        split_like_the_filter(torch_like_zip(records))


def test_inconsistent_central_directory_raises_format_error() -> None:
    data = bytearray(small_checkpoint())
    cd = data.index(b"PK\x01\x02")
    data[cd + 16] ^= 0xFF  # the first entry's CRC
    with pytest.raises(FormatError, match="contradicts its record"):
        split_like_the_filter(bytes(data))
    with pytest.raises(FormatError, match="unexpected bytes follow"):
        split_like_the_filter(small_checkpoint() + b"junk")


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-marker"
    evil = pickle.dumps({"w": _Hostile(marker)}, protocol=2)
    data = torch_like_zip([("archive/data.pkl", evil), ("archive/version", b"3\n")])
    with pytest.raises(UnsafePickleError, match=r"(os|posix)\.system; it was not executed"):
        split_like_the_filter(data)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.",
        b"\x80\x02c__builtin__\ngetattr\n.",
        b"\x80\x04\x8c\x05torch\x8c\x04load\x93.",
        b"\x80\x02ctorch._utils\n_rebuild_qtensor\n.",
        b"\x80\x02ccopyreg\n_reconstructor\n.",
    ],
    ids=["eval", "getattr", "torch.load", "qtensor", "copyreg"],
)
def test_globals_outside_the_whitelist_are_refused(payload: bytes) -> None:
    with pytest.raises(UnsafePickleError, match="it was not executed"):
        read_torch_pickle(payload)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x80\x02K\x01" + b"\x85" * 100_000 + b".", "nests tuples"),  # would crash hash()
        (b"\x80\x02}K\x01" + b"\x85" * 100_000 + b"K\x01s.", "nests tuples"),
        (b"\x80\x02Nr\xff\xff\xff\x7f.", "memo index"),  # would allocate a 16 GiB memo
        (b"\x80\x02(((", "without a STOP"),
        (b"\x80\x02t.", "finds no mark"),
        (b"\x80\x02\xff.", "unknown opcode"),
        (b"\x80\x02X\xff\xff\x00\x00ab.", "ends inside"),
    ],
)
def test_pickle_bombs_and_malformed_pickles(payload: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        read_torch_pickle(payload)


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            b"\n".join(
                [
                    b"\x80\x02ctorch._tensor",
                    b"_rebuild_from_type_v2",
                    b"(ccollections",
                    b"OrderedDict",
                    b"ctorch",
                    b"Tensor",
                    b")NtR.",
                ]
            ),
            "rebuilds a tensor subclass with <collections.OrderedDict>",
        ),
        (b"\x80\x02ctorch\nFloatStorage\n)R.", "not callable"),
        (b"\x80\x02ctorch\nfloat32\n)R.", "not callable"),
        (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}b.", "sets state on Stub"),
        (b"\x80\x02(X\x07\x00\x00\x00storageK\x00tQ.", "persistent id"),
    ],
    ids=["rebuild-from-type", "call-storage-class", "call-dtype", "build-on-stub", "bad-pid"],
)
def test_misuse_of_whitelisted_globals_is_refused(payload: bytes, message: str) -> None:
    prescan(payload)  # structurally fine: the stand-ins themselves refuse
    with pytest.raises(FormatError, match=message):
        read_torch_pickle(payload)


# --------------------------------------------------------------------------------- hypothesis

SAMPLE = save({"w": torch.randn(4, 4), "b": torch.arange(3), "h": torch.ones(2, dtype=torch.float16)})
SAMPLE_PICKLE = records_of(SAMPLE)[0][1]


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(0, len(SAMPLE)),
    flips=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 7)), max_size=4),
)
def test_corrupted_files_only_raise_format_error(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(SAMPLE)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    with contextlib.suppress(FormatError):
        split_like_the_filter(bytes(data[:cut]))


@settings(max_examples=300, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(
    flips=st.lists(
        st.tuples(st.integers(0, len(SAMPLE_PICKLE) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_corrupted_pickles_with_valid_crc_only_raise_format_error(
    flips: list[tuple[int, int]],
) -> None:
    pkl = bytearray(SAMPLE_PICKLE)
    for pos, value in flips:
        pkl[pos] = value
    records = records_of(SAMPLE)
    records[0] = (records[0][0], bytes(pkl))
    with contextlib.suppress(FormatError):
        split_like_the_filter(torch_like_zip(records))


def test_skeleton_events_are_not_reused() -> None:
    """The filter keeps each Skeleton's data object: the parser must never mutate it later."""
    data = small_checkpoint()
    events: list[Event] = []
    at_yield: list[bytes] = []
    for event in PyTorchZipFormat().split(ByteReader(io.BytesIO(data))):
        events.append(event)
        at_yield.append(bytes(event.data))
    assert [bytes(e.data) for e in events] == at_yield
    assert any(isinstance(e, Skeleton) for e in events)
    assert len({id(e.data) for e in events}) == len(events)
