"""Delta codecs (xor, sparse, lowrank) and the chooser: bit-exact, automatic, bounded chains."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes

from git_theta_like import codecs
from git_theta_like.codecs import bits, lowrank, planes, sparse, subtract, xor
from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.manifest import Manifest

FLOATS = ["F64", "F32", "F16", "BF16"]


def float_bits(
    rng: np.random.Generator, dtype: str, shape: tuple[int, ...], scale: float = 0.05
) -> np.ndarray:
    """Random floats of dtype as their bit patterns, with NaN payloads, -0.0, inf, subnormals."""
    x = rng.standard_normal(shape) * scale
    out = bits.from_float64(x.reshape(-1), dtype).copy()
    specials = {
        "F64": [0x7FF8000000000123, 0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000, 1],
        "F32": [0x7FC01234, 0x80000000, 0x7F800000, 0xFF800000, 1],
        "F16": [0x7E03, 0x8000, 0x7C00, 0xFC00, 1],
        "BF16": [0x7FC1, 0x8000, 0x7F80, 0xFF80, 1],
    }[dtype]
    out[: len(specials)] = np.array(specials, dtype=out.dtype)
    return out


def roundtrip(new: np.ndarray, base: np.ndarray, dtype: str, shape: tuple[int, ...], **kw) -> str:  # type: ignore[no-untyped-def]
    raw = new.tobytes()
    enc = codecs.encode_delta(
        raw, base.tobytes(), dtype, shape, hashlib.sha256(raw).hexdigest(), "0" * 64, 1, **kw
    )
    payload = memoryview(b"".join(bytes(p) for p in enc.parts))
    out = codecs.decode(enc.header, payload, base=base.tobytes() if enc.header.base else None)
    assert bytes(out) == raw, f"{enc.header.codec} is not bit-exact for {dtype}"
    return enc.header.codec


@pytest.mark.parametrize("dtype", FLOATS)
def test_each_codec_is_bit_exact_for_every_float_dtype(dtype: str) -> None:
    rng = np.random.default_rng(0)
    shape = (64, 96)
    base = float_bits(rng, dtype, shape)
    n = base.size
    # xor: a dense small update (full fine-tune)
    x = bits.to_float64(base, dtype)
    dense = bits.from_float64(x * (1 + rng.standard_normal(n) * 1e-3), dtype)
    dense[:5] = base[:5] ^ np.array([1, 1, 1, 1, 1], dtype=base.dtype)  # flip specials' low bits too
    assert roundtrip(dense, base, dtype, shape) in ("sub", "xor", "sparse", "planes", "exponent", "lowrank")
    for dense_codec in (subtract, xor):  # xor: what objects written before sub hold
        payload = dense_codec.encode(dense, base)
        assert bytes(dense_codec.decode_elements(memoryview(payload), base)) == dense.tobytes()
    # sparse: 1% of entries
    sp = base.copy()
    idx = rng.choice(n, n // 100, replace=False)
    sp[idx] = float_bits(rng, dtype, (len(idx),), 1.0)
    sp[idx[0]] ^= 1  # make sure at least one changes
    assert roundtrip(sp, base, dtype, shape) == "sparse"
    payload = sparse.encode(sp, base)
    assert bytes(sparse.decode_elements(memoryview(payload), base)) == sp.tobytes()
    # lowrank: a rank-3 update merged into the weights, specials left as they were
    u = rng.standard_normal((shape[0], 3)) * 0.05
    v = rng.standard_normal((3, shape[1])) * 0.05
    lr = bits.from_float64((x.reshape(shape) + u @ v).reshape(-1), dtype)
    lr[:5] = base[:5]
    payload, params = lowrank.encode(lr, base, dtype, shape, u, v)
    assert bytes(lowrank.decode_elements(memoryview(payload), base, dtype, params)) == lr.tobytes()


def test_sub_wraps_exactly_at_every_width_and_old_xor_objects_still_decode() -> None:
    """sub's arithmetic is modulo 2^bits: differences across the whole range (0 <-> max, NaN and
    infinity bit patterns, -0.0) come back exact; an xor delta (what the chooser wrote before
    sub existed) decodes through the registry as before."""
    rng = np.random.default_rng(9)
    for itemsize in (1, 2, 4, 8):
        u = bits.UINT[itemsize]
        top = np.iinfo(u).max
        base = np.array([0, top, 1, top - 1, 0, top // 2, top // 2 + 1], dtype=u)
        new = np.array([top, 0, top, 0, 0, top // 2 + 1, top // 2], dtype=u)
        back = subtract.decode_elements(memoryview(subtract.encode(new, base)), base)
        assert bytes(back) == new.tobytes(), itemsize
        many = np.frombuffer(rng.bytes(4096 * itemsize), dtype=u)
        other = np.frombuffer(rng.bytes(4096 * itemsize), dtype=u)
        assert bytes(subtract.decode_elements(memoryview(subtract.encode(other, many)), many)) == (
            other.tobytes()
        )
    base = float_bits(rng, "F32", (256,))
    new = base ^ np.uint32(0x5)
    raw = new.tobytes()
    payload = xor.encode(new, base)
    digest = hashlib.sha256(raw).hexdigest()
    header = ObjectHeader("xor", "F32", (256,), len(raw), digest, {"depth": 1}, "0" * 64)
    assert bytes(codecs.decode(header, memoryview(payload), base=base.tobytes())) == raw


def test_sub_codes_a_dense_fine_tune_smaller_than_xor() -> None:
    """The point of sub: a weight that moved a few units in the last place differs by a small
    integer, where its XOR scatters carries (the chooser keeps whichever is smaller)."""
    rng = np.random.default_rng(10)
    w = (rng.standard_normal(1 << 16) * 0.05).astype(np.float32)
    w2 = (w * (1 + rng.standard_normal(w.size).astype(np.float32) * 1e-4)).astype(np.float32)
    a, b = w.view(np.uint32), w2.view(np.uint32)
    assert len(subtract.encode(b, a)) < 0.95 * len(xor.encode(b, a))


def test_deltas_computed_chunk_by_chunk_are_the_bytes_of_the_whole_difference() -> None:
    """sub and xor compute their difference one planes chunk at a time (no tensor-sized
    temporary): the payload is byte for byte what encoding the whole difference gives, across
    several chunks, a short last chunk and bytes that form no whole elements."""
    rng = np.random.default_rng(11)
    n = (2 * planes.CHUNK + 12_344) // 4
    base = float_bits(rng, "F32", (n,))
    new = bits.from_float64(bits.to_float64(base, "F32") * (1 + rng.standard_normal(n) * 1e-4), "F32")
    whole_sub = new - base
    signed = whole_sub.view(np.int32)
    zz = ((signed << 1) ^ (signed >> 31)).view(np.uint32)
    assert subtract.encode(new, base) == bits.pack_section(zz, 4)
    assert xor.encode(new, base) == bits.pack_section(new ^ base, 4)
    assert bytes(subtract.decode_elements(memoryview(subtract.encode(new, base)), base)) == new.tobytes()
    odd = np.frombuffer(rng.bytes(planes.CHUNK + 7), dtype=np.uint8)
    other = odd ^ np.uint8(3)
    assert xor.encode(other, odd) == bits.pack_section(other ^ odd, 1)


def test_a_dense_delta_that_cannot_fit_the_chains_bound_is_not_encoded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the chain's cost bound leaves less room than a dense delta's estimate (two samples)
    by SKIP_MARGIN, the chooser writes the keyframe without encoding that delta: the same
    object as before, and no tensor-sized delta computed only to be thrown away. With room, the
    delta is encoded, and the estimate is close to its real size."""
    from git_theta_like.codecs import chooser

    rng = np.random.default_rng(12)
    shape = (512, 1024)
    base = float_bits(rng, "F32", shape)
    new = bits.from_float64(bits.to_float64(base, "F32") * (1 + rng.standard_normal(base.size) * 1e-3), "F32")
    raw = new.tobytes()
    digest = hashlib.sha256(raw).hexdigest()
    encoded: list[int] = []
    real = subtract.encode

    def counting(a: np.ndarray, b: np.ndarray) -> bytearray:
        encoded.append(a.size)
        return real(a, b)

    monkeypatch.setattr(subtract, "encode", counting)
    opts = codecs.DeltaOptions(lowrank=False)
    args = (raw, base.tobytes(), "F32", shape, digest, "0" * 64, 1, opts)
    tight = codecs.encode_delta(*args, room=len(raw) // 20)
    assert tight.header.codec == "exponent" and tight.header.base is None
    assert tight.parts == codecs.encode(raw, "F32", shape, digest).parts
    assert max(encoded) <= chooser.PROBE_ELEMENTS  # the samples only
    encoded.clear()
    roomy = codecs.encode_delta(*args, room=len(raw))
    assert roomy.header.codec == "sub" and max(encoded) == base.size
    ((_, estimate),) = chooser._dense_delta_codecs(new, base)
    assert estimate is not None and 0.8 < estimate / roomy.payload_size < 1.25


def test_fp8_and_ints_use_xor_and_sparse_exactly() -> None:
    rng = np.random.default_rng(1)
    for dtype, itemsize in (("F8_E4M3", 1), ("F8_E5M2", 1), ("I64", 8), ("U8", 1)):
        base = np.frombuffer(rng.bytes(4096 * itemsize), dtype=bits.UINT[itemsize]).copy()
        new = base.copy()
        new[::100] ^= 3
        assert roundtrip(new, base, dtype, (4096,)) in ("sparse", "sub", "xor")
        new[::2] = np.frombuffer(rng.bytes(2048 * itemsize), dtype=base.dtype)
        assert roundtrip(new, base, dtype, (4096,)) in ("sub", "xor", "planes", "exponent", "raw")


def test_rank_r_delta_of_bf16_matrix_is_lowrank_and_exact() -> None:
    rng = np.random.default_rng(2)
    m, n, r = 256, 512, 4
    base = float_bits(rng, "BF16", (m, n))
    base[:5] = base[5:10]  # no specials: a realistic weight matrix
    u = rng.standard_normal((m, r)) * 0.03
    v = rng.standard_normal((r, n)) * 0.03
    new = bits.from_float64((bits.to_float64(base, "BF16").reshape(m, n) + u @ v).reshape(-1), "BF16")
    assert roundtrip(new, base, "BF16", (m, n)) == "lowrank"


def test_lowrank_reconstruction_is_exact_in_any_summation_order() -> None:
    rng = np.random.default_rng(3)
    u, v = rng.standard_normal((50, 16)), rng.standard_normal((16, 70))
    iu, su, iv, sv = lowrank.quantize_factors(u, v)
    a = iu.astype(np.float64) @ iv.astype(np.float64)
    b = np.zeros_like(a)
    for k in reversed(range(16)):  # another order, element by element
        b += np.outer(iu[:, k].astype(np.float64), iv[k].astype(np.float64))
    assert np.array_equal(a, b)
    exact = iu.astype(object) @ iv.astype(object)  # Python integers: no rounding at all
    assert np.array_equal(a.astype(np.int64), exact.astype(np.int64))


# ------------------------------------------------------------------ through git


def st(tensors: dict[str, np.ndarray], dtype: str = "F32") -> bytes:
    return safetensors_bytes({k: (dtype, a.shape, a.tobytes()) for k, a in tensors.items()})


def manifest(repo: Path, rev: str, path: str) -> Manifest:
    return Manifest.from_text(git(repo, "show", f"{rev}:{path}").stdout)


def codec_of(m: Manifest, name: str) -> tuple[str, int]:
    t = next(t for t in m.tensors if t.name == name)
    return t.obj.codec, int(dict(t.obj.extra).get("depth", 0))


def test_finetunes_are_stored_as_deltas_automatically(repo: Path) -> None:
    # a dense fine-tune's xor delta on its keyframe costs more than the tensor's raw bytes: the
    # default chain-cost bound (1.0) would store a keyframe (tests/test_chain_cost.py)
    git(repo, "config", "theta-like.maxChainRatio", "2")
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((128, 256)) * 0.05).astype(np.float32)
    b = np.zeros(128, np.float32)
    (repo / "m.safetensors").write_bytes(st({"w": w, "b": b}))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "base")
    w2 = (w + rng.standard_normal(w.shape).astype(np.float32) * 1e-4).astype(np.float32)
    (repo / "m.safetensors").write_bytes(st({"w": w2, "b": b + 0.5}))
    git(repo, "commit", "-qam", "ft")
    m = manifest(repo, "HEAD", "m.safetensors")
    assert codec_of(m, "w") == ("sub", 1)  # integer differences: smaller than xor here
    assert codec_of(m, "b")[1] <= 1
    base_oid = next(t for t in manifest(repo, "HEAD~1", "m.safetensors").tensors if t.name == "w").obj.oid
    assert dict(next(t for t in m.tensors if t.name == "w").obj.extra)["base"] == base_oid
    shown = gtl(repo, "show", "HEAD", "m.safetensors").stdout
    assert "sub" in shown and " w" in shown
    data = (repo / "m.safetensors").read_bytes()
    (repo / "m.safetensors").unlink()
    git(repo, "checkout", "--", "m.safetensors")
    assert (repo / "m.safetensors").read_bytes() == data


