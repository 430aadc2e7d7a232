"""Process settings made at start-up, before numpy loads: BLAS threads, and how the C allocator
treats the large buffers tensors live in. Bottom layer: imports nothing of ours."""

from __future__ import annotations

import os


def single_threaded_blas() -> None:
    """We spread tensor work over the cores ourselves; BLAS threads on top of ours only contend
    (and OpenBLAS's idle threads cost CPU at start-up). Must run before numpy is imported; a
    user's own setting is kept."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")


def single_threaded_numpy_blas() -> None:
    """For the merge commands, which keep torch's threads (MKL and OpenMP): numpy's OpenBLAS
    alone single-threaded. The clean they drive runs the chooser's small SVDs on its pool's
    threads, where OpenBLAS threads on top made each one 6-14x slower (a quarter of a merge
    driver's CPU). Must run before numpy is imported; a user's own setting is kept."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# glibc's mallopt parameters
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_KEEP = 1 << 30


def reuse_freed_memory(mmap_threshold: int = _KEEP) -> None:
    """Let glibc keep freed tensor buffers for the next tensor instead of returning them to the
    system: by default each buffer over 32 MiB (and, once its dynamic threshold rises, every
    large one) is a fresh mmap whose pages fault in one by one as they are first written and are
    unmapped again when freed. Decoding a checkpoint then costs about a third more CPU (measured
    on all-MiniLM-L6-v2). One arena for all threads: with one per thread, each would keep its own
    freed buffers and the peak RSS grow by a tensor or two (measured: +40-80 MiB on a 0.44 GiB
    bf16 model); with one, the peak is lower than glibc's default (checkout 308 -> 277 MiB). Large
    allocations are a few per tensor, so threads hardly contend for it. A no-op where the C
    library has no mallopt (macOS, musl).

    `mmap_threshold`: allocations of this size and up are still mapped (and unmapped when
    freed); the default keeps every size in the heap."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    mallopt(_M_TRIM_THRESHOLD, _KEEP)
    mallopt(_M_ARENA_MAX, 1)
