"""Semantic diffs: statistics against numpy, renames and reshapes, JSON schema, exit codes,
thresholds, Markdown, git's diff driver and textconv, log, and what is read."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from conftest import git, gtl, run
from fixtures import safetensors_bytes
from referencing import Registry, Resource

from git_theta_like.codecs import bits
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest
from git_theta_like.semdiff import compare, model, sides, stats
from git_theta_like.store import store_of

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"

# ------------------------------------------------------------------ helpers


def bits_of(x: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values -> the dtype's bit patterns (round to nearest even)."""
    return bits.from_float64(np.asarray(x, np.float64).reshape(-1), dtype).reshape(np.shape(x))


def values_of(bits: np.ndarray, dtype: str) -> np.ndarray:
    """The dtype's bit patterns -> float64, written independently of the code under test."""
    b = np.ascontiguousarray(bits).reshape(-1)
    if dtype == "F64":
        return b.view(np.float64).copy()
    if dtype == "F32":
        return b.view(np.float32).astype(np.float64)
    if dtype == "F16":
        return b.view(np.float16).astype(np.float64)
    if dtype == "BF16":
        return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    raise AssertionError(dtype)


def st(tensors: dict[str, tuple[str, np.ndarray]]) -> bytes:
    return safetensors_bytes(
        {k: (d, a.shape, np.ascontiguousarray(a).tobytes()) for k, (d, a) in tensors.items()}
    )


def commit(repo: Path, name: str, data: bytes, msg: str) -> None:
    (repo / name).write_bytes(data)
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)


def diff_json(repo: Path, *args: str) -> dict:  # type: ignore[type-arg]
    return json.loads(gtl(repo, "diff", "--format", "json", *args).stdout)


def by_name(doc: dict, path: str | None = None) -> dict[str, dict]:  # type: ignore[type-arg]
    files = [f for f in doc["files"] if path is None or f["path"] == path]
    return {t["name"]: t for f in files for t in f.get("tensors", [])}


def validator(name: str) -> jsonschema.protocols.Validator:
    schemas = {
        p.name: json.loads(p.read_text()) for p in (DOCS / "diff-schema.json", DOCS / "log-schema.json")
    }
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    schema = schemas[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def ref_stats(old: np.ndarray, new: np.ndarray) -> dict[str, float]:
    """The statistics, by plain numpy on float64 values."""
    fin = np.isfinite(old) & np.isfinite(new)
    a, b = old[fin], new[fin]
    d = b - a
    out = {
        "l2_delta": float(np.linalg.norm(d)),
        "l2_old": float(np.linalg.norm(a)),
        "l2_new": float(np.linalg.norm(b)),
        "max_abs_delta": float(np.abs(d).max()) if d.size else 0.0,
        "nonfinite": int((~fin).sum()),
    }
    out["relative_change"] = out["l2_delta"] / out["l2_old"] if out["l2_old"] else None
    out["cosine"] = (
        float(a @ b / (out["l2_old"] * out["l2_new"])) if out["l2_old"] and out["l2_new"] else None
    )
    return out


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.isclose(a, b, rtol=1e-9, atol=1e-300))


# ------------------------------------------------------------------ statistics against numpy


def test_each_statistic_matches_numpy_on_a_real_history(repo: Path) -> None:
    rng = np.random.default_rng(0)
    old: dict[str, tuple[str, np.ndarray]] = {}
    new: dict[str, tuple[str, np.ndarray]] = {}
    for dtype, shape in (("F32", (64, 48)), ("F16", (32, 32)), ("BF16", (40, 24)), ("F64", (10, 10))):
        x = rng.standard_normal(shape) * 0.05
        a = bits_of(x, dtype)
        b = bits_of(x + rng.standard_normal(shape) * 1e-3, dtype)
        if dtype == "F32":  # NaN and infinities on either side are left out of the norms
            a.reshape(-1)[:3] = np.array([0x7FC00000, 0x7F800000, 0xFF800000], np.uint32)
            b.reshape(-1)[1] = 0x7FC00000
        old[f"w.{dtype.lower()}"], new[f"w.{dtype.lower()}"] = (dtype, a), (dtype, b)
    ids = rng.integers(0, 1000, 50).astype(np.int64)
    ids2 = ids.copy()
    ids2[[3, 7, 11]] += 1
    old["ids"], new["ids"] = ("I64", ids), ("I64", ids2)
    mask = rng.random(30) > 0.5
    old["mask"], new["mask"] = ("BOOL", mask), ("BOOL", ~mask)
    old["zero.bias"], new["zero.bias"] = (
        ("F32", np.zeros(16, np.float32)),
        ("F32", np.full(16, 0.5, np.float32)),
    )
    old["same"] = new["same"] = ("F32", np.ones((4, 4), np.float32))
    commit(repo, "m.safetensors", st(old), "v1")
    commit(repo, "m.safetensors", st(new), "v2")

    doc = diff_json(repo, "HEAD~1", "HEAD")
    validator("diff-schema.json").validate(doc)
    got = by_name(doc)
    assert "same" not in got and doc["files"][0]["summary"]["unchanged"] == 1
    for name, (dtype, a) in old.items():
        if name == "same":
            continue
        b = new[name][1]
        s = got[name]["stats"]
        assert got[name]["status"] == "modified" and got[name]["content_changed"]
        assert s["numel"] == a.size
        bits_changed = int(np.count_nonzero(a.reshape(-1) != b.reshape(-1)))
        assert s["changed"] == bits_changed, name
        assert s["fraction_changed"] == pytest.approx(bits_changed / a.size, rel=1e-12)
        if dtype in ("I64", "BOOL"):
            assert s["l2_delta"] is None and s["cosine"] is None and s["relative_change"] is None
            continue
        ref = ref_stats(values_of(a, dtype), values_of(b, dtype))
        for key, want in ref.items():
            assert close(s[key], want), (name, key, s[key], want)
    assert got["w.f32"]["stats"]["nonfinite"] == 3
    assert got["zero.bias"]["stats"]["relative_change"] is None  # from an all-zero tensor
    assert got["w.f32"]["kind"]["label"] == "dense"
    assert got["ids"]["kind"]["kind"] == "sparse" and got["ids"]["kind"]["percent"] == pytest.approx(6.0)


