"""Map-reduce over chunks of a data set on a Dask cluster (the optional extra ``scale``; ``docs/scaling.md``).

EM's E-step is a sum over images (SPEC §1, §3): every chunk of images reduces to small sufficient
statistics that add. This module holds the part that does not depend on the model:

* :func:`get_client` -- a ``distributed.Client`` from a client or a scheduler address, with the
  install hint when Dask is absent;
* :func:`scatter_chunks` -- put the chunks on the workers once (``client.scatter`` of array slices, or
  the blocks of a ``dask.array.Array`` computed in place), grouped by the worker that holds them;
* :func:`map_reduce` -- map a function over the chunks, each task pinned to the worker that holds
  its chunk, add the results on each worker (a pairwise tree), then add the per-worker sums (a tree
  across workers), and bring the one total back to the client. Network traffic per call: the
  broadcast arguments to each worker, and ``W`` partial sums (``W`` workers), independent of ``N``.

Nothing here imports Dask at import time: ``import drmm_ref`` works without it, and the first call
that needs it raises an :class:`ImportError` saying ``pip install "drmm-ref[scale]"``.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = ["INSTALL_HINT", "require_distributed", "is_dask_array", "get_client", "ScatteredChunks",
           "scatter_chunks", "map_reduce", "pairwise_sum"]

INSTALL_HINT = 'pip install "drmm-ref[scale]"  (Dask: dask[array] and distributed)'


def require_distributed() -> Any:
    """Import and return :mod:`distributed`, or raise an :class:`ImportError` with the install hint."""
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(f"running on a Dask cluster needs the optional extra 'scale', which is not installed: "
                          f"{INSTALL_HINT}") from exc
    return distributed


def is_dask_array(x: Any) -> bool:
    """``True`` for a ``dask.array.Array`` (checked without importing Dask)."""
    return type(x).__module__.startswith("dask.array") and hasattr(x, "to_delayed")


def get_client(client: Any) -> tuple[Any, bool]:
    """``(client, owned)``: ``client`` itself, or a new ``distributed.Client`` connected to the address ``client``.

    ``owned`` is ``True`` when this function made the client (the caller closes it).

    Raises
    ------
    ImportError
        Dask is not installed (the message says how to install the extra).
    TypeError
        ``client`` is neither a ``distributed.Client`` nor an address string.
    """
    distributed = require_distributed()
    if isinstance(client, distributed.Client):
        return client, False
    if isinstance(client, str):
        return distributed.Client(client), True
    raise TypeError(f"client must be a distributed.Client or a scheduler address such as 'tcp://host:8786', "
                    f"got {type(client).__name__}")


@dataclasses.dataclass
class ScatteredChunks:
    """Chunks held by the workers.

    Attributes
    ----------
    by_worker : dict
        Worker address -> list of ``(index, data future, extra future or None, offset)``, in chunk order.
    sizes : list of int
        Rows of each chunk (in chunk order).
    futures : list
        Every future (to release them).
    """

    by_worker: dict
    sizes: list
    futures: list

    @property
    def num_chunks(self) -> int:
        return len(self.sizes)

    def release(self) -> None:
        for f in self.futures:
            f.release()
        self.futures = []
        self.by_worker = {}


def _slices(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def scatter_chunks(client: Any, data: Any, extra: Optional[np.ndarray] = None, *,
                   chunk_size: Optional[int] = None) -> ScatteredChunks:
    """Put ``data`` on the workers in chunks of rows, with the matching rows of ``extra`` (e.g. labels).

    Parameters
    ----------
    client : distributed.Client
    data : array of shape (N, ...)
        A NumPy or CuPy array (sliced on the client and scattered), or a ``dask.array.Array`` (its
        blocks along axis 0 are computed on the workers, where they stay; rechunked to
        ``chunk_size`` rows if given, and to one block along the other axes).
    extra : array of shape (N, ...), optional
        Small per-row data (labels), sliced on the client and scattered beside its chunk.
    chunk_size : int, optional
        Rows per chunk; default for in-memory data: ``ceil(N / (4 W))`` (``W`` workers).
    """
    distributed = require_distributed()
    n = int(data.shape[0])
    workers = list(client.scheduler_info()["workers"])
    if not workers:
        raise RuntimeError("the Dask cluster has no workers; start some (e.g. dask worker ADDRESS) and retry")
    if is_dask_array(data):
        if chunk_size is not None:
            data = data.rechunk({0: int(chunk_size), **{a: -1 for a in range(1, data.ndim)}})
        elif any(len(c) > 1 for c in data.chunks[1:]):
            data = data.rechunk({a: -1 for a in range(1, data.ndim)})
        sizes = [int(s) for s in data.chunks[0]]
        data_futs = client.compute(list(data.to_delayed().ravel()))
    else:
        size = int(chunk_size) if chunk_size is not None else max(1, -(-n // (4 * len(workers))))
        bounds = _slices(n, size)
        sizes = [e - s for s, e in bounds]
        data_futs = client.scatter([data[s:e, ...] for s, e in bounds])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    distributed.wait(data_futs)
    holders = client.who_has(data_futs)
    extra_futs = [None] * len(sizes)
    by_worker: dict = {}
    for i, f in enumerate(data_futs):
        w = sorted(holders[f.key])[0]
        if extra is not None:
            s = int(offsets[i])
            extra_futs[i] = client.scatter(extra[s:s + sizes[i]], workers=[w])
        by_worker.setdefault(w, []).append((i, f, extra_futs[i], int(offsets[i])))
    futures = list(data_futs) + [f for f in extra_futs if f is not None]
    return ScatteredChunks(by_worker=by_worker, sizes=sizes, futures=futures)


def pairwise_sum(items: Sequence[Any], add: Callable[[Any, Any], Any] = operator.add) -> Any:
    """``items[0] + items[1] + ...`` as a balanced binary tree (adjacent pairs, level by level)."""
    level = list(items)
    if not level:
        raise ValueError("items is empty: nothing to add")
    while len(level) > 1:
        level = [add(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)]
    return level[0]


def map_reduce(client: Any, fn: Callable, chunks: ScatteredChunks, **kwargs: Any) -> Any:
    """``sum_i fn(data_i, extra_i, offset_i, **kwargs)`` over the chunks, computed by the workers.

    ``kwargs`` are scattered once to every worker (broadcast). Each task runs on the worker that
    holds its chunk (``allow_other_workers`` lets the scheduler move it if that worker is lost); the
    results are added on that worker by a pairwise tree, then the per-worker sums by a tree across
    workers; only the total comes back. ``fn``'s results must support ``+``.
    """
    if chunks.num_chunks == 0:
        raise ValueError("chunks is empty: nothing to map over")
    shared = {k: client.scatter(v, broadcast=True, hash=False) for k, v in kwargs.items()}
    partials = []
    for w, items in chunks.by_worker.items():
        futs = [client.submit(fn, f, e, off, **shared, workers=[w], allow_other_workers=True, pure=False)
                for _, f, e, off in items]
        partials.append(pairwise_sum(futs, lambda a, b, w=w: client.submit(
            operator.add, a, b, workers=[w], allow_other_workers=True, pure=False)))
    total = pairwise_sum(partials, lambda a, b: client.submit(operator.add, a, b, pure=False))
    result = total.result()
    for f in shared.values():
        f.release()
    return result
