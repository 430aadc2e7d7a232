"""`git theta-like diff A...B --merge-preview`: what a merge of B into A would do per tensor
(the merge plan's classification, the configured strategy) and the TIES interference of the two
task vectors, checked against numpy; text, JSON (against its schema) and Markdown; without torch;
and, slow, against what `git merge` then does."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes
from import_blocker import attempts, blocker_dir, env_with

from git_theta_like.codecs import bits
from git_theta_like.manifest import Manifest
from git_theta_like.merge.preview import interference

DOCS = Path(__file__).resolve().parents[1] / "docs"
N = 512  # entries of the tensors with statistics


def _st(tensors: dict[str, tuple[str, np.ndarray]]) -> bytes:
    return safetensors_bytes(
        {k: (d, a.shape, np.ascontiguousarray(a).tobytes()) for k, (d, a) in tensors.items()}
    )


def _bf16(x: np.ndarray) -> np.ndarray:
    return bits.from_float64(np.asarray(x, np.float64).reshape(-1), "BF16").reshape(x.shape)


def _f64(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64).reshape(-1)
    return raw.astype(np.float64).reshape(-1)


def expected(base: np.ndarray, a: np.ndarray, b: np.ndarray, dtype: str = "F32") -> tuple[float, float]:
    """(sign disagreement, cosine) of a - base and b - base, in numpy, from the definitions."""
    x, y, z = (_f64(v, dtype) for v in (base, a, b))
    ta, tb = y - x, z - x
    both = (ta != 0) & (tb != 0)
    disagree = np.count_nonzero(both & (np.sign(ta) != np.sign(tb))) / np.count_nonzero(both)
    return float(disagree), float(ta @ tb / (np.linalg.norm(ta) * np.linalg.norm(tb)))


def switch(repo: Path, branch: str, start: str | None = None) -> None:
    """Make branch (new, from start) current without a checkout (no smudge to wait for): the
    index takes its tree, the work tree stays as it is (what the test writes next is added)."""
    if start is not None:
        git(repo, "branch", branch, start)
    git(repo, "symbolic-ref", "HEAD", f"refs/heads/{branch}")
    git(repo, "reset", "-q")


def scenario(repo: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """base on main, then branch `b` and branch `a` (checked out, clean): two fine-tunes with
    known task vectors. Returns name -> (base, a, b) of the tensors changed on both sides with statistics."""
    rng = np.random.default_rng(7)
    base = {
        "opp.weight": rng.standard_normal((16, 32)).astype(np.float32),
        "mix.weight": rng.standard_normal(N).astype(np.float32),
        "half.bf16": _bf16(rng.standard_normal(N)),
        "ours.bias": rng.standard_normal(16).astype(np.float32),
        "theirs.bias": rng.standard_normal(16).astype(np.float32),
        "alike.bias": rng.standard_normal(16).astype(np.float32),
        "shape.weight": rng.standard_normal((4, 6)).astype(np.float32),
        "count.int": np.arange(8, dtype=np.int32),
        "keep.weight": rng.standard_normal(64).astype(np.float32),
    }
    d = (rng.standard_normal((16, 32)) * 0.01).astype(np.float32)
    a, b = dict(base), dict(base)
    a["opp.weight"], b["opp.weight"] = base["opp.weight"] + d, base["opp.weight"] - d
    # mix: a changes 3/4 of the entries, b half of them, overlapping, with random signs
    ma, mb = rng.random(N) < 0.75, rng.random(N) < 0.5
    a["mix.weight"] = base["mix.weight"] + np.where(ma, rng.standard_normal(N) * 0.01, 0).astype(np.float32)
    b["mix.weight"] = base["mix.weight"] + np.where(mb, rng.standard_normal(N) * 0.01, 0).astype(np.float32)
    hb = _f64(base["half.bf16"], "BF16")
    a["half.bf16"] = _bf16(hb + rng.standard_normal(N) * 0.05)
    b["half.bf16"] = _bf16(hb + rng.standard_normal(N) * 0.05)
    a["ours.bias"] = base["ours.bias"] + np.float32(0.5)
    b["theirs.bias"] = base["theirs.bias"] - np.float32(0.5)
    a["alike.bias"] = b["alike.bias"] = base["alike.bias"] * np.float32(2)
    a["shape.weight"] = rng.standard_normal((6, 4)).astype(np.float32)
    b["shape.weight"] = base["shape.weight"] + np.float32(1)
    a["count.int"], b["count.int"] = base["count.int"] + 1, base["count.int"] - 1
    dtypes = {k: "BF16" if k.endswith("bf16") else "I32" if k.endswith("int") else "F32" for k in base}

    def st(sd: dict[str, np.ndarray]) -> bytes:
        return _st({k: (dtypes[k], v) for k, v in sd.items()})

    # a second checkpoint that merges cleanly: one tensor changed on both sides, one on one side
    c0 = {"w": rng.standard_normal(N).astype(np.float32), "v": rng.standard_normal(8).astype(np.float32)}
    ca, cb = dict(c0), dict(c0)
    ca["w"] = c0["w"] + (rng.standard_normal(N) * 0.01).astype(np.float32)
    cb["w"] = c0["w"] + (rng.standard_normal(N) * 0.01).astype(np.float32)
    cb["v"] = c0["v"] * np.float32(3)
    (repo / ".theta-like.toml").write_text(
        '[merge]\nstrategy = "average"\n\n'
        '[[merge.rules]]\ntensor = "opp.*"\nstrategy = "ties"\ndensity = 0.2\n'
    )
    (repo / "model.safetensors").write_bytes(st(base))
    (repo / "clean.safetensors").write_bytes(_st({k: ("F32", v) for k, v in c0.items()}))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    for branch, sd, c in (("b", b, cb), ("a", a, ca)):
        switch(repo, branch, "main")
        (repo / "model.safetensors").write_bytes(st(sd))
        (repo / "clean.safetensors").write_bytes(_st({k: ("F32", v) for k, v in c.items()}))
        git(repo, "add", "model.safetensors", "clean.safetensors")
        git(repo, "commit", "-qm", f"fine-tune {branch}")
    return {
        "opp.weight": (base["opp.weight"], a["opp.weight"], b["opp.weight"]),
        "mix.weight": (base["mix.weight"], a["mix.weight"], b["mix.weight"]),
        "half.bf16": (base["half.bf16"], a["half.bf16"], b["half.bf16"]),
        "clean:w": (c0["w"], ca["w"], cb["w"]),
    }


def validator() -> jsonschema.protocols.Validator:
    schema = json.loads((DOCS / "merge-preview-schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_interference_against_numpy_with_special_values() -> None:
    rng = np.random.default_rng(1)
    base = rng.standard_normal(1000)
    a = base + np.where(rng.random(1000) < 0.6, rng.standard_normal(1000), 0)
    b = base + np.where(rng.random(1000) < 0.6, rng.standard_normal(1000), 0)
    a[:3] = [np.nan, np.inf, 1.0]
    b[3] = -np.inf
    st = interference(base.tobytes(), a.tobytes(), b.tobytes(), "F64")
    keep = np.isfinite(base) & np.isfinite(a) & np.isfinite(b)
    sd, cos = expected(base[keep], a[keep], b[keep], "F64")
    assert st.nonfinite == 3 and st.numel == 1000
    assert st.sign_disagreement == pytest.approx(sd, rel=1e-12)
    assert st.cosine == pytest.approx(cos, rel=1e-12)
    ta = (a - base)[keep]
    assert st.changed_ours == np.count_nonzero(ta) and st.norm_ours == pytest.approx(np.linalg.norm(ta))
    # one side unchanged: no entries both changed, a zero task vector: both undefined
    zero = interference(base.tobytes(), base.tobytes(), b.tobytes(), "F64")
    assert zero.changed_both == 0 and zero.sign_disagreement is None and zero.cosine is None


def test_merge_preview_against_numpy_without_torch(repo: Path, tmp_path: Path) -> None:
    tv = scenario(repo)
    block = blocker_dir(tmp_path, "torch")
    p = subprocess.run(
        ["git", "theta-like", "diff", "a...b", "--merge-preview", "--format", "json"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env_with(block),
    )
    assert p.returncode == 0, p.stderr
    assert attempts(block) == ""  # the preview never tried to import torch
    doc = json.loads(p.stdout)
    validator().validate(doc)
    base_commit = git(repo, "merge-base", "a", "b").stdout.strip()
    assert (doc["ours"], doc["theirs"], doc["base_commit"]) == ("a", "b", base_commit)
    assert doc["conflicts"] is True
    files = {f["path"]: f for f in doc["files"]}
    assert set(files) == {"model.safetensors", "clean.safetensors"}
    model = files["model.safetensors"]
    t = {x["name"]: x for x in model["tensors"]}
    assert "keep.weight" not in t and model["summary"]["unchanged"] == 1
    actions = {k: v["action"] for k, v in t.items()}
    assert actions == {
        "opp.weight": "both",
        "mix.weight": "both",
        "half.bf16": "both",
        "ours.bias": "ours",
        "theirs.bias": "theirs",
        "alike.bias": "same",
        "shape.weight": "conflict",
        "count.int": "conflict",
    }
    assert t["opp.weight"]["strategy"] == {
        "name": "ties",
        "params": t["opp.weight"]["strategy"]["params"],
        "source": ".theta-like.toml rule 1",
        "result": "merged",
    }
    assert t["opp.weight"]["strategy"]["params"]["density"] == 0.2
    assert t["mix.weight"]["strategy"]["name"] == "average"
    assert "[merge]" in t["mix.weight"]["strategy"]["source"]
    assert t["shape.weight"]["reason"] == "shape differs: ours [6,4], theirs [4,6]"
    assert "float tensors only" in t["count.int"]["reason"] and t["count.int"]["stats"] is None
    assert "I32" in t["count.int"]["stats_note"]
    assert t["ours.bias"]["stats"] is None and (t["ours.bias"]["ours"], t["ours.bias"]["theirs"]) == (
        "modified",
        "unchanged",
    )
    # opposite task vectors everywhere: every entry disagrees, cosine -1
    opp = t["opp.weight"]["stats"]
    assert opp["sign_disagreement"] == 1.0 and opp["changed_both"] == opp["numel"] == 16 * 32
    assert opp["cosine"] == pytest.approx(-1.0, abs=1e-6)
    for name, dtype in (("opp.weight", "F32"), ("mix.weight", "F32"), ("half.bf16", "BF16")):
        sd, cos = expected(*tv[name], dtype=dtype)
        assert t[name]["stats"]["sign_disagreement"] == pytest.approx(sd, rel=1e-12), name
        assert t[name]["stats"]["cosine"] == pytest.approx(cos, rel=1e-9), name
    mix = t["mix.weight"]["stats"]
    assert 0 < mix["changed_both"] < mix["changed_ours"] < N and 0 < mix["sign_disagreement"] < 1
    assert model["action"] == "conflict" and len(model["conflicts"]) == 2
    assert any(c.startswith("shape.weight: shape differs") for c in model["conflicts"])
    # per file: disagreeing entries over entries both changed, across the three tensors
    summ = model["summary"]
    assert (summ["both"], summ["ours"], summ["theirs"], summ["same"], summ["conflict"]) == (3, 1, 1, 1, 2)
    assert summ["strategies"] == {"average": 2, "ties": 1}
    agg = summ["interference"]
    stats = [t[n]["stats"] for n in ("opp.weight", "mix.weight", "half.bf16")]
    assert agg["tensors"] == 3 and agg["changed_both"] == sum(s["changed_both"] for s in stats)
    assert agg["sign_disagreement"] == pytest.approx(
        sum(s["disagree"] for s in stats) / agg["changed_both"], rel=1e-12
    )
    clean = files["clean.safetensors"]
    assert clean["action"] == "both" and clean["conflicts"] == []
    w = {x["name"]: x for x in clean["tensors"]}["w"]["stats"]
    sd, cos = expected(*tv["clean:w"])
    assert w["sign_disagreement"] == pytest.approx(sd, rel=1e-12)
    assert w["cosine"] == pytest.approx(cos, rel=1e-9)
    overall = doc["summary"]
    assert overall["files"] == 2 and overall["files_conflicted"] == 1 and overall["both"] == 4
    assert overall["interference"]["tensors"] == 4

    text = gtl(repo, "diff", "a...b", "--merge-preview").stdout
    assert "merge preview: b into a" in text
    lines = {line.split()[-1]: line for line in text.splitlines() if line.startswith("    ")}
    assert lines["opp.weight"].split()[:3] == ["both", "100.0%", "-1.000000"]
    assert "ties density=0.2" in lines["opp.weight"]
    assert lines["ours.bias"].split()[0] == "ours" and lines["shape.weight"].split()[0] == "conflict"
    assert "shape.weight: shape differs: ours [6,4], theirs [4,6]" in text
    assert "the merge would stop" in text
    md = gtl(repo, "diff", "a...b", "--merge-preview", "--format", "markdown").stdout
    assert md.startswith("<!-- git-theta-like merge preview -->")
    assert "| `opp.weight` | F32 [16,32] | both | ties density=0.2" in md and "| 100.0% | -1.000000 |" in md
    # -q: no output, exit 1 when the merge would conflict
    q = gtl(repo, "diff", "a...b", "--merge-preview", "-q", check=False)
    assert (q.returncode, q.stdout) == (1, "")


def test_one_sided_and_added_files(repo: Path) -> None:
    """Files changed on one side only are taken whole (no tensor is both changed); a file added
    on one side is that side's; deleted on one side and changed on the other conflicts."""
    rng = np.random.default_rng(3)
    x = {"t": ("F32", rng.standard_normal(8).astype(np.float32))}
    (repo / "one.safetensors").write_bytes(_st(x))
    (repo / "gone.safetensors").write_bytes(_st(x))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "base")
    switch(repo, "b", "main")
    (repo / "one.safetensors").write_bytes(_st({"t": ("F32", x["t"][1] + np.ones(8, np.float32))}))
    (repo / "new.safetensors").write_bytes(_st(x))
    (repo / "gone.safetensors").write_bytes(_st({"t": ("F32", x["t"][1] * 2)}))
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "b")
    switch(repo, "main")
    git(repo, "rm", "-q", "--cached", "gone.safetensors")
    git(repo, "commit", "-qm", "delete")
    doc = json.loads(gtl(repo, "diff", "main...b", "--merge-preview", "--format", "json").stdout)
    validator().validate(doc)
    files = {f["path"]: f for f in doc["files"]}
    assert files["one.safetensors"]["action"] == "theirs"
    assert [(t["name"], t["action"]) for t in files["one.safetensors"]["tensors"]] == [("t", "theirs")]
    assert (files["new.safetensors"]["action"], files["new.safetensors"]["theirs"]) == ("theirs", "added")
    assert files["gone.safetensors"]["action"] == "conflict"
    assert files["gone.safetensors"]["reason"] == "deleted in ours, changed in theirs"
    assert doc["conflicts"] is True and doc["summary"]["interference"] is None


