"""Issue 14 item 8: crafted checkpoint files through the real `git add`.

A header may claim any size; what clean allocates is bounded by the bytes that exist. Each file
goes through `git add` in a child whose address space is limited (RLIMIT_AS) and whose peak RSS
is measured; it must be stored (whole, when it does not parse) and checked out byte for byte.
The pickle cases go through the reader directly, bounded by tracemalloc and by counts.
"""

from __future__ import annotations

import io
import json
import resource
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from conftest import git, gtl

from git_theta_like.errors import FormatError
from git_theta_like.formats.pytorch import pickle_reader
from git_theta_like.formats.pytorch.pickle_reader import PairDict, read_torch_pickle
from git_theta_like.manifest import Manifest

GIB = 1 << 30
MIB = 1 << 20
AS_LIMIT = 2 * GIB  # the address space of `git add` here: below every size claimed
RSS_LIMIT = 700 * MIB  # peak RSS of the filter: 2x the largest actual region + 300 MB, and margin

# Runs argv in a child with RLIMIT_AS, prints the peak RSS (KiB) of its descendants.
_MEASURE = """
import resource, subprocess, sys
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
p = subprocess.run(sys.argv[2:], preexec_fn=cap, capture_output=True)
sys.stderr.buffer.write(p.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(p.returncode)
"""


def add_measured(repo: Path, path: str) -> tuple[int, str]:
    """`git add path` under AS_LIMIT; returns (peak RSS in bytes of git and its filter, stderr)."""
    p = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(AS_LIMIT), "git", "add", path],
        cwd=repo,
        capture_output=True,
        timeout=120,
    )
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0, err
    assert "Traceback" not in err and "MemoryError" not in err, err
    return int(p.stdout.split()[-1]) * 1024, err


def stored_whole_and_exact(repo: Path, path: str, data: bytes) -> None:
    m = Manifest.from_bytes(git(repo, "show", f":{path}").stdout.encode())
    assert m.format == "opaque" and m.size == len(data)
    git(repo, "commit", "-qm", f"add {path}")
    (repo / path).unlink()
    git(repo, "checkout", "--", path)
    assert (repo / path).read_bytes() == data


def st_claiming(n: int, body: bytes = b"\0" * 16) -> bytes:
    """A safetensors file whose one tensor claims n bytes; only `body` follows the header."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    return struct.pack("<Q", len(header)) + header + body


@pytest.mark.parametrize("claimed", [3 * GIB // 2, 100 * 10**9], ids=["1.5GB", "100GB"])
def test_safetensors_header_claiming_more_than_exists(repo: Path, claimed: int) -> None:
    """An 89-byte header claiming 1.5 GB (or 100 GB) with a 16-byte body: `git add` succeeds in
    bounded memory, warns, stores the file whole; checkout gives the exact bytes."""
    data = st_claiming(claimed)
    assert len(data) < 120
    (repo / "m.safetensors").write_bytes(data)
    rss, err = add_measured(repo, "m.safetensors")
    assert rss < RSS_LIMIT, f"peak RSS {rss >> 20} MiB"
    assert "m.safetensors: not split as safetensors" in err and "stored whole" in err, err
    stored_whole_and_exact(repo, "m.safetensors", data)


def test_safetensors_header_nested_too_deeply(repo: Path) -> None:
    """A 100 KB header of nested brackets (json.loads raises RecursionError): stored whole."""
    header = b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    data = struct.pack("<Q", len(header)) + header
    (repo / "deep.safetensors").write_bytes(data)
    rss, err = add_measured(repo, "deep.safetensors")
    assert "nests too deeply" in err and "stored whole" in err, err
    stored_whole_and_exact(repo, "deep.safetensors", data)


def add_within_300mb(repo: Path, name: str, data: bytes) -> tuple[Manifest, str]:
    """Write data at name and `git add` it, its peak RSS under 300 MiB (the bound when a file
    holds no tensor to speak of); the staged manifest and the filter's stderr."""
    (repo / name).write_bytes(data)
    rss, err = add_measured(repo, name)
    assert rss < 300 * MIB, f"peak RSS {rss >> 20} MiB"
    return Manifest.from_bytes(git(repo, "show", f":{name}").stdout.encode()), err


def st_with_header(extra: bytes) -> bytes:
    """A safetensors file with one 16-byte tensor and `extra` JSON members in its header."""
    entry = json.dumps({"w": {"dtype": "U8", "shape": [16], "data_offsets": [0, 16]}}).encode()
    header = entry[:-1] + b", " + extra + b"}"
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bytes(range(16))


