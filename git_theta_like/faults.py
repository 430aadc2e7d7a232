"""Fault injection for crash-safety tests: `GIT_THETA_LIKE_FAULT=<point>:<n>` kills the process
(SIGKILL, no cleanup, like a power cut or `kill -9`) right after the n-th event at that point.

Points: `write` (an object stored locally), `download` (an object received from a remote),
`upload` (an object sent to a remote). Unset in normal use: then this costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
import threading

_counts: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    spec = os.environ.get("GIT_THETA_LIKE_FAULT")
    if not spec:
        return
    where, _, n = spec.partition(":")
    if where != name or not n.isdigit():
        return
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        if _counts[name] >= int(n):
            os.kill(os.getpid(), signal.SIGKILL)
