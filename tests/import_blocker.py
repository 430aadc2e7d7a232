"""Shadow packages that make `import NAME` fail the way a missing package does, and record who
tried: put `blocker_dir(tmp, "torch")` first on PYTHONPATH of a command, run it, and
`attempts(dir)` lists the tracebacks of every import of a blocked package (in any process the
command started: git's filter process, the diff driver, hooks). A caller that catches the
ImportError cannot hide the attempt."""

from __future__ import annotations

import os
from pathlib import Path

_SHADOW = """\
import os, traceback
_log = {log!r}
with open(_log, "a") as f:
    f.write("import {name} in pid %d:\\n%s\\n" % (os.getpid(), "".join(traceback.format_stack()[:-1])))
raise ModuleNotFoundError("No module named {name!r}", name={name!r})
"""


def blocker_dir(root: Path, *names: str) -> Path:
    """A directory of shadow packages for `names`; put it first on PYTHONPATH."""
    d = root / "import-blocker"
    d.mkdir(parents=True, exist_ok=True)
    log = d / "attempts.log"
    for name in names:
        (d / name).mkdir(exist_ok=True)
        (d / name / "__init__.py").write_text(_SHADOW.format(log=str(log), name=name))
    return d


def attempts(d: Path) -> str:
    """What the shadow packages recorded ("" when nothing tried to import them)."""
    log = d / "attempts.log"
    return log.read_text() if log.exists() else ""


def env_with(d: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment whose Python processes see the shadow packages first."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(d), *filter(None, [env.get("PYTHONPATH")])])
    return env
