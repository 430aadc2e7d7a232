"""Tensor element types, named as safetensors names them (the canonical names in manifests)."""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview  # raw tensor bytes, in whatever container holds them

# name -> bytes per element
ITEMSIZE: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2FNUZ": 1,
    "C64": 8,
    "C128": 16,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}

# Regions whose element type is unknown or opaque (quantized blocks, raw bytes) use "BYTES".
OPAQUE = "BYTES"


def itemsize(dtype: str) -> int:
    """Bytes per element; 1 for opaque regions."""
    return ITEMSIZE.get(dtype, 1)


def numel(shape: tuple[int, ...] | list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# dtype -> numpy type name, for the types numpy has (bf16 and fp8 it has not)
NUMPY_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "C64": "complex64",
    "C128": "complex128",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}

# dtype -> torch attribute name, for the floating types (what merges and the API compute with)
TORCH_FLOAT_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
