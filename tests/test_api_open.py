"""The lazy Python API: `open` (like safetensors' safe_open) reads manifests only and each
tensor's object when asked for, locally or from a remote's URL; `load_model` fills a transformers
model from a revision; `commit` drives `git add` and `git commit` (hooks, a clean status)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import git, run
from fixtures import finetuned, safetensors_bytes, small_model
from lfs_server import FaultyLFSServer
from safetensors.numpy import load as st_load

import git_theta_like as gtl
from git_theta_like.errors import ManifestError
from git_theta_like.gitio.repo import Repo
from git_theta_like.manifest import Manifest
from git_theta_like.store import store_of


def reads(handle: gtl.api.Checkpoint) -> int:
    return store_of(handle.repo).reads


def test_open_reads_nothing_until_a_tensor_is_asked_for(repo: Path) -> None:
    v1 = small_model(seed=1)
    (repo / "m.safetensors").write_bytes(safetensors_bytes(v1, metadata={"format": "pt", "step": "1"}))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    sd = {"w": torch.randn(6, 4).to(torch.bfloat16), "i": torch.arange(5)}
    gtl.commit(sd, "t.safetensors", "torch", repo=repo)  # HEAD~1 has m.safetensors alone

    with gtl.open("m.safetensors", rev="HEAD~1", repo=repo) as f:
        assert f.keys() == sorted(v1)
        s = f.get_slice("embed.weight")
        assert s.get_shape() == [100, 64] and s.get_dtype() == "F32"
        assert reads(f) == 0  # manifests only so far
        rows = s[2:5, :8]
        assert reads(f) == 1  # that tensor's object, no other
        full = np.frombuffer(v1["embed.weight"][2], np.float32).reshape(100, 64)
        assert rows.tobytes() == full[2:5, :8].tobytes() and rows.flags.c_contiguous
        w = f.get_tensor("layers.1.attn.weight")
        assert reads(f) == 2
        assert w.tobytes() == v1["layers.1.attn.weight"][2] and w.shape == (64, 64)
        assert f.metadata() == {"format": "pt", "step": "1"}  # the skeleton's object
        assert reads(f) == 3
        with pytest.raises(gtl.ThetaLikeError, match="no tensor named 'nope'"):
            f.get_tensor("nope")
    with pytest.raises(gtl.ThetaLikeError, match="closed"):
        f.get_tensor("embed.weight")

    with pytest.raises(gtl.ThetaLikeError, match="does not exist at HEAD~1"):
        gtl.open("t.safetensors", rev="HEAD~1", repo=repo)
    # framework="pt": torch tensors, the exact dtype (bf16 included), slices too
    with gtl.open("t.safetensors", repo=repo, framework="pt") as f:
        got = f.get_tensor("w")
        assert got.dtype == torch.bfloat16 and torch.equal(got, sd["w"])
        assert torch.equal(f.get_slice("w")[1:3], sd["w"][1:3])
        assert torch.equal(f.get_slice("i")[...], sd["i"])
    with pytest.raises(gtl.ThetaLikeError, match="unknown framework"):
        gtl.open("t.safetensors", repo=repo, framework="tf")
    with pytest.raises(gtl.ThetaLikeError, match="bad revision"):
        gtl.open("t.safetensors", rev="no-such-rev", repo=repo)

    # a manifest line whose shape does not fit its bytes: a clear error, nothing decoded
    text = git(repo, "show", "HEAD:m.safetensors").stdout.replace(" F32 [100,64] ", " F32 [100,65] ")
    blob = run("git", "hash-object", "-w", "--stdin", cwd=repo, input=text.encode()).stdout.strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{blob},m.safetensors")
    with gtl.open("m.safetensors", rev=None, repo=repo) as f:
        assert f.get_slice("embed.weight").get_shape() == [100, 65]
        with pytest.raises(ManifestError, match=r"'embed.weight' is F32\[100, 65\].*needs 26000 bytes"):
            f.get_slice("embed.weight")[:1]
        assert reads(f) == 0


def test_open_a_sharded_model_by_its_index_or_its_directory(repo: Path) -> None:
    from test_sharded import model, write_sharded

    sd = model()
    write_sharded(repo, sd, 3)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "sharded")
    for path in ("model.safetensors.index.json", "."):
        with gtl.open(path, repo=repo) as f:
            assert f.path == "model.safetensors.index.json"
            assert f.keys() == sorted(sd)
            before = reads(f)
            assert np.array_equal(f.get_tensor("layers.5.weight"), sd["layers.5.weight"])  # 3rd shard
            assert reads(f) - before == 1
            assert f.metadata() is None  # the shards were written without __metadata__
    with pytest.raises(gtl.ThetaLikeError, match="does not exist"):
        gtl.open("no-such-dir", repo=repo)


@pytest.fixture
def lfs_server(tmp_path: Path) -> Iterator[FaultyLFSServer]:
    server = FaultyLFSServer(tmp_path / "lfs").start()  # a spec-following LFS server, on loopback
    yield server
    server.stop()


def test_open_a_remote_url_fetches_the_manifest_and_the_asked_tensor_only(
    repo: Path, tmp_path: Path, lfs_server: FaultyLFSServer
) -> None:
    bare = tmp_path / "origin.git"
    run("git", "init", "-q", "--bare", "-b", "main", str(bare), cwd=tmp_path)
    git(bare, "config", "uploadpack.allowFilter", "true")
    git(bare, "config", "uploadpack.allowAnySHA1InWant", "true")
    git(repo, "remote", "add", "origin", f"file://{bare}")
    (repo / ".lfsconfig").write_text(f'[lfs]\n\turl = "{lfs_server.endpoint}"\n')
    changed = "layers.0.attn.weight"
    (repo / "m.safetensors").write_bytes(finetuned(1))
    (repo / "other.safetensors").write_bytes(safetensors_bytes(small_model(seed=3)))
    git(repo, "add", ".lfsconfig", "m.safetensors", "other.safetensors")
    git(repo, "commit", "-qm", "two checkpoints")
    git(repo, "push", "-q", "origin", "main")
    assert len(list(lfs_server.storage.iterdir())) > 20  # the pre-push hook uploaded every object
    lfs_server.log.clear()

    cache = tmp_path / "cache"
    manifest = Manifest.from_text(git(repo, "show", "HEAD:m.safetensors").stdout)
    with gtl.open("m.safetensors", repo=f"file://{bare}", cache_dir=cache) as f:
        clone = f.repo
        assert clone.git.is_bare and clone.git_dir.parent == cache
        assert f.keys() == sorted(t.name for t in manifest.tensors)
        assert store_of(clone).all_oids() == set()  # no LFS object yet
        # git fetched that manifest alone: the other checkpoint's is still missing from the clone
        other = git(repo, "rev-parse", "HEAD:other.safetensors").stdout.strip()
        assert clone.git.get(other) is None
        w = f.get_tensor(changed)
        assert w.tobytes() == st_load(finetuned(1))[changed].tobytes()
        entry = next(t for t in manifest.tensors if t.name == changed)
        assert store_of(clone).all_oids() == {entry.obj.oid}  # that tensor's object, no other
        assert [m for m, _ in lfs_server.log] == ["POST", "GET"]  # one batch, one download
    # a commit id the cache has is read without asking the remote (which is gone now)
    head = git(repo, "rev-parse", "HEAD").stdout.strip()
    os.rename(bare, tmp_path / "gone.git")
    again = gtl.load_numpy("m.safetensors", rev=head, names=[changed], repo=f"file://{bare}", cache_dir=cache)
    assert again[changed].tobytes() == w.tobytes() and len(lfs_server.log) == 2  # from the cache
    with pytest.raises(gtl.ThetaLikeError, match="git fetch"):
        gtl.open("m.safetensors", rev="main", repo=f"file://{bare}", cache_dir=cache)


def tiny_bert(layers: int, seed: int) -> torch.nn.Module:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    torch.manual_seed(seed)
    return BertForMaskedLM(config).eval()


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_model_into_a_module_is_strict(repo: Path) -> None:
    torch.manual_seed(0)
    v1 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    gtl.commit(v1.state_dict(), "m.safetensors", "v1", repo=repo)
    target = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 2))
    assert not same_weights(target, v1)
    assert gtl.load_model(target, "m.safetensors", repo=repo) is target and same_weights(target, v1)
    with pytest.raises(gtl.ThetaLikeError, match=r"does not fit Sequential \(missing: 3.bias, 3.weight\)"):
        gtl.load_model(torch.nn.Sequential(*v1, torch.nn.Linear(2, 2)), "m.safetensors", repo=repo)
    with pytest.raises(gtl.ThetaLikeError, match=r"of another shape: 2.bias, 2.weight"):
        gtl.load_model(torch.nn.Sequential(*v1[:2], torch.nn.Linear(8, 3)), "m.safetensors", repo=repo)
    reader = Repo(repo)
    with pytest.raises(gtl.ThetaLikeError, match="config.json does not exist at HEAD"):
        gtl.load_model(torch.nn.Linear, "m.safetensors", repo=reader)  # a class is built from config.json
    assert store_of(reader).reads == 0  # and the weights were not read for nothing


@pytest.mark.slow  # importing transformers alone takes some 7 s of CPU
def test_load_model_takes_config_and_weights_from_the_revision(repo: Path) -> None:
    from transformers import AutoModelForMaskedLM, BertForMaskedLM, BertForSequenceClassification

    v1, v2 = tiny_bert(2, seed=1), tiny_bert(1, seed=2)  # v2 also changes the config
    for i, m in enumerate((v1, v2), 1):
        m.save_pretrained(repo / "bert")  # config.json + model.safetensors (the tied decoder once)
        git(repo, "add", "bert")
        git(repo, "commit", "-qm", f"v{i}")

    old = gtl.load_model(BertForMaskedLM, "bert", rev="HEAD~1", repo=repo)
    assert old.config.num_hidden_layers == 2 and same_weights(old, v1)
    assert old.cls.predictions.decoder.weight is old.bert.embeddings.word_embeddings.weight  # still tied
    new = gtl.load_model(AutoModelForMaskedLM, "bert/model.safetensors", repo=repo)
    assert type(new) is BertForMaskedLM and new.config.num_hidden_layers == 1 and same_weights(new, v2)
    # into a model instance, in place
    target = tiny_bert(2, seed=3)
    assert gtl.load_model(target, "bert", rev="HEAD~1", repo=repo) is target and same_weights(target, v1)
    # strict: what does not fit is an error, never a randomly initialised weight
    with pytest.raises(
        gtl.ThetaLikeError, match="does not fit BertForMaskedLM .unexpected: bert.encoder.layer.1"
    ):
        gtl.load_model(tiny_bert(1, seed=4), "bert", rev="HEAD~1", repo=repo)
    with pytest.raises(gtl.ThetaLikeError, match="does not fit BertForSequenceClassification.*classifier"):
        gtl.load_model(BertForSequenceClassification, "bert", repo=repo)


def test_commit_runs_the_hooks_and_leaves_a_clean_status(repo: Path) -> None:
    hooks = repo / ".git" / "hooks"
    scripts = {
        "pre-commit": 'touch "$GIT_DIR/../pre-commit-ran"\n',
        "commit-msg": 'echo "Signed-off-by: Test <test@example.invalid>" >> "$1"\n',
        "post-commit": 'touch "$GIT_DIR/../post-commit-ran"\n',
    }
    for name, body in scripts.items():
        (hooks / name).write_text(f"#!/bin/sh\nGIT_DIR=${{GIT_DIR:-.git}}\n{body}")
        (hooks / name).chmod(0o755)
    sd = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    commit_id = gtl.commit(sd, "ckpt/m.safetensors", "first", repo=repo)
    assert git(repo, "rev-parse", "HEAD").stdout.strip() == commit_id
    assert "Signed-off-by: Test" in git(repo, "log", "-1", "--format=%B").stdout
    assert (repo / "pre-commit-ran").exists() and (repo / "post-commit-ran").exists()
    for marker in ("pre-commit-ran", "post-commit-ran"):
        (repo / marker).unlink()
    assert git(repo, "status", "--porcelain").stdout == ""
    assert torch.equal(gtl.load("ckpt/m.safetensors", repo=repo)["w"], sd["w"])
    # a refusing hook: no commit, git's message in the error
    (hooks / "pre-commit").write_text("#!/bin/sh\necho 'no checkpoints on Fridays' >&2\nexit 1\n")
    with pytest.raises(gtl.ThetaLikeError, match="no checkpoints on Fridays"):
        gtl.commit({"w": sd["w"] + 1}, "ckpt/m.safetensors", "second", repo=repo)
    assert git(repo, "rev-parse", "HEAD").stdout.strip() == commit_id


def test_the_api_docstrings_show_their_examples_as_code() -> None:
    """mkdocstrings renders docs/api.md's reference from these docstrings: a `>>>` line there
    would be a nested quote, not code."""
    import ast
    import inspect

    import git_theta_like.api as api

    for name in ("open", "Checkpoint", "load", "load_numpy", "load_model", "commit", "diff", "merge_tensors"):
        doc = inspect.getdoc(getattr(api, name)) or ""
        assert ">>>" not in doc, name
    tree = ast.parse(Path(api.__file__).read_text())
    documented = [n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")]
    assert all("```python" in (ast.get_docstring(n) or "") for n in documented)


@pytest.mark.slow
def test_the_first_session_of_the_api_page_runs_verbatim(tmp_path: Path) -> None:
    import re
    import sys

    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    first = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    assert "gtl.open(" in first and "get_slice" in first
    run(sys.executable, "-c", first, cwd=tmp_path)


@pytest.mark.slow  # sentence-transformers and the real all-MiniLM-L6-v2
def test_load_model_into_a_sentence_transformer(repo: Path, minilm_path: Path) -> None:
    import shutil

    from sentence_transformers import SentenceTransformer

    shutil.copy(minilm_path, repo / "model.safetensors")  # it stores embeddings.position_ids too
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "all-MiniLM-L6-v2")
    st = SentenceTransformer(str(minilm_path.parent), device="cpu")
    before = st.encode(["a sentence about checkpoints"])
    with torch.no_grad():
        for p in st.parameters():
            p.add_(0.01)
    assert not np.array_equal(st.encode(["a sentence about checkpoints"]), before)
    gtl.load_model(st[0].auto_model, "model.safetensors", repo=repo)  # the recipe of docs/api.md
    assert np.array_equal(st.encode(["a sentence about checkpoints"]), before)
