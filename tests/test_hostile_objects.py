"""Hostile repositories (issue 14, items 7, 9 and 11): hand-made objects and manifests committed
at tracked paths. Objects that lie about their size cost no memory and write nothing big; headers
and manifests no parser accepts are reported by fsck, gone past by gc; tensor names with control
characters are printed escaped."""

from __future__ import annotations

import hashlib
import json
import resource
import subprocess
from pathlib import Path

import pytest
from conftest import git, gtl
from fixtures import safetensors_bytes

from git_theta_like.codecs import planes
from git_theta_like.codecs.container import ObjectHeader
from git_theta_like.manifest import Manifest, ObjectRef
from git_theta_like.store.local import LocalStore

GIB = 1 << 30
AS_LIMIT = 2 * GIB  # address space of a command in these tests: far below the sizes claimed


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def run_limited(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command (and the filters git starts) in an address space of AS_LIMIT bytes."""
    p = subprocess.run(list(args), cwd=repo, capture_output=True, preexec_fn=_limited, timeout=120)
    return subprocess.CompletedProcess(
        p.args, p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    )


def store(repo: Path) -> LocalStore:
    return LocalStore(repo / ".git" / "lfs")


def put_object(repo: Path, payload: bytes, header_doc: dict[str, object] | bytes) -> str:
    """Store payload + a hand-made header under its real sha256; returns the object id."""
    h = header_doc if isinstance(header_doc, bytes) else json.dumps(header_doc).encode()
    trailer = h + len(h).to_bytes(4, "little") + b"GTL\x01"
    return store(repo).write([payload, trailer])[0]


def planes_lie(repo: Path, claimed: int, raw: str = "0" * 64) -> tuple[str, int]:
    """A real planes object of 64 KiB of zeros whose header claims `claimed` raw bytes."""
    params, chunks = planes.encode(memoryview(bytes(64 * 1024)), 1)
    payload = b"".join(chunks)
    header = ObjectHeader(planes.NAME, "OPAQUE", (claimed,), claimed, raw, params).to_bytes()
    oid = put_object(repo, payload, header)
    return oid, len(payload) + len(header) + 8


def commit_blob(repo: Path, path: str, data: bytes, message: str) -> None:
    """Commit data as the blob at a tracked path, bypassing the filter (a hand-made manifest)."""
    blob = (
        subprocess.run(
            ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=data, capture_output=True, check=True
        )
        .stdout.decode()
        .strip()
    )
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
    git(repo, "commit", "-qm", message)


def whole_manifest(oid: str, stored: int, size: int, raw: str = "0" * 64) -> bytes:
    ref = ObjectRef(raw, oid, stored, planes.NAME)
    return Manifest("opaque", size, size, ref, []).to_bytes()


def no_traceback(p: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    assert "MemoryError" not in p.stderr + p.stdout, p.stderr


# ------------------------------------------------------------ item 7: objects that lie about size


def test_whole_file_object_larger_than_its_manifest_is_refused(repo: Path) -> None:
    """A 49 KB manifest entry whose object claims 1.5 GiB (and one claiming 1 TiB, agreeing with
    its manifest): checkout, fsck and diff fail clearly, in bounded memory, writing nothing big."""
    small_oid, small_stored = planes_lie(repo, 3 * GIB // 2)
    commit_blob(repo, "small.bin", whole_manifest(small_oid, small_stored, 49152), "size lie")
    huge_oid, huge_stored = planes_lie(repo, 1 << 40)
    commit_blob(repo, "huge.bin", whole_manifest(huge_oid, huge_stored, 1 << 40), "huge claim")
    for path, oid in (("small.bin", small_oid), ("huge.bin", huge_oid)):
        p = run_limited(repo, "git", "checkout", "HEAD", "--", path)
        no_traceback(p)
        assert p.returncode != 0, p.stderr
        assert oid in p.stderr, p.stderr
        f = repo / path
        assert not f.exists() or f.stat().st_size < (1 << 20)
    p = run_limited(repo, "git", "theta-like", "checkout")
    no_traceback(p)
    assert p.returncode != 0
    assert all(
        not (repo / n).exists() or (repo / n).stat().st_size < (1 << 20) for n in ("small.bin", "huge.bin")
    )

    p = run_limited(repo, "git", "theta-like", "fsck")
    no_traceback(p)
    assert p.returncode == 1
    assert f"corrupt: {small_oid}" in p.stdout and "the manifest expects 49152" in p.stdout
    assert f"corrupt: {huge_oid}" in p.stdout and "more than its" in p.stdout


def test_tensor_object_whose_size_disagrees_with_its_line(repo: Path) -> None:
    """A tensor line pointing at an object whose header claims 1 TiB: checkout, fsck and `git
    theta-like diff` name the tensor and the object, within the address-space limit."""
    data = safetensors_bytes({"w": ("F32", (4, 4), bytes(64)), "b": ("F32", (4,), bytes(16))})
    (repo / "m.safetensors").write_bytes(data)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "real")
    m = Manifest.from_bytes(git(repo, "show", "HEAD:m.safetensors").stdout.encode())
    w = m.tensors[0]
    lie, stored = planes_lie(repo, 1 << 40, "1" * 64)  # a "changed" tensor, so diff reads it
    text = m.to_text().replace(f"{w.obj.raw} {w.obj.oid} {w.obj.stored}", f"{'1' * 64} {lie} {stored}")
    commit_blob(repo, "m.safetensors", text.encode(), "hostile")
    (repo / "m.safetensors").unlink()
    p = run_limited(repo, "git", "checkout", "HEAD", "--", "m.safetensors")
    no_traceback(p)
    assert p.returncode != 0 and lie in p.stderr and "'w'" in p.stderr, p.stderr
    p = run_limited(repo, "git", "theta-like", "fsck")
    no_traceback(p)
    assert p.returncode == 1 and f"corrupt: {lie}" in p.stdout and "the manifest expects 64" in p.stdout
    p = run_limited(repo, "git", "theta-like", "diff", "HEAD~1", "HEAD")
    no_traceback(p)
    assert lie in p.stdout + p.stderr and "'w'" in p.stdout + p.stderr


# ------------------------------------------------------------ item 9: headers and manifests no parser accepts


def _header(**fields: object) -> dict[str, object]:
    doc: dict[str, object] = {"v": 1, "codec": "raw", "dtype": "OPAQUE", "shape": [4], "size": 4}
    doc["raw"] = hashlib.sha256(b"abcd").hexdigest()
    doc.update(fields)
    return doc


def test_fsck_and_gc_go_past_hostile_headers_and_manifests(repo: Path) -> None:
    raw = hashlib.sha256(b"abcd").hexdigest()
    bad = {
        "base.bin": put_object(repo, b"abcd", _header(base=123)),
        "nested.bin": put_object(repo, b"abcd", b"[" * 200_000 + b"]" * 200_000),
        "shape.bin": put_object(repo, b"abcd", _header(shape=[[4]], params={"chunk": "x"})),
        "size.bin": put_object(repo, b"abcd", _header(size=1e400)),
    }
    for path, oid in bad.items():
        commit_blob(repo, path, whole_manifest(oid, 100, 4, raw), f"hostile {path}")
    named_only = put_object(repo, b"abcd", _header())  # named by the invalid manifest below only
    digits = "9" * 5000
    text = f"git-theta-like manifest v1 format=opaque size={digits}\nskeleton 4 {raw} {named_only} 9 raw\n"
    commit_blob(repo, "digits.bin", text.encode(), "5000-digit size")
    stray = put_object(repo, b"efgh", _header(raw=hashlib.sha256(b"efgh").hexdigest()))

    p = gtl(repo, "fsck", check=False)
    no_traceback(p)
    assert p.returncode == 1
    for path, oid in bad.items():
        assert f"corrupt: {oid}: object: object {oid}: malformed header" in p.stdout, (path, p.stdout)
    assert "bad-manifest:" in p.stdout and "at most 19 digits" in p.stdout
    assert "5 problem(s)" in p.stdout

    p = gtl(repo, "gc", "--prune", "now", check=False)
    no_traceback(p)
    assert p.returncode == 0, p.stderr
    assert "is invalid" in p.stderr and "kept the 2 object(s) its text names" in p.stderr
    left = store(repo).all_oids()
    assert stray not in left  # gc went on ...
    assert named_only in left and set(bad.values()) <= left  # ... and deleted nothing it cannot account for


# ------------------------------------------------------------ item 11: control characters in names

NAMES = ("\x1b[31mred", "forged\nline", "back\rspace", "del\x7f", "bidi\u202eevil")


@pytest.mark.slow
def test_control_characters_in_tensor_names_are_escaped(repo: Path) -> None:
    def checkpoint(v: int) -> bytes:
        return safetensors_bytes({n: ("F32", (2,), bytes([v] * 8)) for n in NAMES})

    (repo / "m.safetensors").write_bytes(checkpoint(0))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "one")
    (repo / "m.safetensors").write_bytes(checkpoint(1))
    git(repo, "commit", "-qam", "two")
    outputs = {
        "git diff": git(repo, "diff", "HEAD~1", "HEAD").stdout,
        "git log -p": git(repo, "log", "-p", "--ext-diff", "-1").stdout,
        "diff": gtl(repo, "diff", "HEAD~1", "HEAD").stdout,
        "diff md": gtl(repo, "diff", "--format", "markdown", "HEAD~1", "HEAD").stdout,
        "show": gtl(repo, "show", "HEAD", "m.safetensors").stdout,
        "ls-files -v": gtl(repo, "ls-files", "-v").stdout,
    }
    for what, out in outputs.items():
        for c in ("\x1b", "\r", "\x7f", "\u202e"):
            assert c not in out, (what, c, out)
        assert not any(line.startswith("line") for line in out.splitlines()), (what, out)
    for what in ("diff", "show", "ls-files -v", "diff md"):
        assert "\\x1b[31mred" in outputs[what] and "forged\\x0aline" in outputs[what], (what, outputs[what])
    js = json.loads(gtl(repo, "diff", "--format", "json", "HEAD~1", "HEAD").stdout)
    assert set(NAMES) <= {t["name"] for f in js["files"] for t in f["tensors"]}  # JSON stays exact
