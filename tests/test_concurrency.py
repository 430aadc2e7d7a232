"""SingleFlight: overlapping calls for one key share one execution, its result or its error."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from git_theta_like.concurrency import SingleFlight


def test_overlapping_calls_run_the_work_once() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    started = threading.Event()
    release = threading.Event()
    calls = []

    def work() -> int:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return 42

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(flight.run, "k", work)
        assert started.wait(10)
        others = [pool.submit(flight.run, "k", work) for _ in range(3)]
        time.sleep(0.2)  # the others are waiting on the first by now
        release.set()
        assert [f.result(10) for f in (first, *others)] == [42] * 4
    assert len(calls) == 1


def test_waiters_get_the_error_and_the_key_is_forgotten() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    started = threading.Event()
    release = threading.Event()

    def failing() -> int:
        started.set()
        assert release.wait(10)
        raise ValueError("broken")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(flight.run, "k", failing)
        assert started.wait(10)
        waiter = pool.submit(flight.run, "k", failing)
        time.sleep(0.2)
        release.set()
        for f in (first, waiter):
            with pytest.raises(ValueError, match="broken"):
                f.result(10)
    # done work is not remembered: a later call runs again
    assert flight.run("k", lambda: 7) == 7
    assert flight.run("other", lambda: 8) == 8
