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
