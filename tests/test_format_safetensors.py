import io
import json
import struct

import pytest
from fixtures import every_dtype_file, safetensors_bytes, small_model

from git_theta_like.errors import FormatError
from git_theta_like.formats import ByteReader, Tensor, detect
from git_theta_like.formats.safetensors import SafetensorsFormat


def split(data: bytes) -> list:  # type: ignore[type-arg]
    return list(SafetensorsFormat().split(ByteReader(io.BytesIO(data))))


def joined(events: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(bytes(e.data) for e in events)


@pytest.mark.parametrize(
    "data",
    [
        every_dtype_file(),
        safetensors_bytes(small_model(), metadata=None, pad_to=1),
        safetensors_bytes(small_model(), metadata={"a": "b"}, pad_to=64, gap=3, trailing=b"tail"),
        safetensors_bytes({}, metadata={"only": "metadata"}),
    ],
    ids=["every-dtype", "no-padding", "gaps-and-trailing", "no-tensors"],
)
def test_split_rejoins_exactly(data: bytes) -> None:
    assert isinstance(detect(data[:64]), SafetensorsFormat)
    events = split(data)
    assert joined(events) == data
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    tensors = [e for e in events if isinstance(e, Tensor)]
    assert {t.info.name for t in tensors} == set(header) - {"__metadata__"}
    for t in tensors:
        assert list(t.info.shape) == header[t.info.name]["shape"]
        assert len(t.data) == t.info.length
        assert data[t.info.offset : t.info.offset + t.info.length] == t.data


def test_real_model_splits(minilm_path) -> None:  # type: ignore[no-untyped-def]
    data = minilm_path.read_bytes()
    events = split(data)
    assert joined(events) == data
    assert sum(isinstance(e, Tensor) for e in events) > 100


def _file_with(entry: dict, data: bytes = b"\0" * 16) -> bytes:  # type: ignore[type-arg]
    h = json.dumps(entry).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize(
    "data, message",
    [
        (_file_with({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}), "needs 8 bytes"),
        (
            _file_with(
                {
                    "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                    "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
                }
            ),
            "overlaps",
        ),
        (_file_with({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}), "shape"),
        (
            _file_with({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 5),
            "ends inside",
        ),
        (struct.pack("<Q", 10) + b"{not json}", "not valid JSON"),
        (struct.pack("<Q", 1000) + b"{}", "ends inside"),
    ],
)
def test_malformed_files_raise_format_error(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        split(data)
