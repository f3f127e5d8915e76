"""Data-parallel training steps on host threads: each thread takes a contiguous shard of the batch.

Why: the memory-bound glue of a step (im2col copies, pooling, col2im adds) is single-threaded in
NumPy, so a second BLAS thread speeds a step up little; NumPy and the BLAS release the GIL, so
shards of the batch computed on separate Python threads (each with a single-threaded BLAS) use
every core for the whole step. Measured on the 2-core development machine: a conv-small EG
gradient at batch 128 in 2 shards on 2 threads took 0.41x the single-threaded time, against 0.74x
for one shard with two BLAS threads (``benchmarks/bench_vs_torch.py`` prints the same-run ratios).

The arithmetic is that of the unsharded step (SPEC §3), only summed in another order:

1. bottom-up pass per shard (in parallel);
2. the score terms (CE, H, BAL) on the concatenated scores, on the calling thread (they are batch
   means, and BAL is not a sum over examples), and their cotangent ``sbar``;
3. per shard (in parallel): the fused downward pass with the shard's rows of ``sbar``, the
   rendering terms (RC, NN) with the *batch's* normalisers (each shard's value and cotangent
   scaled by ``N_s / N``), the upward pass, and the shard's closed-form statistics;
4. the shards' gradient trees, term values and statistics added in shard order.

So a sharded step equals the unsharded one to rounding (tested to 1e-12 relative in float64), and
is bit-identical from run to run for a given number of threads; a run resumed with another number
of threads continues on numbers that differ in the last bits.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from typing import Any

from ..drmm import DRMMParams, bottom_up
from ._tree import add_trees
from .closed_forms import PriorStats, prior_stats
from .estep import EStep, rendered_classes
from .objectives import LossWeights, Terms, _gradient_passes, _score_terms, _terms

__all__ = ["default_threads", "shard_slices", "sharded_objective_and_gradients", "sharded_scores"]

_POOLS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}
_LOCK = threading.Lock()
_CONTROLLER: Any = None


def default_threads() -> int:
    """The cores this process may use (``os.sched_getaffinity`` where available, else ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def shard_slices(n: int, shards: int) -> list[slice]:
    """``shards`` contiguous slices of ``range(n)`` whose sizes differ by at most one (none empty)."""
    shards = max(1, min(int(shards), n))
    base, extra = divmod(n, shards)
    out, start = [], 0
    for i in range(shards):
        stop = start + base + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


def _pool(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    with _LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="drmm-shard")
        return _POOLS[threads]


def restart_pools() -> None:
    """Shut the shard threads down; the next sharded call starts new ones.

    A thread takes the CPU's floating-point modes of the thread that starts it (C11 7.6), so the
    trainer calls this when it enters and leaves :func:`drmm_ref.backend.flush_denormals`: the
    shards then compute in the same mode as the calling thread.
    """
    with _LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True)


@contextlib.contextmanager
def _single_threaded_blas():
    """One BLAS thread per shard while the shards run (threads x BLAS threads would oversubscribe the cores)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    with _CONTROLLER.limit(limits=1, user_api="blas"):
        yield


def _map(fn, items, threads: int) -> list:
    return list(_pool(threads).map(fn, items))


def sharded_objective_and_gradients(params: DRMMParams, images: Any, labels: Any, weights: LossWeights,
                                    threads: int, *, stats: bool = True, relu_topdown: bool = False
                                    ) -> tuple[Terms, dict[str, Any], PriorStats | None, list[EStep]]:
    """The EG (or backprop) objective, gradient tree and closed-form statistics of a batch in ``threads`` shards.

    Equal to :func:`~drmm_ref.learning.fused_objective_and_gradients` on the whole batch (see the
    module docstring). No argument checks (``labels``: int64 of shape (N,) or None).

    Returns
    -------
    Terms, dict, PriorStats or None, list of EStep
        The terms, the gradient tree, the batch's closed-form statistics (``stats=True``), and each
        shard's E-step (its bottom-up pass, classes and rendering).
    """
    xp = params.xp
    n = int(images.shape[0])
    slices = shard_slices(n, threads)
    with _single_threaded_blas():
        forwards = _map(lambda sl: bottom_up(params, images[sl, ...], check=False), slices, threads)
        scores = xp.concat([fw.scores for fw in forwards], axis=0)
        values, grad_scores = _score_terms(scores, labels, weights, xp)

        def down_up(i: int):
            sl, fw = slices[i], forwards[i]
            lab = None if labels is None else labels[sl]
            classes = rendered_classes(fw, lab)
            gs = None if grad_scores is None else grad_scores[sl, ...]
            share = (sl.stop - sl.start) / n  # batch means: each shard's part is N_s / N of its own mean
            tree, vals, rendering = _gradient_passes(params, fw, gs, classes, weights, relu_topdown, share)
            est = EStep(fw, classes, None, rendering)
            return tree, vals, (prior_stats(est) if stats else None), est

        parts = _map(down_up, range(len(slices)), threads)
    tree: dict[str, Any] = {}
    for part_tree, vals, _, _ in parts:
        tree = add_trees(tree, part_tree)
        for k, v in vals.items():
            values[k] = v if k not in values else values[k] + v
    total = None
    if stats:
        total = parts[0][2]
        for part in parts[1:]:
            total = total + part[2]
    return _terms(values, weights, xp), tree, total, [p[3] for p in parts]


def sharded_scores(params: DRMMParams, images: Any, threads: int) -> Any:
    """The class scores ``bottom_up(params, images).scores`` of shape (N, K), computed in ``threads`` shards.

    For evaluation: identical to the one-shard scores (each row is computed alone either way).
    No argument checks.
    """
    if threads <= 1 or int(images.shape[0]) < 2:
        return bottom_up(params, images, check=False).scores
    slices = shard_slices(int(images.shape[0]), threads)
    with _single_threaded_blas():
        parts = _map(lambda sl: bottom_up(params, images[sl, ...], check=False).scores, slices, threads)
    return params.xp.concat(parts, axis=0)
