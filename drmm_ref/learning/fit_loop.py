r"""The fit loop: epochs of mini-batch EG (or backprop) steps and the closed-form M-step, in memory.

SPEC §3. :func:`fit` takes parameters, training batches and a :class:`~drmm_ref.learning.TrainConfig`
and returns the fitted parameters, the optimiser state and the per-epoch history; it reads and
writes no file, keeps no log and shows no progress bar (:func:`~drmm_ref.learning.train` is the
layer around it that does: data splits, evaluation, monitoring, logs, checkpoints, resume, locking).

One epoch ``e`` (1-based, of ``config.epochs``):

1. the epoch's batch schedule is drawn from the generator at the epoch's start
   (:meth:`Batches.schedule`: a permutation cut into batches, or labelled/unlabelled pairs);
2. the epoch's learning rate comes from ``config.lr_schedule``
   (:class:`~drmm_ref.learning.optim.LRSchedule`);
3. per batch, the M-step's per-batch part: ``model = "drmm"``: one EG step
   (:func:`~drmm_ref.learning.eg_step`: E-step, G-step, the optional exact block steps on RC),
   its closed-form statistics summed; ``model = "dcn"``: one backprop step on CE;
4. ``drmm``: at the epoch's end, the M-step's closed forms from the summed statistics
   (:func:`~drmm_ref.learning.apply_closed_forms`: class prior, switch priors, noise variance);
   with ``config.m_step = "whole-set"`` instead the whole-set M-step of the DRMM's EM
   (:func:`whole_set_update`): an E-step over every training image at the parameters the G-steps
   left, then at those fixed latents the closed forms from its statistics and one exact CGLS block
   step on RC over the whole set per block (:mod:`~drmm_ref.learning.whole_set`), logged in the
   epoch's record (``whole_set``).

Why the whole-set variant keeps the G-step pass (SPEC §3): the DRMM is trained by generalised EM with
hard latents, and CE, NN, H and the biases change only in G-steps; an epoch of E and M over the whole
set alone would train neither the classifier's cross-entropy nor the biases. The exact block steps
are the part of the M-step with a closed answer at fixed latents, and SPEC §3 lets them use "the whole
training set per CG iteration" instead of damped mini-batch updates: that is this variant. The
whole-set M-step is deterministic (no generator draw), so a run resumed from any checkpoint, which is
written after it, stays bit-identical.

.. math::

    \theta_{t+1} = \mathrm{opt}_{\eta_e}\big(\theta_t,
        \nabla_\theta L(\theta_t; B_t, \text{latents}(\theta_t, B_t))\big),
    \qquad (\pi_c, \pi_{on}, \sigma^2) \leftarrow \text{closed forms}\Big(\sum_{t \in e} \text{stats}_t\Big)

**Divergence**: every step's objective terms are checked; the first non-finite term, or an update
that leaves non-finite parameters, raises :class:`TrainingDiverged` naming the epoch, the step
and the term.

**Exactness**: everything random comes from the one generator (``rng``), drawn at each epoch's
start, and the optimiser state is carried in full, so a fit continued from a position (``epoch``,
``partial``, the optimiser state and the generator state at that epoch's start) ends bit-identical
to an uninterrupted one; this is what the trainer's checkpoints store.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np

from .. import _backend
from ..drmm import DRMMParams
from ..drmm.params import NonFiniteParameters
from ..numerics import dtype_name
from ._tree import trainable
from .closed_forms import PriorStats, apply_closed_forms
from .config import TrainConfig
from .objectives import UNLABELLED
from .parallel import default_threads
from .semi import LabelSplit, paired_batches
from .steps import StepTrace, backprop_step, eg_step
from .whole_set import whole_set_e_step, whole_set_m_step

__all__ = ["fit", "FitResult", "FitState", "EpochProgress", "Batches", "TrainingDiverged", "check_split",
           "STEP_COLUMNS", "whole_set_update"]

#: Per-step columns of an epoch's trace (``log.json``'s ``steps[epoch-1]``; a mid-epoch checkpoint's partial epoch).
STEP_COLUMNS = ("objective", "ce", "rc", "nn", "h", "balance", "rc_after_e", "rc_after_m", "seconds")
_TERMS = ("objective", "ce", "rc", "nn", "h", "balance")


class TrainingDiverged(FloatingPointError):
    """A step produced a non-finite objective term or non-finite parameters.

    Attributes
    ----------
    epoch, step : int
        Where (``step`` is 1-based within the epoch; 0 for the epoch's end-of-epoch record).
    term : str
        The first non-finite term (``objective``, ``ce``, ``rc``, ...) or ``parameters``.
    checkpoint : Path or None
        The last good checkpoint, untouched (None from :func:`fit`, or when the run had written none).
    detail : str
        What was found (``"rc = inf"``).
    """

    def __init__(self, message: str, epoch: int, step: int, term: str, checkpoint: Any = None, detail: str = ""):
        super().__init__(message)
        self.epoch, self.step, self.term, self.checkpoint = epoch, step, term, checkpoint
        self.detail = detail or message


def diverged(epoch: int, step: int, term: str, detail: str, *, run: bool = False,
             checkpoint: Any = None) -> TrainingDiverged:
    """The :class:`TrainingDiverged` of a fit, or of a run (``run=True``: names ``checkpoint``, the last good one)."""
    kept = ""
    if run:
        kept = (f"; the last good checkpoint, {checkpoint}, is kept" if checkpoint is not None
                else "; no checkpoint had been written yet")
    return TrainingDiverged(f"training diverged at epoch {epoch}, step {step}: {detail}{kept}. Lower the learning "
                            "rate (lr) or the loss weights, or check the data's scale", epoch, step, term,
                            checkpoint, detail)


# -------------------------------------------------------------------------------- batches
def check_split(images: np.ndarray, labels: np.ndarray, net: Any, name: str, *, unlabelled: bool = False) -> None:
    """Check one data split against the network once (the steps then skip their per-batch checks).

    Raises ``ValueError`` naming the split: NaN or inf images, images of another shape than the
    network's, as many labels as images, labels outside ``0..K-1`` (``UNLABELLED`` allowed when
    ``unlabelled``).
    """
    if not np.all(np.isfinite(images)):
        raise ValueError(f"the {name} images contain NaN or inf; clean the data first")
    if tuple(images.shape[1:]) != net.image_shape or images.shape[0] != labels.shape[0]:
        raise ValueError(f"the {name} split has images of shape {tuple(images.shape)} and {labels.shape[0]} labels; "
                         f"network {net.name!r} needs (N, {', '.join(map(str, net.image_shape))}) and N labels")
    known = labels[labels != UNLABELLED] if unlabelled else labels
    if labels.size and ((labels.min() < 0 and not unlabelled) or (known.size and known.min() < 0)
                        or (known.size and known.max() >= net.n_classes)):
        extra = f" (or {UNLABELLED} for an unlabelled image)" if unlabelled else ""
        raise ValueError(f"the {name} labels must lie in 0..{net.n_classes - 1}{extra}")


@dataclasses.dataclass(frozen=True)
class Batches:
    """The training set as host arrays and how an epoch cuts it into mini-batches.

    Attributes
    ----------
    images : ndarray of shape (N, C, H, W)
    labels : int64 ndarray of shape (N,)
        Labels; those of the unlabelled images (``split.unlabelled``) are never read.
    batch_size : int
    split : LabelSplit or None
        None: supervised, an epoch is a permutation of all images cut into batches. Otherwise an
        epoch is one pass over ``split.unlabelled``, each batch paired with as many labelled images
        (:func:`~drmm_ref.learning.semi.paired_batches`), one step on ``[labelled; unlabelled]``.
    labels_only : bool, default False
        Paired batches: step on the labelled half alone (the DCN baseline of a semi-supervised run).
    """

    images: np.ndarray
    labels: np.ndarray
    batch_size: int
    split: LabelSplit | None = None
    labels_only: bool = False

    @classmethod
    def from_arrays(cls, images: Any, labels: Any, batch_size: int, *, net: Any = None,
                    labels_only: bool = False) -> Batches:
        """Batches of arrays in memory (any namespace; copied to the host once).

        Labels equal to :data:`~drmm_ref.learning.UNLABELLED` mark unlabelled images: the epoch is
        then one pass over them in paired batches (semi-supervised; all unlabelled: unsupervised).
        With ``net`` the arrays are checked against it (:func:`check_split`).
        """
        x = np.ascontiguousarray(_backend.to_numpy(images))
        y = np.asarray(_backend.to_numpy(labels))
        if y.ndim != 1 or x.ndim < 1 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array (one per image), got dtype {y.dtype} and shape "
                             f"{y.shape}")
        y = y.astype(np.int64)
        if x.shape[0] == 0:
            raise ValueError("images is empty: there is nothing to fit")
        if net is not None:
            check_split(x, y, net, "training", unlabelled=True)
        split = None
        if np.any(y == UNLABELLED):
            mask = y == UNLABELLED
            split = LabelSplit(np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64),
                               int((~mask).sum()), -1)  # seed -1: the split was given, not drawn
        return cls(x, y, int(batch_size), split, labels_only)

    @property
    def n_batches(self) -> int:
        """Steps per epoch."""
        n = self.labels.shape[0] if self.split is None else self.split.unlabelled.size
        return math.ceil(n / self.batch_size)

    def schedule(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """One epoch's batches as ``(labelled indices, unlabelled indices or None)``, drawn from ``rng``."""
        if self.split is None:
            perm = rng.permutation(self.labels.shape[0])
            return [(perm[s:s + self.batch_size], None) for s in range(0, perm.size, self.batch_size)]
        return paired_batches(self.split, self.batch_size, rng)

    def batch(self, pair: tuple[Any, Any], dtype: str, xp: Any, device: Any = None) -> tuple[Any, Any]:
        """The step's images (cast to ``dtype``) and labels on ``xp``; the unlabelled half gets ``UNLABELLED``."""
        idx_l, idx_u = pair
        return batch_arrays(self.images, self.labels, idx_l, None if self.labels_only else idx_u, dtype, xp, device)


