"""Concurrency helpers shared by the rooms that run work on thread pools (clean, merge).

`SingleFlight` runs the work for one key once among the threads that ask for it at the same
time: the first computes, the others wait for its result (or its exception). The clean path uses
it so that tied or zero tensors are encoded once; the merge's object cache, so that an object
several tensors need is decoded once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Concurrent calls of `run` for one key share one execution of the work.

    Only calls that overlap share: once the work is done, the key is forgotten and a later call
    runs the work again (callers that want to keep results cache them inside the work). A waiter
    blocks on a thread that is already running the work, so a call never waits on work that has
    not started.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[K, Future[V]] = {}

    def run(self, key: K, work: Callable[[], V]) -> V:
        """work(), or, when another thread is running the work for key, what that returns (or
        raises)."""
        with self._lock:
            pending = self._running.get(key)
            if pending is None:
                mine: Future[V] = Future()
                self._running[key] = mine
        if pending is not None:
            return pending.result()
        try:
            value = work()
        except BaseException as e:
            mine.set_exception(e)
            raise
        finally:
            with self._lock:
                del self._running[key]
        mine.set_result(value)
        return value
