"""Streamed and distributed E-steps for the RMM's EM (SPEC §1; ``docs/scaling.md``).

:func:`drmm_ref.rmm.fit` runs one EM loop over a *pass*: a callable ``params -> EMStats`` that does
one E-step over every image and returns the summed sufficient statistics
(:mod:`drmm_ref.rmm.stats`). The M-step (:func:`~drmm_ref.rmm.em.m_step_from_stats`) reads only the
totals. Two passes live here:

* :class:`ChunkedPass` (``fit(..., chunk_size=B)``): in this process, one chunk of ``B`` images at
  a time; the chunk's posteriors (``B K M |G|`` numbers) are freed before the next chunk, and the
  statistics are added by a binary counter (``O(log N)`` partial sums). Peak memory is ``O(B)``
  beyond the images themselves, which may be a ``numpy.memmap`` on disk.
* :class:`DaskPass` (``fit(..., client=...)``): the chunks live on the workers of a Dask cluster
  (:mod:`drmm_ref.scale`); each iteration broadcasts the parameters, maps :func:`chunk_statistics`
  over the chunks (each task on the worker that holds its chunk), adds the statistics on each
  worker, then across workers, and runs the M-step on the client. Chunks may be NumPy or CuPy
  arrays (a dask array of CuPy blocks, e.g. with ``dask-cuda``'s one worker per GPU): the worker
  moves the parameters to its chunk's device and sends host statistics back.

Hard EM's trace needs the complete-data objective after each M-step at the E-step's latents; the
streamed passes do not keep latents and compute it from the hard statistics
(:func:`~drmm_ref.rmm.stats.complete_data_objective`).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import scale
from .._backend import asarray, device_of, get_namespace, to_numpy
from .em import _check_em_params, _estep_statistics, e_step, hard_e_step
from .params import RMMParams
from .stats import EMStats, complete_data_objective, sum_statistics

__all__ = ["chunk_statistics", "streamed_statistics", "ChunkedPass", "DaskPass", "take_rows", "is_dask_array",
           "params_like"]

is_dask_array = scale.is_dask_array


def chunk_statistics(params: RMMParams, images: Any, labels: Optional[Any] = None, *, hard: bool = False,
                     keep_worst: int = 0, offset: int = 0) -> EMStats:
    """The E-step on one chunk of images, reduced to its sufficient statistics (SPEC §1).

    Parameters
    ----------
    params : RMMParams
        In the chunk's namespace and on its device.
    images : array of shape (B, C, H, W)
    labels : int array of shape (B,), optional
        Supervised EM (class clamped).
    hard : bool, default False
        MAP (hard) E-step instead of the posterior.
    keep_worst : int, default 0
        Keep this many lowest-objective examples (re-seeding).
    offset : int, default 0
        Index of ``images[0]`` in the whole data set.

    Returns
    -------
    EMStats
        Host ``float64`` statistics; the chunk's posteriors are freed on return.
    """
    est = (hard_e_step if hard else e_step)(params, images, labels)
    return _estep_statistics(params, images, est, keep_worst=keep_worst, offset=offset)


def _row_slice(a: Any, s: int, e: int) -> Any:
    part = a[s:e, ...]
    return np.asarray(part) if isinstance(part, np.memmap) else part


def streamed_statistics(params: RMMParams, images: Any, labels: Optional[Any] = None, *, chunk_size: int,
                        hard: bool = False, keep_worst: int = 0) -> EMStats:
    """One E-step over ``images`` in chunks of ``chunk_size``, the chunk statistics summed (memory ``O(chunk)``)."""
    n = int(images.shape[0])
    b = int(chunk_size)
    if b < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return sum_statistics(
        chunk_statistics(params, _row_slice(images, s, min(s + b, n)),
                         None if labels is None else labels[s:min(s + b, n)], hard=hard, keep_worst=keep_worst,
                         offset=s)
        for s in range(0, n, b))


def take_rows(a: Any, index: np.ndarray) -> Any:
    """``a[index]`` for sorted host indices: a dask array is computed, a memmap read, others stay in their namespace."""
    if is_dask_array(a):
        return a[index].compute()
    if isinstance(a, np.ndarray):
        return np.asarray(a[index])
    xp = get_namespace(a)
    return xp.take(a, asarray(index, xp=xp, device=device_of(a)), axis=0)


def params_like(params: RMMParams, like: Any) -> RMMParams:
    """``params`` in the namespace and on the device of the array ``like`` (unchanged when they already are)."""
    xp = get_namespace(like)
    if get_namespace(params.templates) is xp and device_of(params.templates) == device_of(like):
        return params
    dev = device_of(like)
    put = lambda a: None if a is None else asarray(to_numpy(a), xp=xp, device=dev)  # noqa: E731
    return params.replace(templates=put(params.templates), class_prior=put(params.class_prior),
                          switch_prior=put(params.switch_prior), nuisance_prior=put(params.nuisance_prior))


def _dtype_name(dtype: Any) -> str:
    return str(dtype).rsplit(".", 1)[-1]


def _check_stream_inputs(params: RMMParams, images: Any, labels: Optional[Any]) -> None:
    """Shape and dtype checks that need no pass over the data (the chunks are checked as they are read)."""
    _check_em_params(params)
    expected = (params.channels, *params.image_shape)
    if len(images.shape) != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must have shape (N, C, H, W) = (N, {expected[0]}, {expected[1]}, {expected[2]}) "
                         f"for this model, got {tuple(images.shape)}")
    if _dtype_name(images.dtype) != _dtype_name(params.dtype):
        raise TypeError(f"images has dtype {images.dtype} but the model has {params.dtype}; cast one of them "
                        "(RMMParams.astype)")
    if labels is not None and tuple(labels.shape) != (images.shape[0],):
        raise ValueError(f"labels must have shape (N,) = ({images.shape[0]},), got {tuple(labels.shape)}")


class ChunkedPass:
    """One E-step over every image, a chunk at a time, in this process (module docstring).

    Parameters
    ----------
    images : array of shape (N, C, H, W)
        Sliced ``images[s:s + chunk_size]``; a ``numpy.memmap`` is read chunk by chunk.
    labels : int array of shape (N,), optional
    hard : bool
    chunk_size : int
    reseed_empty : bool
        Keep the ``K M`` worst-explained examples for re-seeding.
    """

    def __init__(self, images: Any, labels: Optional[Any], *, hard: bool, chunk_size: int, reseed_empty: bool):
        self.images, self.labels, self.hard = images, labels, bool(hard)
        self.chunk_size, self.reseed_empty = int(chunk_size), bool(reseed_empty)
        self.keep_worst = 0

    def prepare(self, params: RMMParams) -> RMMParams:
        """Check the data against ``params`` (shapes, dtype) and return the parameters EM starts from."""
        _check_stream_inputs(params, self.images, self.labels)
        self.keep_worst = params.num_classes * params.num_subtemplates if self.reseed_empty else 0
        return params

    def __call__(self, params: RMMParams) -> EMStats:
        return streamed_statistics(params, self.images, self.labels, chunk_size=self.chunk_size, hard=self.hard,
                                   keep_worst=self.keep_worst)

    def complete_objective(self, params: RMMParams, stats: EMStats) -> float:
        return complete_data_objective(params, stats)

    def close(self) -> None:
        pass


def _chunk_task(images: Any, labels: Optional[Any], offset: int, params: RMMParams, hard: bool,
                keep_worst: int) -> EMStats:
    """What a Dask worker runs on one chunk: parameters to the chunk's device, E-step, host statistics."""
    params = params_like(params, images)
    if labels is not None:
        labels = asarray(to_numpy(labels), xp=get_namespace(images), device=device_of(images))
    return chunk_statistics(params, images, labels, hard=hard, keep_worst=keep_worst, offset=offset)