@pytest.mark.slow
def test_chains_are_bounded_by_keyframes(repo: Path) -> None:
    git(repo, "config", "theta-like.maxChainDepth", "3")
    rng = np.random.default_rng(5)
    w = (rng.standard_normal(4096) * 0.05).astype(np.float32)
    depths, versions = [], []
    for i in range(8):
        w = w.copy()
        w[rng.choice(w.size, 40, replace=False)] += 0.01
        data = st({"w": w})
        versions.append(data)
        (repo / "m.safetensors").write_bytes(data)
        git(repo, "add", "m.safetensors")
        git(repo, "commit", "-qm", f"v{i}")
        depths.append(codec_of(manifest(repo, "HEAD", "m.safetensors"), "w")[1])
    assert depths == [0, 1, 2, 3, 0, 1, 2, 3]
    for i, data in enumerate(versions):
        git(repo, "checkout", f"HEAD~{7 - i}", "--", "m.safetensors")
        assert (repo / "m.safetensors").read_bytes() == data


def test_rebase_and_cherry_pick_of_delta_commits_check_out_exactly(repo: Path) -> None:
    rng = np.random.default_rng(6)
    w = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    (repo / "m.safetensors").write_bytes(st({"w": w, "v": w.T.copy()}))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "base")
    git(repo, "branch", "side")
    w2 = w.copy()
    w2[0, :5] += 1
    ft = st({"w": w2, "v": w.T.copy()})
    (repo / "m.safetensors").write_bytes(ft)
    git(repo, "commit", "-qam", "ft on main")
    git(repo, "checkout", "-q", "side")
    (repo / "other.txt").write_text("x")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "unrelated")
    git(repo, "cherry-pick", "main")
    assert (repo / "m.safetensors").read_bytes() == ft
    git(repo, "checkout", "-q", "main")
    git(repo, "rebase", "-q", "side")
    (repo / "m.safetensors").unlink()
    git(repo, "checkout", "--", "m.safetensors")
    assert (repo / "m.safetensors").read_bytes() == ft
    assert git(repo, "status", "--porcelain").stdout == ""