def test_tensor_stats_across_dtypes_compare_values() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1000) * 0.1
    a, b = bits_of(x, "F32"), bits_of(x, "BF16")  # a bf16 cast
    s = stats.tensor_stats(a.tobytes(), "F32", b.tobytes(), "BF16")
    assert s is not None
    ref = ref_stats(values_of(a, "F32"), values_of(b, "BF16"))
    for key, want in ref.items():
        assert close(getattr(s, key), want), key
    assert 0 < s.relative_change < 2**-8  # bf16 keeps 8 bits of mantissa
    assert stats.tensor_stats(a.tobytes(), "F32", a[:10].tobytes(), "F32") is None  # sizes differ
    assert stats.tensor_stats(b"\x01\x02", "U8", b"\x01\x00\x02\x00", "U16") is None


def test_stats_are_chunked_for_big_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "CHUNK", 1000)
    rng = np.random.default_rng(2)
    a = (rng.standard_normal(10_007) * 0.02).astype(np.float32)
    b = a.copy()
    b[::7] += 0.001
    s = stats.tensor_stats(a.tobytes(), "F32", b.tobytes(), "F32")
    assert s is not None
    ref = ref_stats(a.astype(np.float64), b.astype(np.float64))
    for key, want in ref.items():
        assert close(getattr(s, key), want), key
    assert s.changed == int(np.count_nonzero(a != b))


def test_fp8_values() -> None:
    t = stats._f8_table
    assert t("F8_E4M3")[0x7E] == 448.0 and np.isnan(t("F8_E4M3")[0x7F]) and t("F8_E4M3")[0x01] == 2.0**-9
    assert t("F8_E5M2")[0x7B] == 57344.0 and t("F8_E5M2")[0x7C] == np.inf and np.isnan(t("F8_E5M2")[0x7D])
    assert np.isnan(t("F8_E4M3FNUZ")[0x80]) and t("F8_E4M3FNUZ")[0x00] == 0.0
    assert t("F8_E8M0")[127] == 1.0 and np.isnan(t("F8_E8M0")[0xFF])
    a = np.array([0x38, 0x40], np.uint8)  # 1.0, 2.0 in e4m3
    s = stats.tensor_stats(a.tobytes(), "F8_E4M3", np.array([0x38, 0x38], np.uint8).tobytes(), "F8_E4M3")
    assert s is not None and s.l2_delta == 1.0 and s.changed == 1


# ------------------------------------------------------------------ update kinds


def _side(dtype: str, shape: tuple[int, ...]) -> model.TensorSide:
    return model.TensorSide(dtype, shape, "0" * 64, "0" * 64, 0, "planes")