def batch_arrays(images: np.ndarray, labels: np.ndarray, idx_l: Any, idx_u: Any, dtype: str, xp: Any,
                 device: Any = None) -> tuple[Any, Any]:
    """``[images[idx_l]; images[idx_u]]`` and ``[labels[idx_l]; UNLABELLED...]`` on ``xp``.

    ``idx_u`` None: the labelled images alone.
    """
    if idx_u is None:
        x, y = images[idx_l], labels[idx_l]
    else:
        x = np.concatenate([images[idx_l], images[idx_u]])
        y = np.concatenate([labels[idx_l], np.full(idx_u.size, UNLABELLED, dtype=labels.dtype)])
    return (_backend.asarray(x.astype(dtype), xp=xp, device=device),
            _backend.asarray(y, xp=xp, device=device))


# -------------------------------------------------------------------------------- an epoch in progress
@dataclasses.dataclass
class EpochProgress:
    """An epoch's steps so far: what the closed forms and the log need, and what a mid-epoch checkpoint stores.

    :func:`fit` updates it in place after every step (a callback that keeps it must copy it).

    Attributes
    ----------
    step : int
        Steps done.
    table : dict of lists
        The per-step trace, one list per :data:`STEP_COLUMNS` entry.
    trace_seconds : list of float
        Per step, seconds spent on tracing only (excluded from ``seconds``).
    stats : PriorStats or None
        Closed-form statistics summed over the steps (EG only); once the epoch's whole-set M-step
        has run (``m_step = "whole-set"``), its E-step's statistics over every training image.
    seconds, cpu_seconds : float
        Training seconds of the steps (and of the closed forms, once applied): wall-clock and process CPU.
    wall_seconds : float
        Wall-clock seconds since the epoch started.
    start_params : DRMMParams or None
        The parameters at the epoch's start.
    """

    step: int = 0
    table: dict[str, list] = dataclasses.field(default_factory=lambda: {k: [] for k in STEP_COLUMNS})
    trace_seconds: list[float] = dataclasses.field(default_factory=list)
    stats: PriorStats | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    start_params: DRMMParams | None = None

    def append(self, tr: StepTrace) -> None:
        """Add one step's trace (terms, RC after E and M, seconds, statistics)."""
        def r(v):
            return None if v is None else float(v)

        for key in _TERMS:
            self.table[key].append(r(getattr(tr.terms, key)))
        self.table["rc_after_e"].append(r(tr.rc_after_e))
        self.table["rc_after_m"].append(r(tr.rc_after_m))
        self.table["seconds"].append(r(tr.seconds))
        self.trace_seconds.append(float(tr.trace_seconds))
        if self.stats is not None and tr.stats is not None:
            self.stats = self.stats + tr.stats
        self.seconds += tr.seconds
        self.cpu_seconds += tr.cpu_seconds
        self.step += 1

    def to_json(self, epoch: int) -> dict:
        """The JSON position of a mid-epoch checkpoint in epoch ``epoch`` (``start_params`` are stored as arrays)."""
        return {"epoch": epoch, "step": self.step, "steps": self.table, "trace_seconds": self.trace_seconds,
                "stats": _stats_to_json(self.stats), "seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
                "wall_seconds": self.wall_seconds}

    @classmethod
    def from_json(cls, d: dict, start_params: DRMMParams | None = None) -> EpochProgress:
        """Inverse of :meth:`to_json`."""
        return cls(int(d["step"]), d["steps"], list(d["trace_seconds"]), _stats_from_json(d["stats"]),
                   float(d["seconds"]), float(d["cpu_seconds"]), float(d["wall_seconds"]), start_params)