def _params_to_host(params: RMMParams) -> RMMParams:
    return params_like(params, np.zeros(0, dtype=np.float64))


class DaskPass:
    """One E-step over every image on a Dask cluster (module docstring; :mod:`drmm_ref.scale`).

    The chunks are put on the workers once (at construction) and stay there for every iteration
    and restart; :meth:`close` releases them (and closes a client made from an address).

    Parameters
    ----------
    client : distributed.Client or str
        A client or a scheduler address.
    images : array of shape (N, C, H, W)
        NumPy/CuPy (scattered in chunks of ``chunk_size``) or a ``dask.array.Array`` (its blocks).
    labels : int array of shape (N,), optional
        Sliced on the client and scattered beside each chunk.
    hard : bool
    chunk_size : int, optional
        Default for in-memory data: ``ceil(N / (4 W))`` for ``W`` workers.
    reseed_empty : bool
        Keep the ``K M`` worst-explained examples in the statistics (set by :meth:`prepare`).

    Attributes
    ----------
    history : list of dict
        Per E-step: ``seconds``, ``chunks``, ``workers``, ``params_bytes`` (pickled, sent to each
        worker), ``stats_bytes`` (one pickled :class:`EMStats`, what each partial sum sends).
    """

    def __init__(self, client: Any, images: Any, labels: Optional[Any], *, hard: bool,
                 chunk_size: Optional[int] = None, reseed_empty: bool = False):
        self.client, self._owned = scale.get_client(client)
        self.images, self.hard, self.reseed_empty = images, bool(hard), bool(reseed_empty)
        self.labels = None if labels is None else np.asarray(
            labels.compute() if is_dask_array(labels) else to_numpy(labels))
        if self.labels is not None and self.labels.shape != (int(images.shape[0]),):
            raise ValueError(f"labels must have shape (N,) = ({int(images.shape[0])},), got {self.labels.shape}")
        self.keep_worst = 0
        self.history: list = []
        try:
            self.chunks = scale.scatter_chunks(self.client, images, self.labels, chunk_size=chunk_size)
        except BaseException:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        return len(self.chunks.by_worker)

    def prepare(self, params: RMMParams) -> RMMParams:
        """Check shapes and dtype; the client's parameters are host NumPy (the M-step runs on the client)."""
        params = _params_to_host(params)
        _check_stream_inputs(params, self.images, self.labels)
        self.keep_worst = params.num_classes * params.num_subtemplates if self.reseed_empty else 0
        return params

    def __call__(self, params: RMMParams) -> EMStats:
        import pickle
        import time

        start = time.perf_counter()
        stats = scale.map_reduce(self.client, _chunk_task, self.chunks, params=params, hard=self.hard,
                                 keep_worst=self.keep_worst)
        self.history.append({"seconds": time.perf_counter() - start, "chunks": self.chunks.num_chunks,
                             "workers": self.num_workers, "params_bytes": len(pickle.dumps(params)),
                             "stats_bytes": len(pickle.dumps(stats))})
        return stats

    def complete_objective(self, params: RMMParams, stats: EMStats) -> float:
        return complete_data_objective(params, stats)

    def close(self) -> None:
        chunks = getattr(self, "chunks", None)
        if chunks is not None:
            chunks.release()
        if self._owned:
            self.client.close()
            self._owned = False
