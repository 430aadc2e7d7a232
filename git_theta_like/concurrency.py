"""Concurrency helpers shared by the rooms that run work on thread pools (clean, merge, diff).

`SingleFlight` runs the work for one key once among the threads that ask for it at the same
time: the first computes, the others wait for its result (or its exception). The clean path uses
it so that tied or zero tensors are encoded once; the object reader (store/reader.py), so that an
object several tensors need is decoded once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

from git_theta_like.errors import WaitCycleError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Concurrent calls of `run` for one key share one execution of the work.

    Only calls that overlap share: once the work is done, the key is forgotten and a later call
    runs the work again (callers that want to keep results cache them inside the work). A waiter
    blocks on a thread that is already running the work, so a call never waits on work that has
    not started. Work may call `run` for other keys (nested); a call that would wait on itself,
    directly (the work for a key asks for that key) or through threads that wait in turn on one
    another, raises WaitCycleError instead of blocking forever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[K, tuple[Future[V], int]] = {}  # key -> its result, the running thread
        self._waiting: dict[int, tuple[K, Future[V]]] = {}  # thread -> the key and result it waits for

    def run(self, key: K, work: Callable[[], V]) -> V:
        """work(), or, when another thread is running the work for key, what that returns (or
        raises)."""
        me = threading.get_ident()
        with self._lock:
            running = self._running.get(key)
            if running is None:
                mine: Future[V] = Future()
                self._running[key] = (mine, me)
            else:
                if self._waits_on(running[1], me):
                    raise WaitCycleError(f"the work for {key!r} waits on its own result")
                self._waiting[me] = (key, running[0])
        if running is not None:
            try:
                return running[0].result()
            finally:
                with self._lock:
                    del self._waiting[me]
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

    def _waits_on(self, thread: int, me: int) -> bool:
        """Whether `thread` is `me` or waits, through a chain of waiting threads, on `me` (the
        lock held)."""
        while thread != me:
            waits = self._waiting.get(thread)
            running = self._running.get(waits[0]) if waits is not None else None
            if waits is None or running is None or running[0] is not waits[1]:
                return False  # not waiting, or on work that is done (it is about to wake)
            thread = running[1]
        return True