def _stats_to_json(stats: PriorStats | None) -> dict | None:
    if stats is None:
        return None
    return {"class_counts": [float(v) for v in stats.class_counts], "on_counts": [float(v) for v in stats.on_counts],
            "unit_counts": [float(v) for v in stats.unit_counts], "squared_residual": float(stats.squared_residual),
            "pixels": int(stats.pixels)}


def _stats_from_json(d: dict | None) -> PriorStats | None:
    if d is None:
        return None
    return PriorStats(np.asarray(d["class_counts"], dtype=np.float64), np.asarray(d["on_counts"], dtype=np.float64),
                      np.asarray(d["unit_counts"], dtype=np.float64), float(d["squared_residual"]), int(d["pixels"]))


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def step_summary(table: dict[str, list], trace_seconds: list[float]) -> dict[str, Any]:
    """Means of an epoch's step trace, the number of M-steps that raised RC and the tracing seconds ({} if no step)."""
    if not table["objective"]:
        return {}
    rec: dict[str, Any] = {f"mean_{key}": _mean(table[key]) for key in _TERMS}
    rec["mean_rc_after_e"] = _mean(table["rc_after_e"])
    rec["mean_rc_after_m"] = _mean(table["rc_after_m"])
    pairs = [(e, m) for e, m in zip(table["rc_after_e"], table["rc_after_m"]) if e is not None and m is not None]
    rec["m_steps_raising_rc"] = sum(1 for e, m in pairs if m > e) if pairs else None
    rec["trace_seconds"] = float(sum(trace_seconds))
    return rec