@pytest.mark.slow
@pytest.mark.parametrize("mib", [15, 17])
def test_safetensors_header_held_within_the_bound(repo: Path, mib: int) -> None:
    """json.loads of millions of tiny values takes ~10 bytes a header byte: a header over
    MAX_SPLIT_HEADER (16 MiB) is not parsed, and `git add` stays within 300 MB either way (a
    90 MB header of ints took 850 MB)."""
    extra = b'"__metadata__": {"k": "v"}, "x": [' + b"1," * (mib * MIB // 2) + b"1]"
    data = st_with_header(extra)
    m, err = add_within_300mb(repo, "m.safetensors", data)
    if mib < 16:  # parsed: the stray "x" member then makes it whole
        assert "header entry is not an object" in err
    else:
        assert "over the 16777216 split here" in err and "stored whole" in err, err
    assert m.format == "opaque"
    stored_whole_and_exact(repo, "m.safetensors", data)


def test_safetensors_header_under_the_bound_is_split(repo: Path) -> None:
    data = st_with_header(b'"__metadata__": {"k": "' + b"v" * (15 * MIB) + b'"}')
    m, err = add_within_300mb(repo, "m.safetensors", data)
    assert m.format == "safetensors" and "warning" not in err


@pytest.mark.slow
@pytest.mark.parametrize("mib", [60, 100])
def test_gguf_header_held_within_the_bound(repo: Path, mib: int) -> None:
    """A GGUF header (a vocabulary, say) is held about twice over: up to 64 MiB it is split, past
    it stored whole, and `git add` stays within 300 MB (a 200 MiB one took 460 MB)."""
    gtl(repo, "track", "*.gguf")

    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b

    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 1)
    head += s(b"big.vocab") + struct.pack("<I", 8) + s(b"v" * (mib * MIB))
    head += s(b"w") + struct.pack("<I", 1) + struct.pack("<Q", 1024) + struct.pack("<IQ", 0, 0)
    head += b"\0" * (-len(head) % 32)
    data = head + b"\x01" * 4096
    m, err = add_within_300mb(repo, "m.gguf", data)
    if mib < 64:
        assert m.format == "gguf" and "warning" not in err
    else:
        assert "GGUF header" in err and "67108864" in err and "stored whole" in err, err
        stored_whole_and_exact(repo, "m.gguf", data)


def gguf_claiming(nbytes: int, body: int) -> bytes:
    """A GGUF v3 file with one F32 tensor of nbytes and `body` bytes of data after the header."""

    def s(b: bytes) -> bytes:
        return struct.pack("<Q", len(b)) + b

    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 0)
    head += s(b"w") + struct.pack("<I", 1) + struct.pack("<Q", nbytes // 4) + struct.pack("<IQ", 0, 0)
    head += b"\0" * (-len(head) % 32)
    return head + b"\x01" * body


def test_gguf_claiming_more_than_exists(repo: Path) -> None:
    """70 MiB of GGUF whose tensor claims 2 GiB: the region grows as its bytes arrive (the old
    reader allocated the claimed 2 GiB once 64 MiB had arrived), so `git add` stays within
    2x the bytes that exist + 300 MB; stored whole, checked out exact."""
    gtl(repo, "track", "*.gguf")
    data = gguf_claiming(2 * GIB, 70 * MIB)
    (repo / "m.gguf").write_bytes(data)
    rss, err = add_measured(repo, "m.gguf")
    assert rss < RSS_LIMIT, f"peak RSS {rss >> 20} MiB"
    assert "m.gguf: not split as gguf" in err and "file ends inside tensor 'w'" in err, err
    stored_whole_and_exact(repo, "m.gguf", data)


# ------------------------------------------------------------------ the pickle reader

M61 = (1 << 61) - 1  # hash(k * M61) == 0 for every int k: every key collides


def colliding_keys_pickle(n: int) -> bytes:
    """A protocol-2 pickle of a dict with n int keys that all hash alike (LONG1 keys)."""
    items = []
    for k in range(1, n + 1):
        kb = (k * M61).to_bytes(12, "little", signed=True)
        items.append(b"\x8a" + bytes([len(kb)]) + kb + b"N")
    return b"\x80\x02}(" + b"".join(items) + b"u."


def references_pickle(n: int) -> bytes:
    """A protocol-2 pickle: a list of n tensors, each `_rebuild_tensor_v2` of one memoized
    argument tuple (one storage): 5 bytes a reference."""
    head = (
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00"
        b"((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
        b"X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89}tq\x010"
    )
    return head + b"](" + b"h\x00h\x01R" * n + b"e."


@pytest.mark.slow
@pytest.mark.parametrize("mib", [31, 120])
def test_pickle_holding_large_python_objects(repo: Path, mib: int) -> None:
    """A checkpoint whose data.pkl holds big Python objects besides its tensor (a vocabulary, a
    training log): up to MAX_PICKLE_BYTES (32 MiB) it is split, past it stored whole; either
    way `git add` stays within 300 MB (no tensor to speak of). A 250 MiB one used to take 1.3 GB
    and two minutes: the reader's peek buffer was reallocated for every 64 KiB git sent."""
    torch = pytest.importorskip("torch")
    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0), "blobs": [bytes([i]) * MIB for i in range(mib)]}, buf)
    data = buf.getvalue()
    m, err = add_within_300mb(repo, "m.pt", data)
    if mib < 32:
        assert m.format == "pytorch" and "warning" not in err
    else:
        assert m.format == "opaque"
        assert "stored whole" in err and "is over the 33554432 bytes allowed" in err
    git(repo, "commit", "-qm", "m")
    (repo / "m.pt").unlink()
    git(repo, "checkout", "--", "m.pt")
    assert (repo / "m.pt").read_bytes() == data


