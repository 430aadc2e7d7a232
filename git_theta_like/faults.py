"""Fault injection for crash-safety and concurrency tests.

`GIT_THETA_LIKE_FAULT=<point>:<n>` kills the process (SIGKILL, no cleanup, like a power cut or
`kill -9`) right after the n-th event at that point. `GIT_THETA_LIKE_FAULT=<point>:<n>:pause=<file>`
instead stops there: it creates `<file>.reached`, then waits until `<file>` exists (a test holds
a command in the middle of its work that way, e.g. a `git add` that has written objects).

Points: `write` (an object stored locally), `download` (an object received from a remote),
`upload` (an object sent to a remote), `anchor` (an anchor commit built, about to be pushed).
Unset in normal use: then this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

_counts: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    spec = os.environ.get("GIT_THETA_LIKE_FAULT")
    if not spec:
        return
    where, _, rest = spec.partition(":")
    n, _, action = rest.partition(":")
    if where != name or not n.isdigit():
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        reached = _counts[name] == int(n) if action else _counts[name] >= int(n)
    if not reached:
        return
    if action.startswith("pause="):
        flag = Path(action[len("pause=") :])
        Path(f"{flag}.reached").touch()
        while not flag.exists():
            time.sleep(0.02)
        return
    os.kill(os.getpid(), signal.SIGKILL)