def prior_summary(stats: PriorStats | None) -> dict[str, Any]:
    """The closed-form priors and ``sigma^2`` the statistics give ({} for the DCN)."""
    if stats is None:
        return {}
    return {"class_prior": [float(v) for v in stats.class_prior],
            "switch_prior": [float(v) for v in stats.switch_prior],
            "noise_variance": stats.noise_variance if stats.pixels else None}


# -------------------------------------------------------------------------------- the whole-set M-step
class _HostChunks:
    """The training images as :mod:`~drmm_ref.learning.whole_set` reads them: ``shape`` and slices along
    axis 0 (``x[s:e]`` or ``x[s:e, ...]``), each cast to ``dtype`` and moved to ``xp`` on demand, so only
    a chunk ever lives on the device."""

    def __init__(self, images: np.ndarray, dtype: str, xp: Any, device: Any):
        self.images, self.dtype, self.xp, self.device = images, dtype, xp, device

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    def __getitem__(self, key: Any) -> Any:
        rows = key[0] if isinstance(key, tuple) else key
        if not isinstance(rows, slice) or (isinstance(key, tuple) and any(k is not Ellipsis for k in key[1:])):
            raise TypeError(f"only slices along the first axis are supported, got {key!r}")
        return _backend.asarray(self.images[rows].astype(self.dtype), xp=self.xp, device=self.device)