def test_pickle_dict_of_colliding_keys_is_never_hashed() -> None:
    """60k colliding int keys (23-52 s in a real dict: quadratic): the reader keeps them as a
    list of pairs, never hashing one; its work is linear in the opcodes (counted by the
    profiler: a bounded number of Python calls per key) and its memory bounded."""

    def profiled(n: int) -> tuple[object, int]:
        calls = 0

        def count(frame: object, event: str, arg: object) -> None:
            nonlocal calls
            calls += 1

        sys.setprofile(count)
        try:
            root = read_torch_pickle(colliding_keys_pickle(n)).root
        finally:
            sys.setprofile(None)
        return root, calls

    n = 60_000
    half, calls_half = profiled(n // 2)
    root, calls = profiled(n)
    assert isinstance(root, PairDict) and len(root) == n
    assert root.pairs[0] == (M61, None) and root.pairs[-1] == (n * M61, None)
    assert calls <= 2.1 * calls_half, (calls_half, calls)  # twice the keys, twice the work
    data = colliding_keys_pickle(n)
    tracemalloc.start()
    try:
        read_torch_pickle(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * n, peak  # about a pair, an int and a list slot per key


def test_pickle_references_to_one_storage_cost_a_pointer_each() -> None:
    """50k references to one storage (the shape of 4M in 20 MB): one TensorRef is built and the
    rest are pointers to it; peak memory stays under 64 bytes a reference."""
    n = 50_000
    data = references_pickle(n)
    tracemalloc.start()
    try:
        contents = read_torch_pickle(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(contents.root, list) and len(contents.root) == n
    assert len(contents.tensors) == 1 and len(contents.named) == 1
    assert contents.named[0][0] == "0" and list(contents.storages) == ["0"]
    assert peak < 64 * n, peak


def test_pickle_absurd_counts_are_format_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """More opcodes than MAX_PICKLE_OPS, or more distinct tensors than MAX_TENSORS: FormatError
    (the file is stored whole), found before the memory they would take is spent."""
    monkeypatch.setattr(pickle_reader, "MAX_PICKLE_OPS", 1000)
    with pytest.raises(FormatError, match="more than 1000 opcodes"):
        read_torch_pickle(references_pickle(1000))
    monkeypatch.setattr(pickle_reader, "MAX_PICKLE_OPS", 1 << 22)
    monkeypatch.setattr(pickle_reader, "MAX_TENSORS", 10)
    # distinct offsets (BININT1 k): a new view of the storage each time
    items = b"".join(b"h\x00(h\x02K" + bytes([k]) + b"K\x01\x85K\x01\x85\x89}tR" for k in range(20))
    storage = (
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x40tQq\x020"
    )
    data = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00" + storage + b"](" + items + b"e."
    with pytest.raises(FormatError, match="more than 10 tensors"):
        read_torch_pickle(data)
    monkeypatch.setattr(pickle_reader, "MAX_TENSORS", 20)
    assert len(read_torch_pickle(data).tensors) == 20


def test_address_space_limit_is_enforced() -> None:
    """The RLIMIT_AS the tests above rely on does stop an allocation of a claimed size."""
    code = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))\n"
        f"bytearray({3 * GIB})"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert p.returncode != 0 and b"MemoryError" in p.stderr
    assert resource.getrlimit(resource.RLIMIT_AS)[0] != AS_LIMIT  # this process is not limited