@pytest.mark.parametrize("dtype", ["F32", "BF16", "F16"])
def test_update_kinds_sparse_lowrank_dense(dtype: str) -> None:
    rng = np.random.default_rng(3)
    m, n = 256, 192
    w = rng.standard_normal((m, n)) * 0.05
    base = bits_of(w, dtype)
    side = _side(dtype, (m, n))

    def kind(new_bits: np.ndarray, codec_rank: int | None = None) -> model.UpdateKind:
        s = stats.tensor_stats(base.tobytes(), dtype, new_bits.tobytes(), dtype)
        assert s is not None
        return stats.infer_kind(s, base.tobytes(), side, new_bits.tobytes(), side, codec_rank)

    sp = base.copy().reshape(-1)
    idx = rng.choice(sp.size, sp.size // 50, replace=False)
    sp[idx] = bits_of(rng.standard_normal(idx.size), dtype)
    k = kind(sp)
    assert (
        k.kind == "sparse" and k.percent == pytest.approx(2.0, abs=0.1) and k.label.startswith("sparse 2.0")
    )
    u, v = rng.standard_normal((m, 3)) * 0.05, rng.standard_normal((3, n)) * 0.05
    assert kind(bits_of(w + u @ v, dtype)) == model.UpdateKind("lowrank", rank=3)
    assert kind(bits_of(w + rng.standard_normal((m, n)) * 0.01, dtype)).kind == "dense"
    assert kind(bits_of(w + rng.standard_normal((m, n)) * 0.01, dtype), codec_rank=5).label == "rank 5"
    assert kind(base).kind == "none"


def test_rank_probe_is_chunked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stats, "CHUNK", 500)  # blocks of a few rows
    rng = np.random.default_rng(4)
    w = rng.standard_normal((300, 200)).astype(np.float32) * 0.05
    new = (
        w + (rng.standard_normal((300, 7)) @ rng.standard_normal((7, 200))).astype(np.float32) * 0.01
    ).astype(np.float32)
    assert stats.probe_rank(w.tobytes(), "F32", new.tobytes(), "F32", (300, 200)) == 7


def test_lowrank_kind_from_the_object_header(repo: Path) -> None:
    """A merged LoRA is stored as a `lowrank` delta: the diff takes its rank from the header."""
    # factors and residual of a tensor this small cost more than the default chain-cost bound
    # leaves on its keyframe (docs/objects.md): a higher bound keeps the delta
    git(repo, "config", "theta-like.maxChainRatio", "2")
    rng = np.random.default_rng(5)
    w = (rng.standard_normal((160, 128)) * 0.05).astype(np.float32)
    commit(repo, "m.safetensors", st({"q.weight": ("F32", w)}), "base")
    merged = (w + (rng.standard_normal((160, 6)) @ rng.standard_normal((6, 128))) * 0.003).astype(np.float32)
    commit(repo, "m.safetensors", st({"q.weight": ("F32", merged)}), "lora")
    m = Manifest.from_text(git(repo, "show", "HEAD:m.safetensors").stdout)
    assert m.tensors[0].obj.codec == "lowrank"
    t = by_name(diff_json(repo, "HEAD~1", "HEAD"))["q.weight"]
    assert t["kind"] == {"kind": "lowrank", "label": "rank 6", "rank": 6, "percent": None}


# ------------------------------------------------------------------ structure