def whole_set_update(params: DRMMParams, batches: Batches, config: TrainConfig) -> tuple[DRMMParams, PriorStats,
                                                                                         dict[str, Any]]:
    """The whole-set M-step of an epoch (SPEC §3): E-step over every training image, closed forms, block steps.

    :func:`~drmm_ref.learning.whole_set.whole_set_e_step` on all of ``batches.images`` (the labels of
    ``batches.split.unlabelled`` replaced by ``UNLABELLED``: those images render from the DCN's
    decision), then :func:`~drmm_ref.learning.whole_set.whole_set_m_step` at those fixed latents with
    ``config.whole_set_blocks``, ``config.k_cg``, ``config.cg_damping``, ``config.chunk_size`` and
    ``config.m_step_latents``.

    Returns
    -------
    params : DRMMParams
    stats : PriorStats
        The whole-set E-step's statistics (the closed forms were applied from them).
    record : dict
        ``rc_e_step`` (RC of the E-step's rendering, per-pixel mean), ``blocks`` (per block, in order:
        ``block``, ``rc_before``, ``rc_after`` at the same latents, ``iterations``, ``stopped``),
        ``rc_m_step`` (RC after the last block), ``latent_bytes`` (host bytes of the stored latents),
        ``chunk_size``, ``latents``, ``seconds`` and ``cpu_seconds``.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    xp, device = params.xp, params.device
    images = _HostChunks(batches.images, config.dtype, xp, device)
    labels = np.array(batches.labels, dtype=np.int64)
    if batches.split is not None:
        labels[batches.split.unlabelled] = UNLABELLED
    labels = _backend.asarray(labels, xp=xp, device=device)
    lat = whole_set_e_step(params, images, labels, chunk_size=config.chunk_size, latents=config.m_step_latents)
    params, infos = whole_set_m_step(params, images, lat, blocks=config.whole_set_blocks, k_cg=config.k_cg,
                                     damping=config.cg_damping, chunk_size=config.chunk_size)
    rc_e = lat.stats.squared_residual / (2 * max(lat.stats.pixels, 1))
    blocks = [{"block": i.block, "rc_before": float(i.rc_before), "rc_after": float(i.rc_after),
               "iterations": int(i.iterations), "stopped": i.stopped} for i in infos]
    record = {"rc_e_step": float(rc_e), "blocks": blocks,
              "rc_m_step": blocks[-1]["rc_after"] if blocks else float(rc_e), "latent_bytes": int(lat.nbytes),
              "chunk_size": config.chunk_size, "latents": config.m_step_latents,
              "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    return params, lat.stats, record


# -------------------------------------------------------------------------------- the loop
@dataclasses.dataclass(frozen=True)
class FitState:
    """What a :func:`fit` callback sees, after every step (``kind = "step"``) and every epoch (``"epoch"``).

    Attributes
    ----------
    kind : {"step", "epoch"}
        ``"epoch"`` comes after the epoch's closed forms (and its whole-set M-step).
    epoch, epochs : int
        The epoch in progress (1-based) and the number of epochs of the fit.
    step, n_steps : int
        Steps done in the epoch and the epoch's number of steps.
    params : DRMMParams
    opt_state : SGDState or AdamState
    lr : float
        The epoch's learning rate.
    rng_state : dict
        The generator's state now (after the epoch's schedule was drawn).
    epoch_rng_state : dict
        The generator's state at the epoch's start (it fixes the epoch's schedule).
    progress : EpochProgress
        The epoch's steps so far (live: copy what you keep).
    trace : StepTrace or None
        The last step's trace (step events).
    record : dict or None
        The epoch's summary (epoch events; the entry appended to :attr:`FitResult.history`).
    """

    kind: str
    epoch: int
    epochs: int
    step: int
    n_steps: int
    params: DRMMParams
    opt_state: Any
    lr: float
    rng_state: dict
    epoch_rng_state: dict
    progress: EpochProgress
    trace: StepTrace | None = None
    record: dict | None = None


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes
    ----------
    params : DRMMParams
    optimizer : SGD or Adam
        The optimiser at the base learning rate.
    opt_state : SGDState or AdamState
        Its state: pass it back (``optimizer_state=``) to continue.
    rng_state : dict
        The generator's state after the last epoch: pass it back (``rng=``) to continue.
    epoch : int
        Epochs completed (``config.epochs``).
    history : list of dict
        One summary per epoch run by this call: ``epoch``, ``lr``, ``steps``, ``train_seconds``,
        ``train_cpu_seconds``, ``wall_seconds``, the means of the step trace (``mean_objective``,
        ``mean_ce``, ``mean_rc``, ...), the closed-form priors and ``noise_variance`` (EG), the
        whole-set M-step's record ``whole_set`` (``m_step = "whole-set"``: :func:`whole_set_update`),
        and the per-step trace ``step_trace`` (:data:`STEP_COLUMNS`).
    """

    params: DRMMParams
    optimizer: Any
    opt_state: Any
    rng_state: dict
    epoch: int
    history: list[dict]


def _generator(rng: Any, seed: int) -> np.random.Generator:
    """A generator of its own: from ``seed`` (None), a seed, a ``bit_generator.state`` or a Generator's state."""
    if rng is None:
        return np.random.default_rng(seed)
    if isinstance(rng, np.random.Generator):
        gen = np.random.Generator(type(rng.bit_generator)())
        gen.bit_generator.state = rng.bit_generator.state  # a copy: the caller's generator is not advanced
        return gen
    if isinstance(rng, dict):
        gen = np.random.default_rng()
        try:
            gen.bit_generator.state = rng
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"rng is not a PCG64 bit_generator.state ({exc})") from None
        return gen
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, a seed >= 0, a numpy Generator or a bit_generator.state dict, got {rng!r}")


