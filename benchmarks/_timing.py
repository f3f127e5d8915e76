"""Timing shared by the benchmark scripts: best of N calls after a warm-up, GPU synchronised."""

from __future__ import annotations

import time

from drmm_ref import backend


def sync(xp) -> None:
    """Wait for queued GPU work (CuPy); nothing on CPU namespaces."""
    if backend.namespace_name(xp) == "cupy":
        import cupy

        cupy.cuda.Device().synchronize()


def best_time(fn, xp, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up (compile) call, device synchronised."""
    fn()
    sync(xp)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(xp)
        best = min(best, time.perf_counter() - start)
    return best