@pytest.mark.slow
def test_preview_options_and_what_git_merge_then_does(repo: Path) -> None:
    """--stat, paths, B...A, bad arguments; the strategies the preview names are those the merge
    records, its conflicts those the merge stops on."""
    scenario(repo)
    # --exit-code: 0 for a path without conflicts
    p = gtl(repo, "diff", "a...b", "--merge-preview", "--stat", "--exit-code", "--", "clean.safetensors")
    assert p.returncode == 0 and "model.safetensors" not in p.stdout
    assert "clean.safetensors: changed on both sides" in p.stdout and "sign-dis" not in p.stdout
    # B...A: ours and theirs swap
    doc = json.loads(gtl(repo, "diff", "b...a", "--merge-preview", "--format", "json").stdout)
    t = {x["name"]: x for f in doc["files"] for x in f["tensors"]}
    assert t["ours.bias"]["action"] == "theirs"
    assert t["shape.weight"]["reason"].startswith("shape differs: ours [4,6]")
    bad = gtl(repo, "diff", "a", "b", "--merge-preview", check=False)
    assert bad.returncode != 0 and "A...B" in bad.stderr
    assert "--cached" in gtl(repo, "diff", "a...b", "--merge-preview", "--cached", check=False).stderr

    doc = json.loads(gtl(repo, "diff", "a...b", "--merge-preview", "--format", "json").stdout)
    preview = {f["path"]: {t["name"]: t for t in f["tensors"]} for f in doc["files"]}
    p = git(repo, "merge", "--no-edit", "b", check=False)
    assert p.returncode != 0
    assert "shape.weight: shape differs" in p.stderr and "count.int" in p.stderr
    merged = Manifest.from_bytes(git(repo, "show", ":0:clean.safetensors").stdout.encode())
    recipes = {t.name: dict(t.obj.extra).get("merge") for t in merged.tensors}
    assert recipes["w"] == preview["clean.safetensors"]["w"]["strategy"]["name"] == "average"
    assert recipes["v"] is None and preview["clean.safetensors"]["v"]["action"] == "theirs"
    status = git(repo, "status", "--porcelain").stdout
    assert "UU model.safetensors" in status
    # an object missing (no remote to fetch it from): a clear error naming the tensor; --stat
    # reads no object and still works
    theirs = Manifest.from_bytes(git(repo, "show", "b:model.safetensors").stdout.encode())
    oid = next(t.obj.oid for t in theirs.tensors if t.name == "opp.weight")
    for room in ("lfs", "theta-like"):  # the store and the copy it keeps (store/local.py)
        (repo / ".git" / room / "objects" / oid[:2] / oid[2:4] / oid).unlink(missing_ok=True)
    p = gtl(repo, "diff", "a...b", "--merge-preview", check=False)
    assert p.returncode == 1 and "'opp.weight' (theirs)" in p.stderr and oid in p.stderr, p.stderr
    assert "model.safetensors: conflict" in gtl(repo, "diff", "a...b", "--merge-preview", "--stat").stdout