def fit(params: DRMMParams, batches: Any, config: TrainConfig, *, optimizer_state: Any = None, rng: Any = None,
        epoch: int = 0, partial: EpochProgress | None = None, callback: Callable[[FitState], None] | None = None,
        threads: int | None = None) -> FitResult:
    """Fit ``params`` to ``batches``: epochs ``epoch + 1 .. config.epochs`` of steps, closed forms after each (EG).

    Parameters
    ----------
    params : DRMMParams
        The starting point (e.g. ``init_params(net, config.seed, dtype=config.dtype)``); its dtype
        must be ``config.dtype``; the steps run on its namespace and device.
    batches : Batches or (images, labels)
        The training set: a :class:`Batches`, or arrays (``images`` of shape (N, C, H, W), integer
        ``labels`` of shape (N,), :data:`~drmm_ref.learning.UNLABELLED` marking unlabelled images),
        checked once against the network and cut into ``config.batch_size`` batches.
    config : TrainConfig
        Read: ``model``, ``epochs``, ``batch_size`` (array input), ``optimizer``, ``lr``, ``momentum``,
        ``lr_schedule``, ``seed`` (the default generator), ``dtype``, ``weights``, ``cg_*``, ``k_cg``,
        ``m_step`` and the whole-set fields. The data, evaluation and file fields are the trainer's.
    optimizer_state : SGDState or AdamState, optional
        Continue with this state (default: a fresh ``optimizer.init``).
    rng : int, dict, Generator or None
        The batch-order generator: None = ``default_rng(config.seed)``; a seed; a
        ``bit_generator.state``; a Generator (copied, not advanced). To continue a fit, pass
        :attr:`FitResult.rng_state` (or, with ``partial``, the state at that epoch's start).
    epoch : int, default 0
        Epochs already completed.
    partial : EpochProgress, optional
        Epoch ``epoch + 1`` is already under way: continue it after ``partial.step`` steps (its
        statistics and trace so far are kept; ``rng`` must be the state at that epoch's start).
    callback : callable, optional
        ``callback(FitState)`` after every step and every epoch; an exception it raises stops the fit.
    threads : int, optional
        Host threads per step (data-parallel shards, :mod:`~drmm_ref.learning.parallel`); default:
        every core this process may use (NumPy); 1 on other backends. Results differ from another
        thread count in the last bits.

    Returns
    -------
    FitResult

    Raises
    ------
    TrainingDiverged
        A non-finite objective term or non-finite parameters (epoch, step and term named).
    ValueError
        Data that do not fit the network (shape, labels, NaN), a dtype other than ``config.dtype``,
        ``epoch`` beyond ``config.epochs``.
    """
    if not isinstance(params, DRMMParams):
        raise TypeError(f"params must be DRMMParams, got {type(params).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if dtype_name(params.dtype) != config.dtype:
        raise ValueError(f"params are {dtype_name(params.dtype)} but config.dtype is {config.dtype}; "
                         "make them agree (init_params(..., dtype=config.dtype))")
    if isinstance(epoch, bool) or int(epoch) != epoch or not 0 <= epoch <= config.epochs:
        raise ValueError(f"epoch must be an integer in 0..config.epochs={config.epochs}, got {epoch!r}")
    if not isinstance(batches, Batches):
        try:
            images, labels = batches
        except (TypeError, ValueError):
            raise TypeError("batches must be a Batches or an (images, labels) pair of arrays") from None
        batches = Batches.from_arrays(images, labels, config.batch_size, net=params.net,
                                      labels_only=config.model == "dcn")
    if batches.split is not None and batches.labels_only and batches.split.labelled.size == 0:
        raise ValueError("the DCN needs labelled images: every label is UNLABELLED")
    xp, device = params.xp, params.device
    if threads is None:
        threads = default_threads()
    if _backend.namespace_name(xp) != "numpy":
        threads = 1
    optimizer = config.optimizer_object()
    schedule = config.schedule
    eg_cfg = config.eg_config()
    opt_state = optimizer.init(trainable(params)) if optimizer_state is None else optimizer_state
    gen = _generator(rng, config.seed)
    history: list[dict] = []
    for e in range(int(epoch) + 1, config.epochs + 1):
        wall0 = time.perf_counter()
        epoch_rng_state = gen.bit_generator.state
        plan = batches.schedule(gen)
        rng_state = gen.bit_generator.state
        lr = schedule.lr_at(config.lr, e, config.epochs)
        opt = optimizer if lr == optimizer.lr else dataclasses.replace(optimizer, lr=lr)
        if partial is not None:
            progress, partial = partial, None
            if progress.start_params is None:
                progress.start_params = params
        else:
            stats = PriorStats.zeros(params.net.n_classes, params.net.L) if config.model == "drmm" else None
            progress = EpochProgress(stats=stats, start_params=params)
        wall_before = progress.wall_seconds

        def state(kind, trace=None, record=None):
            return FitState(kind, e, config.epochs, progress.step, len(plan), params, opt_state, lr, rng_state,
                            epoch_rng_state, progress, trace, record)

        for i in range(progress.step, len(plan)):
            x, y = batches.batch(plan[i], config.dtype, xp, device)
            try:
                if config.model == "drmm":
                    params, opt_state, tr = eg_step(params, opt, opt_state, x, y, eg_cfg, check=False, threads=threads)
                else:
                    params, opt_state, tr = backprop_step(params, opt, opt_state, x, y, check=False, threads=threads)
            except NonFiniteParameters as exc:
                raise diverged(e, i + 1, "parameters", f"the update left {exc.field} non-finite") from None
            values = {**{k: getattr(tr.terms, k) for k in _TERMS}, "rc_after_e": tr.rc_after_e,
                      "rc_after_m": tr.rc_after_m}
            bad = [k for k, v in values.items() if v is not None and not math.isfinite(v)]
            if bad:
                raise diverged(e, i + 1, bad[0], f"{bad[0]} = {values[bad[0]]}")
            progress.append(tr)
            progress.wall_seconds = wall_before + time.perf_counter() - wall0
            if callback is not None:
                callback(state("step", trace=tr))
        whole = None
        if config.model == "drmm" and config.m_step == "whole-set":
            try:
                params, progress.stats, whole = whole_set_update(params, batches, config)
            except NonFiniteParameters as exc:
                raise diverged(e, 0, "parameters", f"the whole-set M-step left {exc.field} non-finite") from None
            bad = [k for k in ("rc_e_step", "rc_m_step") if not math.isfinite(whole[k])]
            if bad:
                raise diverged(e, 0, bad[0], f"the whole-set M-step's {bad[0]} = {whole[bad[0]]}")
            progress.seconds += whole["seconds"]
            progress.cpu_seconds += whole["cpu_seconds"]
        elif config.model == "drmm":
            t0, c0 = time.perf_counter(), time.process_time()
            params = apply_closed_forms(params, progress.stats)
            progress.seconds += time.perf_counter() - t0
            progress.cpu_seconds += time.process_time() - c0
        progress.wall_seconds = wall_before + time.perf_counter() - wall0
        record = {"epoch": e, "lr": lr, "steps": progress.step, "train_seconds": progress.seconds,
                  "train_cpu_seconds": progress.cpu_seconds, "wall_seconds": progress.wall_seconds,
                  **step_summary(progress.table, progress.trace_seconds), **prior_summary(progress.stats),
                  **({} if whole is None else {"whole_set": whole}), "step_trace": progress.table}
        history.append(record)
        if callback is not None:
            callback(state("epoch", record=record))
    return FitResult(params, optimizer, opt_state, gen.bit_generator.state, config.epochs, history)
