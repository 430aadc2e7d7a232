"""Progress (git_theta_like/progress.py): drawn only when asked (a terminal, or
GIT_THETA_LIKE_PROGRESS=1), quiet otherwise, through real git for add, checkout, fsck and gc;
the line's format, its throttling, its delay and its thread safety."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest
from conftest import git, gtl, objects_in, run
from fixtures import safetensors_bytes, small_model

from git_theta_like.progress import Progress

TENSORS = len(small_model())  # 16 tensors


def final_lines(err: str) -> list[str]:
    """The lines a terminal would keep: the last redraw before each newline, codes removed."""
    return [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in err.split("\n") if line]


@pytest.fixture
def committed(repo: Path) -> Path:
    (repo / "m.safetensors").write_bytes(safetensors_bytes(small_model(seed=1, scale=2)))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "model")
    return repo


def test_add_and_checkout_show_progress_only_when_asked(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = safetensors_bytes(small_model(seed=1, scale=2))
    (repo / "m.safetensors").write_bytes(data)
    monkeypatch.delenv("GIT_THETA_LIKE_PROGRESS", raising=False)
    quiet = git(repo, "add", "m.safetensors")
    assert quiet.stderr == ""  # stderr is not a terminal: nothing
    git(repo, "commit", "-qm", "model")

    (repo / "m.safetensors").unlink()
    assert git(repo, "checkout", "--", "m.safetensors").stderr == ""

    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")
    (repo / "m.safetensors").write_bytes(safetensors_bytes(small_model(seed=2, scale=2)))
    lines = final_lines(git(repo, "add", "m.safetensors").stderr)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"Storing m.safetensors: {TENSORS}/{TENSORS} tensors, ")
    assert lines[0].endswith("/s")

    git(repo, "reset", "-q", "--hard")
    (repo / "m.safetensors").unlink()
    err = git(repo, "checkout", "--", "m.safetensors").stderr
    assert (repo / "m.safetensors").read_bytes() == data
    lines = final_lines(err)
    assert len(lines) == 1, lines
    size = f"{len(data) / 1024:.1f} KiB"
    assert lines[0].startswith(f"Writing m.safetensors: {TENSORS}/{TENSORS} tensors, {size}/{size}, ")
    assert "\r" in err  # redrawn in place


def test_fsck_and_gc_show_progress_when_asked(committed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = committed
    n = len(objects_in(repo))  # the committed version's objects (equal tensors are one)
    (repo / "m.safetensors").write_bytes(safetensors_bytes(small_model(seed=3, scale=2)))
    git(repo, "add", "m.safetensors")  # staged, then dropped: its new objects are unreferenced
    git(repo, "reset", "-q", "--hard")
    monkeypatch.delenv("GIT_THETA_LIKE_PROGRESS", raising=False)
    assert gtl(repo, "fsck").stderr == ""
    assert gtl(repo, "gc", "--dry-run").stderr == ""

    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")
    commits = int(git(repo, "rev-list", "--count", "--all").stdout)
    scanned, checked = final_lines(gtl(repo, "fsck").stderr)
    assert scanned == f"Scanning history: {commits}/{commits} commits"  # the history walk
    assert checked.startswith(f"Checking objects: {n}/{n} objects, ")
    lines = final_lines(gtl(repo, "gc", "--prune=now").stderr)
    assert lines[0] == f"Scanning history: {commits}/{commits} commits"
    lines = lines[1:]
    # the second version's tensors (the norm weights and biases are the same ones and stay)
    assert len(lines) == 1 and lines[0].startswith("Pruning objects: "), lines
    done, total = lines[0].split(": ")[1].split(" ")[0].split("/")
    assert done == total and int(total) > 0
    # nothing left to prune: nothing to show but the history walk
    assert final_lines(gtl(repo, "gc", "--prune=now").stderr) == [lines_of_scan(commits)]


def test_a_file_stored_whole_shows_its_chunks(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from git_theta_like.codecs import planes

    size = 2 * planes.CHUNK + 123  # three chunks: not a checkpoint, stored whole
    data = os.urandom(size)
    (repo / "blob.bin").write_bytes(data)
    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")
    lines = [x for x in final_lines(git(repo, "add", "blob.bin").stderr) if not x.startswith("warning")]
    assert len(lines) == 1, lines
    total = f"{size / 2**20:.1f} MiB"
    assert lines[0].startswith(f"Storing blob.bin whole: 3/3 chunks, {total}/{total}, "), lines
    git(repo, "commit", "-qm", "blob")
    (repo / "blob.bin").unlink()
    git(repo, "checkout", "--", "blob.bin")
    assert (repo / "blob.bin").read_bytes() == data


def lines_of_scan(commits: int) -> str:
    return f"Scanning history: {commits}/{commits} commits"


def test_line_format_and_final_newline() -> None:
    out = io.StringIO()
    p = Progress("Merging m.safetensors", unit="tensors", total=3, detail="cuda", enabled=True, stream=out)
    p.step(1024)
    p.step(1024)
    p.step(1024)
    p.finish()
    text = out.getvalue()
    assert text.endswith("\x1b[K\n") and text.count("\n") == 1
    last = final_lines(text)[0]
    assert last.startswith("Merging m.safetensors: 3/3 tensors, 3.0 KiB, ") and last.endswith("/s, cuda")
    p.finish()  # once only
    assert out.getvalue() == text

    out = io.StringIO()
    p = Progress("Rewriting commits", unit="commits", total=2, show_bytes=False, enabled=True, stream=out)
    p.add_total(1)
    p.step()
    p.finish()
    assert final_lines(out.getvalue()) == ["Rewriting commits: 1/3 commits"]


def test_throttled_redraws() -> None:
    out = io.StringIO()
    p = Progress("x", total=1000, enabled=True, stream=out, min_interval=3600)
    for _ in range(1000):
        p.step(1)
    assert out.getvalue().count("\r") == 1  # the first update draws, the next 999 are throttled
    p.finish()
    assert out.getvalue().count("\r") == 2
    assert final_lines(out.getvalue())[0].startswith("x: 1000/1000 objects, 1000 B, ")


def test_delay_keeps_quick_work_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GIT_THETA_LIKE_PROGRESS", raising=False)
    out = io.StringIO()
    p = Progress("x", total=2, enabled=True, stream=out, delay=3600)
    p.step(10)
    p.step(10)
    p.finish()
    assert out.getvalue() == ""
    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")  # forced: shown at once, delay or not
    p = Progress("x", total=1, stream=out, delay=3600)
    p.step()
    p.finish()
    assert final_lines(out.getvalue()) == ["x: 1/1 objects, 0 B, 0 B/s"]


def test_disabled_writes_nothing_and_counts_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "0")
    out = io.StringIO()
    p = Progress("x", stream=out)
    assert not p.enabled
    p.add_total(5, 50)
    p.step(10)
    p.advance(10)
    p.clear()
    p.finish()
    assert out.getvalue() == "" and p.done_objects == 0  # one check per call, nothing else
    monkeypatch.delenv("GIT_THETA_LIKE_PROGRESS")
    assert not Progress("x", stream=out).enabled  # a StringIO is no terminal


def test_clear_lets_other_output_start_a_line() -> None:
    out = io.StringIO()
    p = Progress("x", total=2, enabled=True, stream=out)
    p.step()
    p.clear()
    out.write("a message\n")
    p.step()
    p.finish()
    assert final_lines(out.getvalue()) == ["a message", "x: 2/2 objects, 0 B, 0 B/s"]


def test_lines_drawn_at_once_share_the_row_and_finish_on_rows_of_their_own() -> None:
    """A delayed checkout's download (a background thread) and the file being written: one row,
    `Downloading ... | Writing ...`, never one line drawn over the other; the first to finish
    leaves its final line and the other goes on below it."""
    out = io.StringIO()
    down = Progress("Downloading objects", total=2, enabled=True, stream=out, min_interval=0)
    write = Progress(
        "Writing m.safetensors", unit="tensors", total=3, enabled=True, stream=out, min_interval=0
    )
    down.step(100)
    write.step(10)
    rows = out.getvalue().split("\r")
    assert (
        rows[-1].startswith("Downloading objects: 1/2 objects")
        and " | Writing m.safetensors: 1/3 tensors" in rows[-1]
    )
    write.step(10)
    assert "Downloading objects: 1/2" in out.getvalue().split("\r")[-1]  # its line is not wiped
    down.step(100)
    down.finish()
    write.step(10)
    write.finish()
    assert len(final_lines(out.getvalue())) == 2
    first, second = final_lines(out.getvalue())
    assert first.startswith("Downloading objects: 2/2 objects") and "|" not in first
    assert second.startswith("Writing m.safetensors: 3/3 tensors") and "|" not in second
    lone = Progress("Checking objects", total=1, enabled=True, stream=out)
    lone.step()
    lone.finish()
    assert final_lines(out.getvalue())[-1].startswith("Checking objects: 1/1")  # nothing left over


def test_counts_are_exact_across_threads() -> None:
    out = io.StringIO()
    p = Progress("x", enabled=True, stream=out, min_interval=0)
    per, threads = 2000, 8

    def work() -> None:
        for _ in range(per):
            p.add_total(1, 3)
            p.step(3)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    p.finish()
    n = per * threads
    assert (p.done_objects, p.total_objects, p.done_bytes, p.total_bytes) == (n, n, 3 * n, 3 * n)
    # every redraw is whole: no two threads' lines interleaved
    for chunk in out.getvalue().split("\r")[1:]:
        assert chunk.startswith("x: ") and chunk.rstrip("\n").endswith("\x1b[K"), chunk


def test_filter_never_imports_a_progress_library() -> None:
    """tqdm and rich cost about half the filter's start-up (docs/reliability.md, "Progress")."""
    import subprocess
    import sys

    code = "import git_theta_like.filters.server, sys; print(sorted({'tqdm', 'rich'} & set(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_migrate_shows_commits_rewritten_with_its_messages_on_lines_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = tmp_path / "lfs"
    r.mkdir()
    git(r, "init", "-q")
    run("git", "lfs", "install", "--local", cwd=r)
    run("git", "lfs", "track", "*.safetensors", cwd=r)
    (r / "m.safetensors").write_bytes(safetensors_bytes(small_model(seed=1)))
    git(r, "add", "-A")
    git(r, "commit", "-qm", "v1")
    gtl(r, "install")
    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")
    lines = final_lines(gtl(r, "migrate", "--yes").stderr)
    converting = [i for i, line in enumerate(lines) if line.startswith("git-theta-like: converting ")]
    assert len(converting) == 1, lines
    assert lines[-1] == "Rewriting commits: 1/1 commits", lines
    # the conversion's file is stored with its own line, after the message that names it
    assert lines[converting[0] + 1].startswith(f"Storing m.safetensors: {TENSORS}/{TENSORS} tensors, "), lines


def test_merge_shows_the_tensors_merged_of_n_and_the_device(
    committed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = committed
    import numpy as np

    def variant(seed: int) -> bytes:
        sd = small_model(seed=1, scale=2)
        rng = np.random.default_rng(seed)
        first = sorted(sd)[0]
        dt, shape, raw = sd[first]
        a = np.frombuffer(raw, np.float32) + rng.standard_normal(len(raw) // 4).astype(np.float32)
        sd[first] = (dt, shape, a.tobytes())
        return safetensors_bytes(sd)

    git(repo, "checkout", "-q", "-b", "theirs")
    (repo / "m.safetensors").write_bytes(variant(3))
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "-")
    (repo / "m.safetensors").write_bytes(variant(4))
    git(repo, "commit", "-qam", "ours")
    monkeypatch.setenv("GIT_THETA_LIKE_PROGRESS", "1")
    err = gtl(repo, "merge", "theirs", "--device", "cpu").stderr
    assert "Merging m.safetensors: 1/1 tensors, " in err and "on cpu" in err, err
