"""What the filter loads: torch never (it costs seconds per process and is only needed to merge),
checked through the real filter process that git starts for `git add` and `git checkout`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from conftest import git
from fixtures import safetensors_bytes, small_model


def _imported(log: Path) -> set[str]:
    """Module names `python -X importtime` reported (one line per import, on stderr)."""
    out = set()
    for line in log.read_text().splitlines():
        if line.startswith("import time:") and "|" in line:
            out.add(line.rsplit("|", 1)[1].strip())
    return out


def test_clean_and_smudge_through_the_filter_process_never_import_torch(repo: Path) -> None:
    log = repo.parent / "filter-imports.log"
    python = shlex.quote(sys.executable)
    cmd = f"{python} -X importtime -m git_theta_like filter-process 2>>{shlex.quote(str(log))}"
    git(repo, "config", "filter.theta-like.process", cmd)
    data = safetensors_bytes(small_model())
    (repo / "model.safetensors").write_bytes(data)
    git(repo, "add", "model.safetensors")  # clean
    git(repo, "commit", "-qm", "model")
    (repo / "model.safetensors").unlink()
    git(repo, "checkout", "--", "model.safetensors")  # smudge
    assert (repo / "model.safetensors").read_bytes() == data
    mods = _imported(log)
    assert "git_theta_like.filters.engine" in mods  # the log is the filter's
    assert not {m for m in mods if m == "torch" or m.startswith("torch.")}


def test_a_checkout_that_only_smudges_loads_neither_pygit2_nor_the_pickle_reader(repo: Path) -> None:
    """The filter's fixed cost per git command: a checkout finds the repository with one `git
    rev-parse`, reads config with one `git config --list` and decodes; pygit2 (a quarter of the
    start-up) is loaded only to clean (reading the index), the pickle reader only for a PyTorch
    file, the format parsers only to clean."""
    data = safetensors_bytes(small_model())
    (repo / "model.safetensors").write_bytes(data)
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "model")
    log = repo.parent / "smudge-imports.log"
    python = shlex.quote(sys.executable)
    cmd = f"{python} -X importtime -m git_theta_like filter-process 2>>{shlex.quote(str(log))}"
    git(repo, "config", "filter.theta-like.process", cmd)
    (repo / "model.safetensors").unlink()
    git(repo, "checkout", "--", "model.safetensors")
    assert (repo / "model.safetensors").read_bytes() == data
    mods = _imported(log)
    assert "git_theta_like.filters.engine" in mods
    assert not {m for m in mods if m.split(".")[0] == "pygit2"}
    # nor the format parsers: a smudge writes skeleton and tensors back as the manifest says
    assert not mods & {
        "git_theta_like.formats.safetensors",
        "git_theta_like.formats.pytorch",
        "git_theta_like.formats.gguf",
    }
    assert "git_theta_like.formats.pytorch.pickle_reader" not in mods
    log.unlink()
    (repo / "model.safetensors").write_bytes(data + b"")  # touched: git re-cleans it
    git(repo, "add", "model.safetensors")
    assert "pygit2" in _imported(log)  # clean reads the index through pygit2


def _imports_of(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    """The modules `git-theta-like ARGS` imports, and the value of OPENBLAS_NUM_THREADS when
    numpy was first imported ("" when it never was)."""
    import os
    import subprocess

    probe = (
        "import importlib.abc, os, sys\n"
        "class Watch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'numpy' and 'GTL_NUMPY_SEEN' not in os.environ:\n"
        "            os.environ['GTL_NUMPY_SEEN'] = os.environ.get('OPENBLAS_NUM_THREADS', 'unset')\n"
        "sys.meta_path.insert(0, Watch())\n"
        "import atexit\n"
        "seen = lambda: sys.stderr.write('\\nSEEN=' + os.environ.get('GTL_NUMPY_SEEN', '') + '\\n')\n"
        "atexit.register(seen)\n"
        f"sys.argv = ['git-theta-like', *{list(args)!r}]\n"
        "from git_theta_like.cli import main\n"
        "main()\n"
    )
    full_env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    full_env.update(env or {})
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", probe],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = p.stderr.splitlines()
    mods = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    seen = p.stderr.rsplit("SEEN=", 1)[1].strip() if "SEEN=" in p.stderr else ""
    return mods, seen


def test_setup_and_listing_commands_do_not_load_numpy(repo: Path) -> None:
    """install, track and ls-files only write config and read manifests: no numpy, no codecs."""
    for args in (["install"], ["track", "*.bin"], ["ls-files"]):
        mods, seen = _imports_of(repo, *args)
        assert "git_theta_like.cli" in mods, args
        assert "numpy" not in mods and seen == "", args


def test_the_filter_process_loads_numpy_with_one_blas_thread(repo: Path) -> None:
    """We spread tensors over the cores ourselves; OpenBLAS's own threads would only contend and
    burn CPU at start-up, so the filter sets one BLAS thread before numpy loads (a user's own
    OPENBLAS_NUM_THREADS is kept)."""
    _, seen = _imports_of(repo, "filter-process")
    assert seen == "1"
    _, seen = _imports_of(repo, "filter-process", env={"OPENBLAS_NUM_THREADS": "2"})
    assert seen == "2"


def test_the_textconv_imports_neither_click_nor_numpy(repo: Path) -> None:
    """`git log -p` starts one textconv per blob and side: the executable serves it without the
    command line, and a manifest's listing needs no numpy."""
    import subprocess

    data = safetensors_bytes(small_model())
    (repo / "model.safetensors").write_bytes(data)
    git(repo, "add", "model.safetensors")
    (repo / "m.manifest").write_text(git(repo, "show", ":model.safetensors").stdout)
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "git_theta_like", "diff-textconv", "m.manifest"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    assert p.stdout.startswith("# git-theta-like checkpoint: safetensors, ")
    mods = {ln.rsplit("|", 1)[1].strip() for ln in p.stderr.splitlines() if ln.startswith("import time:")}
    assert "git_theta_like.semdiff.textconv" in mods
    assert not {m for m in mods if m in ("click", "numpy", "pygit2", "git_theta_like.cli")}
    bad = subprocess.run(
        [sys.executable, "-m", "git_theta_like", "diff-textconv", "missing.manifest"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("git-theta-like: error: ")


def test_a_filter_process_whose_input_closes_before_the_handshake_says_so_in_one_line(repo: Path) -> None:
    """git gone before it said hello (killed, say): one line on stderr and status 1, no traceback."""
    import subprocess

    p = subprocess.run(
        [sys.executable, "-m", "git_theta_like", "filter-process"],
        cwd=repo,
        input=b"",
        capture_output=True,
    )
    assert p.returncode == 1
    assert p.stderr.decode().strip() == (
        "git-theta-like: error: git closed the connection during the filter handshake"
    )


def test_the_post_merge_hook_loads_no_codecs_when_nothing_is_left_as_manifest_text(repo: Path) -> None:
    """git runs post-merge after every merge and pull: with every checkpoint checked out it only
    reads the index (no numpy, no engine); a checkpoint left as manifest text is still written."""
    data = safetensors_bytes(small_model())
    (repo / "model.safetensors").write_bytes(data)
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "model")
    mods, seen = _imports_of(repo, "post-merge", "0")
    assert "git_theta_like.filters.checkout" in mods
    assert "numpy" not in mods and "git_theta_like.filters.engine" not in mods and seen == ""
    (repo / "model.safetensors").write_text(git(repo, "show", "HEAD:model.safetensors").stdout)
    mods, _ = _imports_of(repo, "post-merge", "0")
    assert "git_theta_like.filters.engine" in mods
    assert (repo / "model.safetensors").read_bytes() == data


def test_a_filter_process_git_closes_after_the_handshake_exits_0_at_once(repo: Path) -> None:
    """git closes the pipe when its command is done and waits for the filter to exit: the
    filter exits 0, without the interpreter's teardown (os._exit once no thread is working)."""
    import subprocess

    def pkt(s: bytes) -> bytes:
        return b"%04x" % (len(s) + 4) + s

    hello = pkt(b"git-filter-client\n") + pkt(b"version=2\n") + b"0000"
    caps = pkt(b"capability=clean\n") + pkt(b"capability=smudge\n") + b"0000"
    p = subprocess.run(
        [sys.executable, "-m", "git_theta_like", "filter-process"],
        cwd=repo,
        input=hello + caps,
        capture_output=True,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == b""
    assert p.stdout == (
        pkt(b"git-filter-server\n")
        + pkt(b"version=2\n")
        + b"0000"
        + pkt(b"capability=clean\n")
        + pkt(b"capability=smudge\n")
        + b"0000"
    )


def test_the_filter_process_gives_its_pipes_to_git_a_1_mib_buffer(repo: Path) -> None:
    """A checkpoint crosses git's pipes in 64 KiB packets; with Linux's default 64 KiB pipe each
    packet waits for the other side to read it. The filter grows both of its pipes to 1 MiB
    before the handshake (87 MB checkout: 0.455 -> 0.395 s, median of 12 paired runs)."""
    import fcntl
    import subprocess

    from git_theta_like.gitio.pktline import PIPE_BYTES, PktReader, PktWriter

    p = subprocess.Popen(
        [sys.executable, "-m", "git_theta_like", "filter-process"],
        cwd=repo,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert p.stdin is not None and p.stdout is not None
    try:
        assert fcntl.fcntl(p.stdin.fileno(), fcntl.F_GETPIPE_SZ) < PIPE_BYTES  # the default
        w, r = PktWriter(p.stdin), PktReader(p.stdout)
        w.text_list(["git-filter-client", "version=2"])
        w.flush()
        assert r.read_text_list() == ["git-filter-server", "version=2"]
        w.text_list(["capability=clean", "capability=smudge"])
        w.flush()
        assert r.read_text_list() == ["capability=clean", "capability=smudge"]
        assert fcntl.fcntl(p.stdin.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
        assert fcntl.fcntl(p.stdout.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
    finally:
        p.stdin.close()
        assert p.wait(timeout=30) == 0
        p.stdout.close()


def test_growing_a_pipe_leaves_what_is_not_a_pipe_alone(tmp_path: Path) -> None:
    import fcntl
    import os

    from git_theta_like.gitio.pktline import PIPE_BYTES, grow_pipe

    with open(tmp_path / "f", "wb") as f:
        grow_pipe(f.fileno())  # a regular file: fcntl refuses, nothing changes, no error
        f.write(b"x")
    assert (tmp_path / "f").read_bytes() == b"x"
    r, w = os.pipe()
    try:
        grow_pipe(w)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == PIPE_BYTES  # one buffer, both ends
    finally:
        os.close(r)
        os.close(w)
