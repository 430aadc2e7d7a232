"""Thread settings made before numpy loads. Bottom layer: imports nothing of ours."""

from __future__ import annotations

import os


def single_threaded_blas() -> None:
    """We spread tensor work over the cores ourselves; BLAS threads on top of ours only contend
    (and OpenBLAS's idle threads cost CPU at start-up). Must run before numpy is imported; a
    user's own setting is kept."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
