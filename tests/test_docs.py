"""The documentation: the site builds with warnings as errors, and the quick start works
verbatim for a new user."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_site_builds_strict(tmp_path: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: run scripts/setup")
    p = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "site" / "quickstart" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "load_numpy" in api and "requested tensors" in api


@pytest.mark.slow
def test_quickstart_runs_verbatim(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "quickstart.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    script = "set -euo pipefail\n" + "\n".join(blocks)
    p = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, f"{p.stdout}\n{p.stderr}"
    assert "git-theta-like manifest v1" in p.stdout
    assert "encoder.bias" in p.stdout  # the semantic diff names the changed tensor
    model = tmp_path / "my-models"
    assert (model / "model.safetensors").is_file()
    assert (
        subprocess.run(["git", "status", "--porcelain"], cwd=model, capture_output=True, text=True).stdout
        == ""
    )
