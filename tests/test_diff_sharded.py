"""`git theta-like diff` and `log` on sharded checkpoints: the shards and their index
(model.safetensors.index.json) are one model; a tensor that only changed shard is `moved`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes
from referencing import Registry, Resource
from test_sharded import model, write_sharded

from git_theta_like.gitio.repo import Repo
from git_theta_like.gitio.scan import load_manifest

DOCS = Path(__file__).resolve().parents[1] / "docs"
INDEX = "model.safetensors.index.json"
S3 = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
S2 = [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
# write_sharded splits the 6 tensors of model() in order: 2 per shard of 3, 3 per shard of 2
IN_S3 = {f"layers.{i}.weight": S3[i // 2] for i in range(6)}
IN_S2 = {f"layers.{i}.weight": S2[i // 3] for i in range(6)}


def validator(name: str) -> jsonschema.protocols.Validator:
    schemas = {
        p.name: json.loads(p.read_text()) for p in (DOCS / "diff-schema.json", DOCS / "log-schema.json")
    }
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    jsonschema.Draft202012Validator.check_schema(schemas[name])
    return jsonschema.Draft202012Validator(schemas[name], registry=registry)


def write_layout(repo: Path, sd: dict[str, np.ndarray], layout: dict[str, list[str]], total: int = 0) -> None:
    """Shards holding the tensors the layout names, and their index."""
    for old in repo.glob("model-*.safetensors"):
        old.unlink()
    weight_map = {}
    for fname, names in layout.items():
        part = {n: ("F32", sd[n].shape, sd[n].tobytes()) for n in names}
        (repo / fname).write_bytes(safetensors_bytes(part))
        weight_map.update({n: fname for n in names})
    index = {
        "metadata": {"total_size": total or sum(a.nbytes for a in sd.values())},
        "weight_map": weight_map,
    }
    (repo / INDEX).write_text(json.dumps(index, indent=2))


def commit_all(repo: Path, msg: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", msg)


def diff_json(repo: Path, *args: str) -> dict:  # type: ignore[type-arg]
    doc = json.loads(gtl(repo, "diff", "--format", "json", *args).stdout)
    validator("diff-schema.json").validate(doc)
    return doc  # type: ignore[no-any-return]


def resharded(repo: Path, change: bool = False) -> dict[str, np.ndarray]:
    """HEAD~1: the model in 3 shards; HEAD: the same model (layers.0 changed with `change`) in 2."""
    sd = model()
    write_sharded(repo, sd, 3)
    commit_all(repo, "3 shards")
    if change:
        sd["layers.0.weight"] = (sd["layers.0.weight"] + 1e-3).astype(np.float32)
    write_sharded(repo, sd, 2)
    commit_all(repo, "re-sharded into 2")
    return sd


def test_resharding_alone_is_one_model_whose_tensors_moved(repo: Path) -> None:
    resharded(repo)
    text = gtl(repo, "diff", "HEAD~1", "HEAD").stdout
    heads = [ln for ln in text.splitlines() if ln and not ln.startswith(" ")]
    assert heads[0] == "git-theta-like diff HEAD~1 -> HEAD"
    assert heads[1].startswith(f"{INDEX}: safetensors, 3 shards, 6 tensors, 24.58k params, ")
    assert "-> safetensors, 2 shards, 6 tensors, 24.58k params" in heads[1]
    assert len(heads) == 2  # the shard files are not listed on their own
    assert "  moved between shards: 6" in text
    assert f"    > layers.2.weight  F32 [64,64]  {S3[1]} -> {S2[0]}" in text
    assert "added:" not in text and "removed:" not in text and "modified:" not in text
    assert "total: 0 modified, 0 reshaped, 0 renamed, 6 moved, 0 added, 0 removed, 0 unchanged" in text

    doc = diff_json(repo, "HEAD~1", "HEAD")
    assert doc["differs"] is True and [f["path"] for f in doc["files"]] == [INDEX]
    f = doc["files"][0]
    assert f["status"] == "modified" and f["header_changed"] is False
    assert f["shards"] == {"old": S3, "new": S2}
    assert (f["old"]["shards"], f["new"]["shards"], f["new"]["tensors"]) == (3, 2, 6)
    assert f["new"]["size"] == sum((repo / s).stat().st_size for s in S2)  # the shards together
    assert f["summary"]["moved"] == 6 and f["summary"]["unchanged"] == 0
    assert doc["summary"]["moved"] == 6
    assert all(doc["summary"][g] == 0 for g in ("modified", "reshaped", "renamed", "added", "removed"))
    tensors = {t["name"]: t for t in f["tensors"]}
    assert sorted(tensors) == sorted(IN_S3)
    for name, t in tensors.items():
        assert (t["status"], t["group"], t["content_changed"], t["stats"]) == ("moved", "moved", False, None)
        assert (t["old_shard"], t["new_shard"]) == (IN_S3[name], IN_S2[name])
        assert t["old"]["sha256"] == t["new"]["sha256"]
    # the new side costs only its two new skeletons: every tensor object is reused
    r = Repo(repo)
    skeletons = {load_manifest(r, s, "HEAD").skeleton for s in S2}
    assert f["summary"]["stored_bytes"] == sum(s.stored for s in skeletons) > 0


def test_a_changed_tensor_that_moved_is_modified_and_shows_its_shards(repo: Path) -> None:
    resharded(repo, change=True)
    doc = diff_json(repo, "HEAD~1", "HEAD")
    f = doc["files"][0]
    assert f["summary"]["modified"] == 1 and f["summary"]["moved"] == 5 and doc["summary"]["moved"] == 5
    t = next(t for t in f["tensors"] if t["name"] == "layers.0.weight")
    assert (t["status"], t["group"], t["old_shard"], t["new_shard"]) == ("modified", "modified", S3[0], S2[0])
    assert t["stats"]["max_abs_delta"] > 0 and t["stats"]["relative_change"] > 0
    assert f["tensors"][0]["name"] == "layers.0.weight"  # the modified group comes first
    text = gtl(repo, "diff", "HEAD~1", "HEAD").stdout
    row = next(ln for ln in text.splitlines() if "layers.0.weight" in ln)
    assert row.endswith(f"layers.0.weight  (moved {S3[0]} -> {S2[0]})") and "F32 [64,64]" in row
    assert "moved between shards: 5" in text and "    > layers.0.weight" not in text
    md = gtl(repo, "diff", "HEAD~1", "HEAD", "--format", "markdown").stdout
    assert f"| `layers.0.weight` (moved `{S3[0]}` → `{S2[0]}`) |" in md
    assert "**moved between shards (5):**" in md


def test_tensors_that_stay_in_their_shard_are_unchanged_not_moved(repo: Path) -> None:
    sd = model()
    a, b = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
    names = list(sd)
    write_layout(repo, sd, {a: names[:3], b: names[3:]})
    commit_all(repo, "v1")
    sd["layers.5.weight"] = (sd["layers.5.weight"] * 1.01).astype(np.float32)
    write_layout(repo, sd, {a: names[:2], b: names[2:]})  # layers.2 moves to b; layers.5 changes in b
    commit_all(repo, "v2")
    f = diff_json(repo, "HEAD~1", "HEAD")["files"][0]
    assert (f["summary"]["moved"], f["summary"]["modified"], f["summary"]["unchanged"]) == (1, 1, 4)
    tensors = {t["name"]: t for t in f["tensors"]}
    assert set(tensors) == {"layers.2.weight", "layers.5.weight"}
    assert (tensors["layers.2.weight"]["old_shard"], tensors["layers.2.weight"]["new_shard"]) == (a, b)
    assert (tensors["layers.5.weight"]["old_shard"], tensors["layers.5.weight"]["new_shard"]) == (b, b)
    assert f["header_changed"] is False  # no shard kept its tensor names, the metadata is the same
    # only the index's metadata changes: the model's header changed, nothing else
    write_layout(repo, sd, {a: names[:2], b: names[2:]}, total=123)
    commit_all(repo, "v3")
    doc = diff_json(repo, "HEAD~1", "HEAD")
    f = doc["files"][0]
    assert (
        doc["differs"] and f["header_changed"] is True and f["tensors"] == [] and f["summary"]["moved"] == 0
    )
    assert "header/metadata changed" in gtl(repo, "diff", "HEAD~1", "HEAD").stdout


@pytest.mark.slow
def test_stat_and_exit_code(repo: Path) -> None:
    resharded(repo)
    stat = gtl(repo, "diff", "HEAD~1", "HEAD", "--stat").stdout.splitlines()
    assert len(stat) == 2, stat
    assert stat[0].startswith(f" {INDEX} | 0 modified, 0 reshaped, 0 renamed, 6 moved, 0 added, 0 removed")
    assert stat[1].startswith(" 1 checkpoint changed: 0 modified, 0 reshaped, 0 renamed, 6 moved,")
    doc = diff_json(repo, "HEAD~1", "HEAD", "--stat")
    assert "tensors" not in doc["files"][0] and doc["summary"]["moved"] == 6
    md = gtl(repo, "diff", "HEAD~1", "HEAD", "--stat", "--format", "markdown").stdout
    assert "| checkpoint | modified | reshaped | renamed | moved | added |" in md
    assert f"| `{INDEX}` (modified) | 0 | 0 | 0 | 6 | 0 | 0 | - |" in md
    assert gtl(repo, "diff", "HEAD~1", "HEAD", "--exit-code", check=False).returncode == 1  # moves differ
    assert gtl(repo, "diff", "HEAD~1", "HEAD", "-q", check=False).returncode == 1
    assert gtl(repo, "diff", "HEAD", "HEAD", "--exit-code", check=False).returncode == 0
    assert diff_json(repo, "HEAD", "HEAD")["files"] == []


def test_log_shows_the_model_as_one_line(repo: Path) -> None:
    resharded(repo, change=True)
    (repo / "notes.txt").write_text("x")
    commit_all(repo, "unrelated")
    lines = gtl(repo, "log").stdout.splitlines()
    assert [ln.split(": ", 1)[1] for ln in lines if not ln.startswith("    ")] == [
        "re-sharded into 2",
        "3 shards",
    ]
    assert lines[1].startswith(
        f"    {INDEX}: 1 tensor changed (4.10k params); 5 moved between shards; stored "
    )
    assert lines[3] == f"    {INDEX}: new checkpoint (6 tensors); " + lines[3].split("; ", 1)[1]
    assert len(lines) == 4  # one line per commit and model: no shard file on its own
    doc = json.loads(gtl(repo, "log", "--format", "json").stdout)
    validator("log-schema.json").validate(doc)
    files = doc["commits"][0]["files"]
    assert [f["path"] for f in files] == [INDEX] and files[0]["summary"]["moved"] == 5
    assert files[0]["summary"]["modified"] == 1
    assert "| 1 (+5 moved between shards) |" in gtl(repo, "log", "--format", "markdown").stdout
    fast = gtl(repo, "log", "--fast").stdout
    assert "5 moved between shards" in fast
    # a filter on one shard: that file alone, per file
    one = gtl(repo, "log", "--", S3[0]).stdout.splitlines()
    assert one[1] == f"    {S3[0]}: deleted; " + one[1].split("; ", 1)[1] and len(one) == 4
    assert INDEX not in "\n".join(one)


@pytest.mark.slow
def test_path_filters_on_the_index_and_on_one_shard(repo: Path) -> None:
    resharded(repo)
    on_index = diff_json(repo, "HEAD~1", "HEAD", "--", INDEX)
    assert [f["path"] for f in on_index["files"]] == [INDEX] and on_index["summary"]["moved"] == 6
    assert [f["path"] for f in diff_json(repo, "HEAD~1", "HEAD", "*.json")["files"]] == [INDEX]
    assert [f["path"] for f in diff_json(repo, "HEAD~1", "HEAD", ".")["files"]] == [INDEX]
    on_shard = diff_json(repo, "HEAD~1", "HEAD", "--", S2[1])
    assert [f["path"] for f in on_shard["files"]] == [S2[1]]
    f = on_shard["files"][0]
    assert f["status"] == "added" and f["shards"] == {"old": None, "new": None} and f["new"]["shards"] is None
    assert {t["name"] for t in f["tensors"]} == {"layers.3.weight", "layers.4.weight", "layers.5.weight"}
    assert all(t["old_shard"] is None and t["new_shard"] is None for t in f["tensors"])
    assert on_shard["summary"]["moved"] == 0
    shards = diff_json(repo, "HEAD~1", "HEAD", "*.safetensors")
    assert [f["path"] for f in shards["files"]] == sorted(S2 + S3)
    log = gtl(repo, "log", "--", INDEX).stdout.splitlines()
    assert [ln.split(":")[0] for ln in log[1::2]] == [f"    {INDEX}"] * 2 and len(log) == 4


@pytest.mark.slow
def test_worktree_and_cached_sides(repo: Path) -> None:
    sd = model()
    write_sharded(repo, sd, 3)
    commit_all(repo, "3 shards")
    write_sharded(repo, sd, 2)  # not added yet: the working tree's index names untracked shards
    wt = diff_json(repo)
    assert sorted(f["path"] for f in wt["files"]) == S3  # falls back to file by file
    for f in wt["files"]:
        assert f["status"] == "removed"
        assert f"shard {S2[0]} is untracked in the working tree" in f["note"]
        assert f["note"].startswith(f"shard of {INDEX}, shown file by file: ")
    assert f"  (shard of {INDEX}, shown file by file: " in gtl(repo, "diff").stdout
    git(repo, "add", "-A")
    cached = diff_json(repo, "--cached")
    assert (cached["old"], cached["new"]) == ("HEAD", "index")
    assert [f["path"] for f in cached["files"]] == [INDEX] and cached["summary"]["moved"] == 6
    assert diff_json(repo)["files"] == []  # index vs working tree: nothing
    sd["layers.4.weight"] = (sd["layers.4.weight"] + 0.01).astype(np.float32)
    write_sharded(repo, sd, 2)
    wt = diff_json(repo)
    assert (wt["old"], wt["new"]) == ("index", "working tree")
    assert [f["path"] for f in wt["files"]] == [INDEX]
    f = wt["files"][0]
    assert (f["summary"]["modified"], f["summary"]["moved"], f["summary"]["unchanged"]) == (1, 0, 5)
    (t,) = f["tensors"]
    assert (t["name"], t["old_shard"], t["new_shard"]) == ("layers.4.weight", S2[1], S2[1])
    assert abs(t["stats"]["max_abs_delta"] - 0.01) < 1e-4
    from_head = diff_json(repo, "HEAD")  # HEAD vs working tree
    f = from_head["files"][0]
    assert (f["summary"]["modified"], f["summary"]["moved"]) == (1, 5)
    assert next(t for t in f["tensors"] if t["status"] == "modified")["old_shard"] == S3[2]


@pytest.mark.slow
def test_a_side_with_a_missing_shard_falls_back_with_a_note(repo: Path) -> None:
    write_sharded(repo, model(), 3)
    git(repo, "add", INDEX, S3[0], S3[2])  # the second shard is never committed
    git(repo, "commit", "-qm", "incomplete")
    doc = diff_json(repo, "HEAD~1", "HEAD")
    assert [f["path"] for f in doc["files"]] == [S3[0], S3[2]]
    for f in doc["files"]:
        assert f["status"] == "added" and f["shards"] == {"old": None, "new": None}
        assert f["note"] == f"shard of {INDEX}, shown file by file: shard {S3[1]} is missing at HEAD"
    text = gtl(repo, "diff", "HEAD~1", "HEAD").stdout
    assert f"  (shard of {INDEX}, shown file by file: shard {S3[1]} is missing at HEAD)" in text
    log = gtl(repo, "log", "-n", "1").stdout.splitlines()
    assert [ln.split(":")[0].strip() for ln in log[1:]] == [S3[0], S3[2]]
    # a shard the index names that is there but is not a tracked checkpoint
    index = json.loads((repo / INDEX).read_text())
    index["weight_map"]["layers.2.weight"] = "notes.txt"
    (repo / INDEX).write_text(json.dumps(index))
    (repo / "notes.txt").write_text("not a checkpoint")
    git(repo, "add", S3[1], INDEX, "notes.txt")
    git(repo, "commit", "-qm", "names a plain file")
    doc = diff_json(repo, "HEAD~1", "HEAD")
    assert [f["path"] for f in doc["files"]] == [S3[1]]
    assert "shard notes.txt is not a tracked checkpoint at HEAD" in doc["files"][0]["note"]
    assert f"shard {S3[1]} is missing at HEAD~1" in doc["files"][0]["note"]
    # once complete, the model is one again
    index["weight_map"]["layers.2.weight"] = S3[1]
    (repo / INDEX).write_text(json.dumps(index))
    commit_all(repo, "complete")
    doc = diff_json(repo, "HEAD~2", "HEAD")  # HEAD~2 lacks a shard: file by file
    assert [f["path"] for f in doc["files"]] == [S3[1]] and "missing at HEAD~2" in doc["files"][0]["note"]
    doc = diff_json(repo, "HEAD~3", "HEAD")
    assert [f["path"] for f in doc["files"]] == [INDEX] and doc["files"][0]["status"] == "added"
    assert doc["files"][0]["shards"] == {"old": None, "new": S3}
