"""SingleFlight: overlapping calls for one key share one execution, its result or its error; a
call that would wait on itself raises."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from git_theta_like.concurrency import SingleFlight
from git_theta_like.errors import WaitCycleError


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


def test_work_that_waits_on_its_own_key_raises_instead_of_hanging() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    with pytest.raises(WaitCycleError):
        flight.run("k", lambda: flight.run("k", lambda: 1))
    assert flight.run("k", lambda: 2) == 2  # nothing left behind


def test_a_wait_cycle_across_threads_raises_in_both() -> None:
    """Thread 1 runs a, which needs b; thread 2 runs b, which needs a: once thread 1 waits on b,
    thread 2's call for a would wait on itself through thread 1."""
    flight: SingleFlight[str, int] = SingleFlight()
    b_started = threading.Event()

    def work_a() -> int:
        assert b_started.wait(10)
        return flight.run("b", work_b)

    def work_b() -> int:
        b_started.set()
        time.sleep(0.3)  # thread 1 is waiting on b by now
        return flight.run("a", work_a)

    with ThreadPoolExecutor(2) as pool:
        one = pool.submit(flight.run, "a", work_a)
        two = pool.submit(flight.run, "b", work_b)
        for f in (one, two):
            with pytest.raises(WaitCycleError):
                f.result(10)
