"""Structure-aware fuzzing of every parser of untrusted input, 100,000 cases in all.

Where test_fuzz.py mutates valid inputs byte by byte, these generators build inputs that are
well-formed on the outside and lie inside: object trailers and headers with wrongly typed,
nested and absurd fields, manifests with numbers of thousands of digits, safetensors headers
with nested brackets and sizes far beyond the file, GGUF preambles with absurd counts, pickles
of random opcodes. Each parser must answer with its own error (or succeed), never with another
exception or a hang (the memory bounds are asserted in test_hostile_objects.py and
test_hostile_files.py, in children with an address-space limit).

The number of cases is GIT_THETA_LIKE_FUZZ_CASES (default 100,000, spread over the parsers);
GIT_THETA_LIKE_FUZZ_SECONDS (default 240) bounds the run so that a hang is a failure, not a
stuck suite. The generators are seeded: a failure names the seed that reproduces it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import struct
import time
from collections.abc import Callable

import pytest

from git_theta_like import codecs
from git_theta_like.codecs.container import MAGIC, TRAILER, split_object
from git_theta_like.errors import FormatError, ManifestError, ObjectCorruptError
from git_theta_like.formats import ByteReader, split
from git_theta_like.formats.gguf import GgufFormat
from git_theta_like.formats.pytorch.pickle_reader import read_torch_pickle
from git_theta_like.formats.safetensors import SafetensorsFormat
from git_theta_like.manifest import Manifest

CASES = int(os.environ.get("GIT_THETA_LIKE_FUZZ_CASES", "100000"))
SECONDS = float(os.environ.get("GIT_THETA_LIKE_FUZZ_SECONDS", "240"))
HEX = "0123456789abcdef"
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "U8", "BOOL", "F8_E4M3", "Q4", "", "f32"]


def absurd_int(r: random.Random) -> object:
    return r.choice(
        [
            0,
            -1,
            1,
            2**31,
            2**63,
            2**64 + 1,
            10 ** r.randint(20, 4000),
            -(10 ** r.randint(1, 400)),
            1.5,
            1e400,
            True,
            None,
            "12",
            [4],
            {"n": 1},
        ]
    )


def nested(r: random.Random, depth: int) -> object:
    v: object = absurd_int(r)
    for _ in range(depth):
        v = [v] if r.random() < 0.5 else {"k": v}
    return v


def hexid(r: random.Random) -> object:
    return r.choice(["".join(r.choice(HEX) for _ in range(64)), "z" * 64, "", 123, None, "AB" * 32])


# ------------------------------------------------------------------ generators, one per parser


def gen_object(r: random.Random) -> None:
    header: dict[str, object] = {
        "v": r.choice([1, 2, "1", None]),
        "codec": r.choice(["raw", "planes", "xor", "sparse", "lowrank", "nope", 7]),
        "dtype": r.choice(DTYPES),
        "shape": r.choice([[4], [2, 2], [], [2**40, 2**40], nested(r, r.randint(0, 3)), "4"]),
        "size": absurd_int(r) if r.random() < 0.6 else r.randint(0, 64),
        "raw": hexid(r),
        "params": r.choice([{}, {"chunk": absurd_int(r), "width": absurd_int(r)}, nested(r, 3), []]),
    }
    if r.random() < 0.4:
        header["base"] = hexid(r)
    text = json.dumps(header).encode()
    if r.random() < 0.05:  # a number longer than Python converts (4300 digits)
        text = b'{"codec": "raw", "size": ' + b"9" * r.randint(4301, 6000) + b"}"
    if r.random() < 0.1:  # nested deeper than any JSON parser's recursion allows
        d = r.randint(50, 20_000)
        text = b'{"codec": ' + b"[" * d + b"1" + b"]" * d + b"}"
    payload = r.randbytes(r.randint(0, 64))
    hlen = len(text) if r.random() < 0.8 else r.choice([0, len(text) + 5, 2**31, len(text) - 1])
    data = payload + text + TRAILER.pack(hlen % 2**32, MAGIC if r.random() < 0.95 else b"GTL\x02")
    with contextlib.suppress(ObjectCorruptError):
        h, body = split_object(data)
        codecs.decode(h, body, base=r.randbytes(h.size) if h.size <= 256 else None)


def gen_manifest(r: random.Random) -> None:
    def num() -> str:
        return r.choice([str(r.randint(0, 10**6)), "9" * r.randint(19, 5000), "-1", "1e9", "٣", ""])

    lines = [f"git-theta-like manifest v{r.choice(['1', '2', '99', 'x'])} format=safetensors size={num()}"]
    lines.append(f"skeleton {num()} {'a' * 64} {'b' * 64} {num()} {r.choice(['planes', 'raw', ''])}")
    for i in range(r.randint(0, 6)):
        shape = ",".join(num() for _ in range(r.randint(0, 3)))
        extra = r.choice(
            ["", f" base={r.choice(['c' * 64, '12', ''])}", f" depth={num()}", " base-size=" + num()]
        )
        ids = f"{'d' * 64} {'e' * 64}"
        lines.append(f"tensor t{i} {r.choice(DTYPES)} [{shape}] {num()} {num()} {ids} {num()} planes{extra}")
    if r.random() < 0.2:
        lines.insert(
            r.randint(0, len(lines)), r.choice(["<<<<<<< ours", "=======", "\x00\x1b[31m", "tensor"])
        )
    with contextlib.suppress(ManifestError):
        Manifest.from_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")


def gen_safetensors(r: random.Random) -> None:
    header: dict[str, object] = {}
    for i in range(r.randint(0, 5)):
        begin = r.choice([0, 8, 2**40, -1, 10**30])
        end = r.choice([begin + 4 if isinstance(begin, int) else 4, 2**62, 10**3000, 1.5])
        header[f"w{i}"] = {
            "dtype": r.choice(DTYPES),
            "shape": r.choice([[1], [2**31, 2**31], [-1], nested(r, 2), "x"]),
            "data_offsets": r.choice([[begin, end], [end, begin], [begin], "01", None]),
        }
    if r.random() < 0.2:
        header["__metadata__"] = nested(r, r.randint(0, 30))
    text = json.dumps(header).encode()
    if r.random() < 0.1:
        text = b"[" * r.randint(1000, 20_000) + b"]" * r.randint(0, 10)
    n = len(text) if r.random() < 0.8 else r.choice([0, 2**63, 1_500_000_000, len(text) + 1])
    data = struct.pack("<Q", n % 2**64) + text + r.randbytes(r.randint(0, 64))
    with contextlib.suppress(FormatError):
        for _ in split(SafetensorsFormat(), ByteReader(io.BytesIO(data))):
            pass


def gen_gguf(r: random.Random) -> None:
    version = r.choice([2, 3, 1, 99])
    n_tensors = r.choice([0, 1, 2**20 + 1, 2**63, r.randint(0, 8)])
    n_kv = r.choice([0, 1, 2**20 + 1, 2**63, r.randint(0, 8)])
    body = bytearray()
    for _ in range(r.randint(0, 6)):
        key = r.randbytes(r.randint(0, 12))
        body += struct.pack("<Q", r.choice([len(key), 2**62, 0])) + key
        vtype = r.randint(0, 13)
        body += struct.pack("<I", vtype)
        if vtype == 9:  # array: element type and count
            body += struct.pack("<IQ", r.randint(0, 13), r.choice([0, 3, 2**40, 2**63]))
        body += r.randbytes(r.randint(0, 16))
    data = b"GGUF" + struct.pack("<IQQ", version, n_tensors % 2**64, n_kv % 2**64) + bytes(body)
    with contextlib.suppress(FormatError):
        for _ in split(GgufFormat(), ByteReader(io.BytesIO(data))):
            pass


OPCODES = b"()NFIJKLMR]}aehqrstuvx.\x80\x81\x85\x86\x87\x88\x89\x8a\x8c\x8d\x8e\x8f\x93\x94\x95cb"


def gen_pickle(r: random.Random) -> None:
    ops = bytearray(b"\x80\x02")
    for _ in range(r.randint(0, 60)):
        op = r.choice(OPCODES)
        ops.append(op)
        if op in b"JM":
            ops += r.randbytes(4 if op == ord("J") else 2)
        elif op in b"Kqh":
            ops += r.randbytes(1)
        elif op in b"c":
            ops += r.choice(
                [b"torch._utils\n_rebuild_tensor_v2\n", b"os\nsystem\n", b"collections\nOrderedDict\n"]
            )
        elif op == 0x8C:  # SHORT_BINUNICODE
            s = r.randbytes(r.randint(0, 8))
            ops += bytes([len(s)]) + s
        elif op == 0x95:  # FRAME
            ops += struct.pack("<Q", r.choice([0, 8, 2**62]))
    ops.append(ord("."))
    with contextlib.suppress(FormatError):  # UnsafePickleError is a FormatError
        read_torch_pickle(bytes(ops))


GENERATORS: list[tuple[Callable[[random.Random], None], float]] = [
    (gen_object, 0.3),
    (gen_manifest, 0.3),
    (gen_safetensors, 0.2),
    (gen_gguf, 0.12),
    (gen_pickle, 0.08),
]


@pytest.mark.slow
@pytest.mark.parametrize("gen,share", GENERATORS, ids=[g.__name__ for g, _ in GENERATORS])
def test_structure_aware_fuzz(gen: Callable[[random.Random], None], share: float) -> None:
    cases = max(1, int(CASES * share))
    deadline = time.monotonic() + SECONDS * share
    for seed in range(cases):
        try:
            gen(random.Random(seed))
        except Exception as e:  # noqa: BLE001 - any other exception is the finding
            raise AssertionError(f"{gen.__name__} seed {seed}: {type(e).__name__}: {e}") from e
        if time.monotonic() > deadline:
            pytest.fail(f"{gen.__name__}: only {seed + 1} of {cases} cases within {SECONDS * share:.0f} s")