def test_renamed_reshaped_retyped_added_removed(repo: Path) -> None:
    rng = np.random.default_rng(6)

    def f32(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    a, x, r, t = f32(8, 8), f32(16, 4), f32(4, 6), f32(5)
    v1 = {
        "a.weight": ("F32", a),
        "enc.x": ("F32", x),
        "r": ("F32", r),
        "t": ("F32", t),
        "gone": ("F32", f32(3)),
    }
    v2 = {
        "bert.a.weight": ("F32", a),  # renamed, same content
        "bert.enc.x": ("F32", (x + 1e-3).astype(np.float32)),  # renamed (suffix) and changed
        "r": ("F32", r.reshape(6, 4)),  # same bytes, new shape
        "t": ("F16", t.astype(np.float16)),  # dtype changed
        "head.new": ("F32", f32(2, 8)),
    }
    commit(repo, "m.safetensors", st(v1), "v1")
    commit(repo, "m.safetensors", st(v2), "v2")
    doc = diff_json(repo, "HEAD~1", "HEAD")
    validator("diff-schema.json").validate(doc)
    got = by_name(doc)
    assert set(got) == {"bert.a.weight", "bert.enc.x", "r", "t", "head.new", "gone"}
    assert got["bert.a.weight"]["status"] == "renamed" and got["bert.a.weight"]["old_name"] == "a.weight"
    assert not got["bert.a.weight"]["content_changed"] and got["bert.a.weight"]["stats"] is None
    e = got["bert.enc.x"]
    assert e["status"] == "renamed" and e["old_name"] == "enc.x" and e["content_changed"]
    assert e["stats"]["max_abs_delta"] == pytest.approx(1e-3, rel=1e-3)
    assert got["r"]["group"] == "reshaped" and got["r"]["shape_changed"] and not got["r"]["content_changed"]
    assert got["r"]["old"]["shape"] == [4, 6] and got["r"]["new"]["shape"] == [6, 4]
    tt = got["t"]
    assert tt["group"] == "reshaped" and tt["dtype_changed"] and tt["old"]["dtype"] == "F32"
    ref = ref_stats(t.astype(np.float64), t.astype(np.float16).astype(np.float64))
    assert close(tt["stats"]["l2_delta"], ref["l2_delta"])
    assert got["head.new"]["status"] == "added" and got["head.new"]["old"] is None
    assert got["gone"]["status"] == "removed" and got["gone"]["new"] is None
    s = doc["files"][0]["summary"]
    assert (s["modified"], s["reshaped"], s["renamed"], s["added"], s["removed"]) == (0, 2, 2, 1, 1)
    text = gtl(repo, "diff", "HEAD~1", "HEAD").stdout
    assert "a.weight -> bert.a.weight" in text and "same content" in text
    assert "F32 [4,6] -> F32 [6,4]" in text and "F32 [5] -> F16 [5]" in text
    assert "+ head.new" in text and "- gone" in text
    assert "total: 0 modified, 2 reshaped, 2 renamed, 1 added, 1 removed" in text


def test_match_renames_leaves_ambiguous_pairs_alone() -> None:
    from git_theta_like.manifest import ObjectRef, TensorEntry

    def te(name: str, raw: str, shape: tuple[int, ...] = (4,)) -> TensorEntry:
        return TensorEntry(name, "F32", shape, 0, 16, ObjectRef(raw * 64, "e" * 64, 1, "planes"))

    removed = [te("x.w", "a"), te("y.w", "b")]
    added = [te("m.x.w", "c"), te("m.y.w", "d"), te("n.y.w", "f")]
    pairs = {(o.name, n.name) for o, n in compare.match_renames(removed, added)}
    assert pairs == {("x.w", "m.x.w")}  # y.w could be m.y.w or n.y.w: not a rename
    same = compare.match_renames([te("p", "a"), te("q", "b")], [te("P", "b"), te("Q", "a")])
    assert {(o.name, n.name) for o, n in same} == {("q", "P"), ("p", "Q")}


def test_biggest_changes_come_first(repo: Path) -> None:
    rng = np.random.default_rng(7)
    ws = {f"l{i}": (rng.standard_normal(100) * 0.05).astype(np.float32) for i in range(4)}
    commit(repo, "m.safetensors", st({k: ("F32", w) for k, w in ws.items()}), "v1")
    scale = {"l0": 1e-4, "l1": 1e-1, "l2": 1e-3, "l3": 1e-2}
    commit(
        repo,
        "m.safetensors",
        st({k: ("F32", (w * (1 + scale[k])).astype(np.float32)) for k, w in ws.items()}),
        "v2",
    )
    names = [t["name"] for t in diff_json(repo, "HEAD~1", "HEAD")["files"][0]["tensors"]]
    assert names == ["l1", "l3", "l2", "l0"]
    rels = [
        line.split()[0]
        for line in gtl(repo, "diff", "HEAD~1", "HEAD").stdout.splitlines()
        if line.endswith((" l0", " l1", " l2", " l3"))
    ]
    assert [float(x) for x in rels] == sorted((float(x) for x in rels), reverse=True)


# ------------------------------------------------------------------ options


def _two_versions(repo: Path, tiny: float = 1e-6, big: float = 1e-2) -> None:
    rng = np.random.default_rng(8)
    a, b, c = (rng.standard_normal((32, 32)).astype(np.float32) for _ in range(3))
    commit(repo, "m.safetensors", st({"a": ("F32", a), "b": ("F32", b), "c": ("F32", c)}), "v1")
    commit(
        repo,
        "m.safetensors",
        st(
            {
                "a": ("F32", (a * (1 + big)).astype(np.float32)),
                "b": ("F32", (b * (1 + tiny)).astype(np.float32)),
                "c": ("F32", c),
            }
        ),
        "v2",
    )


@pytest.mark.slow
def test_exit_code_quiet_and_threshold(repo: Path) -> None:
    _two_versions(repo)
    assert gtl(repo, "diff", "--exit-code", "HEAD", "HEAD").returncode == 0
    assert gtl(repo, "diff", "--exit-code").returncode == 0  # clean work tree
    r = gtl(repo, "diff", "--exit-code", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 1 and "modified: 2" in r.stdout
    r = gtl(repo, "diff", "-q", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 1 and r.stdout == ""
    assert gtl(repo, "diff", "HEAD~1", "HEAD").returncode == 0  # without --exit-code
    # tiny changes below the threshold are reported as such and don't count as differences
    r = gtl(repo, "diff", "--exit-code", "--threshold", "1e-4", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 1
    assert "modified: 1" in r.stdout and "below threshold (relative change < 0.0001): 1 tensor," in r.stdout
    doc = diff_json(repo, "--threshold", "1e-4", "HEAD~1", "HEAD")
    validator("diff-schema.json").validate(doc)
    t = by_name(doc)
    assert t["b"]["below_threshold"] and not t["a"]["below_threshold"] and doc["threshold"] == 1e-4
    assert doc["summary"]["below_threshold"] == 1 and doc["summary"]["modified"] == 1
    r = gtl(repo, "diff", "--exit-code", "--threshold", "0.5", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 0 and "below threshold" in r.stdout
    assert diff_json(repo, "--threshold", "0.5", "HEAD~1", "HEAD")["files"][0]["status"] == "unchanged"
    r = gtl(repo, "diff", "--threshold", "-1", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 2


def test_stat_reads_no_object(repo: Path) -> None:
    _two_versions(repo)
    out = gtl(repo, "diff", "--stat", "HEAD~1", "HEAD").stdout.splitlines()
    assert out[0].startswith(
        " m.safetensors | 2 modified, 0 reshaped, 0 renamed, 0 added, 0 removed, 1 unchanged"
    )
    assert out[-1].startswith(" 1 checkpoint changed: 2 modified")
    doc = diff_json(repo, "--stat", "HEAD~1", "HEAD")
    validator("diff-schema.json").validate(doc)
    assert "tensors" not in doc["files"][0] and doc["summary"]["params_changed"] is None
    r = Repo(repo)
    before = store_of(r).reads
    res = sides.diff_sides(r, model.Side("rev", "HEAD~1"), model.Side("rev", "HEAD"), stats=False)
    assert store_of(r).reads == before and res.differs


def test_markdown(repo: Path) -> None:
    _two_versions(repo)
    md = gtl(repo, "diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert md.startswith("<!-- git-theta-like diff -->\n### Checkpoint diff: `HEAD~1` → `HEAD`")
    assert "| tensor | dtype shape | rel. change | changed |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `a` |"))
    assert "| F32 [32,32] | 1.00e-02 | " in row and row.endswith("| dense |")
    assert "**1 checkpoint changed: 2 modified" in md
    stat = gtl(repo, "diff", "HEAD~1", "HEAD", "--format", "markdown", "--stat").stdout
    assert "| `m.safetensors` (modified) | 2 | 0 | 0 | 0 | 0 | - |" in stat and "| tensor |" not in stat


# ------------------------------------------------------------------ revisions and paths


@pytest.mark.slow
def test_index_worktree_cached_and_paths(repo: Path) -> None:
    rng = np.random.default_rng(10)
    a = (rng.standard_normal((20, 20)) * 0.05).astype(np.float32)
    commit(repo, "a.safetensors", st({"w": ("F32", a)}), "a")
    commit(repo, "b.safetensors", st({"w": ("F32", a)}), "b")
    (repo / "a.safetensors").write_bytes(st({"w": ("F32", (a + 0.01).astype(np.float32))}))
    (repo / "b.safetensors").write_bytes(st({"w": ("F32", (a + 0.02).astype(np.float32))}))
    wt = diff_json(repo)  # index vs working tree
    assert (wt["old"], wt["new"]) == ("index", "working tree")
    assert [f["path"] for f in wt["files"]] == ["a.safetensors", "b.safetensors"]
    assert by_name(wt, "a.safetensors")["w"]["stats"]["max_abs_delta"] == pytest.approx(0.01, rel=1e-3)
    assert gtl(repo, "diff", "--cached", "--exit-code").returncode == 0
    only_b = diff_json(repo, "--", "b.safetensors")
    assert [f["path"] for f in only_b["files"]] == ["b.safetensors"]
    assert [f["path"] for f in diff_json(repo, "HEAD", "a.safetensors")["files"]] == ["a.safetensors"]
    assert [f["path"] for f in diff_json(repo, "*.safetensors")["files"]] == [
        "a.safetensors",
        "b.safetensors",
    ]
    git(repo, "add", "a.safetensors")
    cached = diff_json(repo, "--cached")
    assert (cached["old"], cached["new"]) == ("HEAD", "index")
    assert [f["path"] for f in cached["files"]] == ["a.safetensors"]
    assert [f["path"] for f in diff_json(repo)["files"]] == ["b.safetensors"]
    assert [f["path"] for f in diff_json(repo, "HEAD")["files"]] == ["a.safetensors", "b.safetensors"]
    (repo / "b.safetensors").unlink()
    gone = diff_json(repo)
    assert gone["files"][0]["status"] == "removed" and gone["summary"]["files_removed"] == 1
    (repo / "sub").mkdir()
    commit(repo, "sub/c.safetensors", st({"w": ("F32", a)}), "c")
    (repo / "sub" / "c.safetensors").write_bytes(st({"w": ("F32", a * 2)}))
    from_sub = json.loads(
        run("git", "theta-like", "diff", "--format", "json", "--", "c.safetensors", cwd=repo / "sub").stdout
    )
    assert [f["path"] for f in from_sub["files"]] == ["sub/c.safetensors"]
    assert [f["path"] for f in diff_json(repo, "sub")["files"]] == ["sub/c.safetensors"]
    r = gtl(repo, "diff", "nosuchrev", "HEAD", "--", "a.safetensors", check=False)
    assert r.returncode == 128 and r.stderr == "fatal: bad revision 'nosuchrev'\n"


def test_ranges_and_merge_base(repo: Path) -> None:
    _two_versions(repo)
    assert diff_json(repo, "HEAD~1..HEAD")["summary"]["modified"] == 2
    git(repo, "checkout", "-q", "-b", "side", "HEAD~1")
    assert diff_json(repo, "main...side")["differs"] is False  # side has nothing since the base
    assert diff_json(repo, "side...main")["summary"]["modified"] == 2


# ------------------------------------------------------------------ through git


def _history(repo: Path) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    ws = {f"layer.{i}.weight": (rng.standard_normal((64, 64)) * 0.05).astype(np.float32) for i in range(6)}
    commit(repo, "m.safetensors", st({k: ("F32", w) for k, w in ws.items()}), "v1")
    ws2 = dict(ws)
    ws2["layer.2.weight"] = (ws["layer.2.weight"] * 1.01).astype(np.float32)
    commit(repo, "m.safetensors", st({k: ("F32", w) for k, w in ws2.items()}), "v2")
    return ws


@pytest.mark.slow
def test_git_diff_log_and_show_print_the_summary(repo: Path) -> None:
    _history(repo)
    out = git(repo, "diff", "HEAD~1", "HEAD").stdout
    assert out.startswith("diff --git a/m.safetensors b/m.safetensors\n")
    assert "modified: 1, biggest relative change first" in out and "layer.2.weight" in out
    assert "1.00e-02" in out and "total: 1 modified" in out
    for cmd in (["log", "-p", "--ext-diff", "-1"], ["show", "--ext-diff"]):
        out = git(repo, *cmd).stdout
        assert "modified: 1" in out and "layer.2.weight" in out, cmd
    # without --ext-diff, log -p and show use the textconv: one line per tensor, no offsets
    for cmd in (["log", "-p", "-1"], ["show"]):
        out = git(repo, *cmd).stdout
        minus = [ln for ln in out.splitlines() if ln.startswith("-layer")]
        plus = [ln for ln in out.splitlines() if ln.startswith("+layer")]
        assert len(minus) == len(plus) == 1 and minus[0].startswith("-layer.2.weight F32 [64,64] sha256:"), (
            out
        )
        assert " layer.1.weight F32 [64,64] sha256:" in out  # context
    # git keeps each blob's listing (diff.theta-like.cachetextconv): a second log -p runs none
    assert git(repo, "config", "diff.theta-like.cachetextconv").stdout.strip() == "true"
    assert git(repo, "rev-parse", "--verify", "-q", "refs/notes/textconv/theta-like").stdout.strip()
    trace = repo.parent / "textconv-trace"
    cached = run("env", f"GIT_TRACE={trace}", "git", "log", "-p", "-1", cwd=repo).stdout
    assert cached == git(repo, "log", "-p", "-1").stdout and "-layer.2.weight F32" in cached
    assert "diff-textconv" not in trace.read_text()
    # the textconv of the checkpoint itself (what git gives when it smudges) is the same listing
    (repo / "m.manifest").write_text(git(repo, "show", "HEAD:m.safetensors").stdout)
    listing = gtl(repo, "diff-textconv", "m.manifest").stdout
    assert gtl(repo, "diff-textconv", "m.safetensors").stdout == listing
    assert listing.startswith("# git-theta-like checkpoint: safetensors, 6 tensors, 24.58k params")
    (repo / "m.manifest").unlink()
    # with smudging forced, the driver reads the manifests from the blobs git names
    forced = run("env", "GIT_THETA_LIKE_DIFF_SMUDGE=1", "git", "diff", "HEAD~1", "HEAD", cwd=repo).stdout
    assert "modified: 1, biggest relative change first" in forced and "layer.2.weight" in forced
    stat = git(repo, "diff", "--stat", "HEAD~1", "HEAD").stdout
    assert "m.safetensors | 2 +-" in stat
    assert git(repo, "diff", "--exit-code", "HEAD~1", "HEAD", check=False).returncode == 1


@pytest.mark.slow
def test_git_diff_does_not_smudge_either_checkpoint(repo: Path) -> None:
    """git smudges blobs before it runs a diff command: the filter hands it the manifests, so
    only the changed tensor's objects are needed (the others are deleted here)."""
    _history(repo)
    old = Manifest.from_text(git(repo, "show", "HEAD~1:m.safetensors").stdout)
    new = Manifest.from_text(git(repo, "show", "HEAD:m.safetensors").stdout)
    keep = {t.obj.oid for m in (old, new) for t in m.tensors if t.name == "layer.2.weight"}
    store = store_of(Repo(repo))
    for _, ref in [*old.objects(), *new.objects()]:
        if ref.oid not in keep and store.has(ref.oid):
            store.delete(ref.oid)
    out = git(repo, "diff", "HEAD~1", "HEAD").stdout
    assert "layer.2.weight" in out and "1.00e-02" in out and "statistics unavailable" not in out
    assert "layer.2.weight" in git(repo, "show", "--ext-diff").stdout
    assert "+layer.2.weight" in git(repo, "log", "-p", "-1").stdout


@pytest.mark.slow
def test_git_diff_of_the_working_tree_and_of_new_and_deleted_files(repo: Path) -> None:
    ws = _history(repo)
    (repo / "m.safetensors").write_bytes(
        st({k: ("F32", (w + 0.5).astype(np.float32)) for k, w in ws.items()})
    )
    out = git(repo, "diff").stdout
    assert "modified: 6" in out and "total: 6 modified" in out
    git(repo, "checkout", "--", "m.safetensors")
    commit(repo, "n.safetensors", st({"x": ("F32", np.ones(3, np.float32))}), "add n")
    out = git(repo, "show", "--ext-diff").stdout
    assert "n.safetensors: new checkpoint: safetensors, 1 tensor," in out and "+ x  F32 [3]" in out
    git(repo, "rm", "-q", "n.safetensors")
    git(repo, "commit", "-qm", "rm n")
    out = git(repo, "show", "--ext-diff").stdout
    assert "n.safetensors: deleted checkpoint" in out and "- x  F32 [3]" in out


def test_files_stored_whole(repo: Path) -> None:
    commit(repo, "blob.bin", b"not a checkpoint " * 100, "v1")
    commit(repo, "blob.bin", b"still not a checkpoint " * 100, "v2")
    out = git(repo, "diff", "HEAD~1", "HEAD").stdout
    assert "blob.bin: stored whole" in out and "the file's content changed" in out
    doc = diff_json(repo, "HEAD~1", "HEAD")
    validator("diff-schema.json").validate(doc)
    assert doc["files"][0]["whole_file"] and doc["differs"]


def test_driver_falls_back_to_a_plain_diff_for_other_content(repo: Path) -> None:
    (repo / ".gitattributes").write_text("*.txt diff=theta-like\n")
    commit(repo, "a.txt", b"hello\nworld\n", "v1")
    commit(repo, "a.txt", b"hello\nthere\n", "v2")
    out = git(repo, "diff", "HEAD~1", "HEAD", "--", "a.txt").stdout
    assert "--- a/a.txt\n+++ b/a.txt\n" in out and "-world\n+there\n" in out
    r = gtl(repo, "diff-driver", "x", "y", check=False)
    assert r.returncode == 1 and "7 or 9" in r.stderr


def test_smudge_for_diff_detection() -> None:
    from git_theta_like.gitio.process import git_subcommand

    assert git_subcommand(["git", "diff", "HEAD"]) == "diff"
    assert git_subcommand(["/usr/bin/git", "-c", "a=b", "-C", "x", "--no-pager", "log", "-p"]) == "log"
    assert git_subcommand(["git", "checkout", "--", "f"]) == "checkout"
    assert git_subcommand(["python", "diff"]) is None and git_subcommand([]) is None


# ------------------------------------------------------------------ log


@pytest.mark.slow
def test_log(repo: Path) -> None:
    rng = np.random.default_rng(12)
    w = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    commit(repo, "m.safetensors", st({"w": ("F32", w), "b": ("F32", np.zeros(64, np.float32))}), "base")
    w2 = w.copy()
    w2[0, :10] += 0.1
    commit(repo, "m.safetensors", st({"w": ("F32", w2), "b": ("F32", np.zeros(64, np.float32))}), "sparse ft")
    (repo / "notes.txt").write_text("x")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "unrelated")
    commit(repo, "other.safetensors", st({"z": ("F32", np.ones(4, np.float32))}), "other")
    text = gtl(repo, "log").stdout.splitlines()
    subjects = [ln.split(": ", 1)[1] for ln in text if not ln.startswith("    ")]
    assert subjects == ["other", "sparse ft", "base"]
    assert "    m.safetensors: 1 tensor changed (10 params); stored " in text[3] and text[3].endswith(
        "sparse x1"
    )
    assert "new checkpoint (2 tensors)" in text[5]
    only = gtl(repo, "log", "--", "m.safetensors").stdout
    assert "other" not in only and "sparse ft" in only
    assert "sparse ft" not in gtl(repo, "log", "-n", "1").stdout
    doc = json.loads(gtl(repo, "log", "--format", "json").stdout)
    validator("log-schema.json").validate(doc)
    assert [c["subject"] for c in doc["commits"]] == ["other", "sparse ft", "base"]
    assert doc["commits"][1]["files"][0]["kinds"] == {"sparse": 1}
    assert doc["commits"][1]["stored_bytes"] > 0
    fast = gtl(repo, "log", "--fast").stdout
    assert "stored as sparse x1" in fast
    assert "| commit |" in gtl(repo, "log", "--format", "markdown").stdout
    assert "base" not in gtl(repo, "log", "HEAD~2..HEAD").stdout


# ------------------------------------------------------------------ objects


def test_missing_objects_are_named_or_downloaded(repo: Path, tmp_path: Path) -> None:
    _history(repo)
    store = store_of(Repo(repo))
    far = tmp_path / "far.git"
    git(tmp_path, "init", "-q", "--bare", str(far))
    shutil.copytree(repo / ".git" / "lfs" / "objects", far / "lfs" / "objects")
    new = Manifest.from_text(git(repo, "show", "HEAD:m.safetensors").stdout)
    t = next(t for t in new.tensors if t.name == "layer.2.weight")
    store.delete(t.obj.oid)
    r = gtl(repo, "diff", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 1 and "layer.2.weight" in r.stderr and t.obj.oid in r.stderr
    # through git, the summary still names the tensor, with a note instead of statistics
    out = git(repo, "diff", "HEAD~1", "HEAD").stdout
    assert "layer.2.weight" in out and "statistics unavailable" in out
    git(repo, "remote", "add", "origin", str(far))
    doc = diff_json(repo, "HEAD~1", "HEAD")
    assert by_name(doc)["layer.2.weight"]["stats"]["relative_change"] == pytest.approx(0.01, rel=1e-3)
    assert store.has(t.obj.oid)
    # a corrupt object is an error that names the tensor, never wrong statistics
    p = store.path(t.obj.oid)
    data = bytearray(p.read_bytes())
    data[len(data) // 3] ^= 0xFF
    p.chmod(0o644)
    p.write_bytes(bytes(data))
    r = gtl(repo, "diff", "HEAD~1", "HEAD", check=False)
    assert r.returncode == 1 and "layer.2.weight" in r.stderr and "corrupt" in r.stderr


@pytest.mark.slow
def test_diff_of_100m_parameters_reads_only_the_changed_tensors(repo: Path) -> None:
    """bert-base (~110M parameters, 420 MB fp32), 3 tensors changed: the diff reads the objects
    of those 3 tensors' two versions, each once, and nothing else."""
    sys.path.insert(0, str(SCRIPTS))
    from bench import bert_like, few_changed, write_safetensors

    sd = bert_like(12)
    v2 = few_changed(sd)
    changed = [k for k in sd if sd[k] is not v2[k]]
    assert len(changed) == 3 and sum(a.size for a in sd.values()) > 100_000_000
    write_safetensors(repo / "model.safetensors", sd)
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "v1")
    write_safetensors(repo / "model.safetensors", v2)
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "v2")
    del sd, v2

    r = Repo(repo)
    old = Manifest.from_text(git(repo, "show", "HEAD~1:model.safetensors").stdout)
    new = Manifest.from_text(git(repo, "show", "HEAD:model.safetensors").stdout)
    expected: set[str] = set()
    for m in (old, new):
        for t in m.tensors:
            if t.name in changed:
                expected.add(t.obj.oid)
                base = dict(t.obj.extra).get("base")
                if base:
                    expected.add(base)
    seen: list[str] = []
    read = store_of(r).read

    def spy(oid: str, what: str = "object") -> bytes:
        seen.append(oid)
        return read(oid, what)

    store_of(r).read = spy  # type: ignore[method-assign]
    before = store_of(r).reads
    res = sides.diff_sides(r, model.Side("rev", "HEAD~1"), model.Side("rev", "HEAD"))
    assert store_of(r).reads - before == len(expected) == 6
    assert sorted(seen) == sorted(expected)  # each object once
    f = res.files[0]
    assert sorted(t.name for t in f.tensors) == sorted(changed) and f.unchanged == len(new.tensors) - 3
    assert all(t.stats is not None and t.stats.relative_change for t in f.tensors)
    assert f.params_changed == sum(dict((t.name, t) for t in new.tensors)[n].length // 4 for n in changed)
    out = run("git", "diff", "HEAD~1", "HEAD", cwd=repo).stdout
    assert all(n in out for n in changed) and "193 unchanged" in out