def test_renamed_tensors_find_their_parent(repo: Path) -> None:
    rng = np.random.default_rng(7)
    body = {
        f"encoder.{i}.weight": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32) for i in range(3)
    }
    (repo / "m.safetensors").write_bytes(st(body))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "body")
    renamed = {f"bert.{k}": (a + 1e-4).astype(np.float32) for k, a in body.items()}
    renamed["classifier.weight"] = np.zeros((2, 64), np.float32)
    (repo / "m.safetensors").write_bytes(st(renamed))
    git(repo, "commit", "-qam", "add a head")
    m = manifest(repo, "HEAD", "m.safetensors")
    for name in renamed:
        if name.startswith("bert."):
            codec, depth = codec_of(m, name)
            assert depth == 1 and codec in ("sub", "xor", "sparse", "lowrank"), (name, codec)


def test_lora_adapter_side_load_uses_its_exact_factors(repo: Path, tmp_path: Path) -> None:
    # the factors and residual of a tensor this small cost more than its keyframe leaves under the
    # default chain-cost bound (1.0x the raw bytes): this test is about the factors being used
    git(repo, "config", "theta-like.maxChainRatio", "2")
    rng = np.random.default_rng(8)
    m_, n_, r = 96, 128, 4
    w = (rng.standard_normal((m_, n_)) * 0.05).astype(np.float32)
    (repo / "m.safetensors").write_bytes(st({"encoder.q.weight": w}))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "base")
    a = (rng.standard_normal((r, n_)) * 0.05).astype(np.float32)
    b = (rng.standard_normal((m_, r)) * 0.05).astype(np.float32)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(
        st({"base_model.model.encoder.q.lora_A.weight": a, "base_model.model.encoder.q.lora_B.weight": b})
    )
    (adapter / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": 8}))
    merged = (w + (b @ a) * 2.0).astype(np.float32)
    (repo / "m.safetensors").write_bytes(st({"encoder.q.weight": merged}))
    out = gtl(repo, "add", "m.safetensors", "--lora", str(adapter))
    assert "1 LoRA factor pairs" in out.stderr
    git(repo, "commit", "-qm", "merged lora")
    t = manifest(repo, "HEAD", "m.safetensors").tensors[0]
    assert t.obj.codec == "lowrank" and t.obj.stored < 0.2 * t.length
    (repo / "m.safetensors").unlink()
    git(repo, "checkout", "--", "m.safetensors")
    assert np.array_equal(
        np.frombuffer((repo / "m.safetensors").read_bytes()[-merged.nbytes :], np.float32), merged.reshape(-1)
    )


def test_bad_lora_adapter_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "a.safetensors").write_bytes(st({"x": np.zeros(3, np.float32)}))
    r = gtl(repo, "add", "x.safetensors", "--lora", str(tmp_path / "a.safetensors"), check=False)
    assert r.returncode == 1 and "no lora_A/lora_B pairs" in r.stderr
