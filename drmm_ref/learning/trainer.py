"""The trainer: a run of :func:`~drmm_ref.learning.fit` with its data, evaluation, logs and checkpoints.

The loop itself (steps, closed forms, divergence checks, the learning-rate schedule) is
:func:`~drmm_ref.learning.fit_loop.fit`, which works on arrays in memory; :func:`train` is the
layer that cuts and checks the data, evaluates after every epoch, monitors the EG loop, writes the
log and the checkpoints through ``fit``'s callback, resumes, locks the folder and shows progress.
``train`` and ``fit`` give the same parameters, bit for bit, for the same configuration and threads.

One run = one :class:`TrainConfig` and one output folder:

* ``<out>/log.json`` -- the run's log, rewritten atomically after every epoch: configuration,
  data source, one record per epoch (epoch 0 = the initialisation) with validation and test error,
  cumulative *training* seconds (steps only: evaluation, checkpointing and trace-only renderings are
  excluded) and the process CPU seconds of the same steps, mean objective terms, RC after E- and
  M-steps, closed-form priors and sigma^2, the whole-set M-step's record (``m_step = "whole-set"``:
  RC before and after each block at the whole-set E-step's latents, seconds, CPU seconds; the
  checkpoint is written after it), and the per-step traces;
* ``<out>/checkpoints/epoch-<k>.npz`` -- parameters, optimiser state, RNG state, history and the
  learning-rate schedule's position after epoch k (:mod:`drmm_ref.io.checkpoint`: a parameter file
  plus the training state, so every model reader takes it);
* ``<out>/checkpoints/mid-epoch.npz`` -- the latest mid-epoch checkpoint (every
  ``checkpoint_every_steps`` steps or ``checkpoint_every_seconds`` seconds; only the latest is kept,
  and it is removed when its epoch ends): parameters, optimiser state, the generator's state at the
  start of the epoch (which fixes the epoch's batch schedule), the number of steps done, the step
  traces and closed-form statistics so far, and the parameters at the start of the epoch;
* ``<out>/.drmm-ref-train.lock`` -- held (``flock``) while a run writes the folder; it names the
  run's process and configuration.

Exact resume: rerunning :func:`train` on the same folder continues after the last checkpoint, an
epoch's or a mid-epoch one; the shuffling generator, the optimiser state and the parameters are
restored bit for bit, so a resumed run ends bit-identical to an uninterrupted one on the same
backend, whether it was stopped between epochs, killed (SIGKILL) or interrupted (Ctrl-C). A run may
resume on another backend (``backend`` is one of :data:`RESUMABLE_CHANGES`; e.g. started with NumPy on a
CPU, continued with CuPy on a GPU): it continues correctly, not bit-identically, with a warning; every
epoch record names the backend that trained it.

What the trainer guarantees (``docs/guarantees.md``):

* **A run owns its folder.** Another run writing the same folder, or a folder whose ``log.json`` or
  checkpoints belong to another configuration (or to no drmm_ref run), is refused with
  :class:`FolderInUse` naming the other run's configuration, before anything is written or any
  data are loaded by the command line. ``out`` must be a folder path (not empty, not a file).
* **Divergence stops the run.** The objective's terms are checked at every step; the first
  non-finite value (or a step whose update leaves non-finite parameters) raises
  :class:`TrainingDiverged` naming the epoch, the step and the term, and the last good checkpoint
  is left as it was.
* **Nothing temporary is left.** Files are written atomically; temporary files of a killed writer
  are removed at the next start, under the lock.

Both models share the network, the initialisation (``init_params(net, seed)``), the optimiser,
its settings, the batch size and the order of the batches; they differ only in the step
(:func:`~drmm_ref.learning.eg_step` vs :func:`~drmm_ref.learning.backprop_step`) and in the
closed-form prior updates that EG makes at the end of each epoch.

**Semi-supervised and unsupervised runs** (``TrainConfig.n_labels``, SPEC §5). The training
split is cut into ``n_labels`` class-balanced labelled images (seed ``label_seed``) and the
unlabelled rest (:func:`~drmm_ref.learning.semi.label_split`); an epoch is one pass over the
unlabelled images, each batch of ``batch_size`` unlabelled images paired with ``batch_size``
labelled ones (oversampled; :func:`~drmm_ref.learning.semi.paired_batches`).

* ``drmm``: one EG step on the concatenated batch ``[labelled; unlabelled]`` with labels
  ``[y; UNLABELLED]``: CE over the labelled half, RC, NN, H (and BAL) over both; unlabelled images
  render from their predicted class. ``n_labels = 0`` is unsupervised EG (CE has nothing to act
  on; the test accuracy of the class latent after matching clusters to labels is logged).
* ``dcn``: the labels-only baseline: one backprop step on the labelled half alone (the same
  number of steps as the DRMM; the unlabelled half is not used).

The labels of the unlabelled images are never read by the training loop.

Monitoring the EG loop (SPEC §3: no monotonicity guarantee): after each epoch, on a fixed
monitoring subset of the training set, RC is measured at the new parameters with the previous
epoch's latents ("after the M-steps") and with fresh latents ("after the E-step"); an increase
across the E-step is counted, never hidden.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import _backend, _fpenv
from .._files import atomic_write_json, remove_temporaries
from ..drmm import DRMMParams, Network, bottom_up, init_params, render
from ..drmm._common import check_finite_output
from ..io.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ..io.params import load_params
from ..numerics import dtype_name
from . import _checks
from .config import MODELS, TrainConfig
from .fit_loop import (STEP_COLUMNS, Batches, EpochProgress, FitState, TrainingDiverged, check_split, diverged, fit,
                  prior_summary, step_summary)
from .objectives import cross_entropy, reconstruction
from .parallel import default_threads, restart_pools, sharded_scores
from .semi import align_classes, cluster_accuracy, confusion_matrix, label_split

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "load_data", "latest_checkpoint", "resume_point",
           "check_output_folder", "write_json_atomic", "MODELS", "FolderInUse", "TrainingDiverged",
           "MID_EPOCH_CHECKPOINT", "LOCK_NAME"]

LOG_FORMAT = "drmm_ref.train_log"
#: File name of the (single, latest) mid-epoch checkpoint in ``<out>/checkpoints``.
MID_EPOCH_CHECKPOINT = "mid-epoch.npz"
#: The lock a run holds on its output folder.
LOCK_NAME = ".drmm-ref-train.lock"
#: Configuration fields that may change between a run and its resumption (they do not change the result;
#: ``epochs`` only while the learning-rate schedule does not depend on it; ``backend`` changes only the rounding,
#: like the thread count: a run started with NumPy may go on on a GPU with CuPy, and back).
RESUMABLE_CHANGES = ("epochs", "checkpoint_every_steps", "checkpoint_every_seconds", "backend")


class FolderInUse(ValueError):
    """The output folder belongs to another run: one writing it now, or one of another configuration."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """Final parameters and the run's log (the content of ``log.json``)."""

    params: DRMMParams
    log: dict


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write JSON (no NaN) to ``path`` through a temporary file and an atomic rename."""
    atomic_write_json(path, payload, indent=1)


def load_data(config: TrainConfig, *, path: Any = None, offline: bool | None = None, progress: bool = True):
    """The data of a run: MNIST (:func:`drmm_ref.data.load_mnist`) or the synthetic stand-in.

    The synthetic sizes follow ``n_train`` / ``n_eval`` (defaults 1,000 / 500) and ``seed``.
    """
    if config.data == "synthetic":
        from .synthetic import synthetic_digits

        return synthetic_digits(config.n_train or 1000, config.n_eval or 500, config.n_eval or 500, seed=config.seed)
    from ..data import load_mnist

    return load_mnist(path, offline=offline, progress=progress)


def _host_split(split: Any, n: int | None, name: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = _backend.to_numpy(split.images), _backend.to_numpy(split.labels)
    if n is not None:
        if n > len(y):
            raise ValueError(f"{name}={n} but the {what} split has only {len(y)} images; lower {name} "
                             "(or leave it unset to use the whole split)")
        x, y = x[:n], y[:n]
    return np.ascontiguousarray(x), np.ascontiguousarray(y).astype(np.int64)


def evaluate(params: DRMMParams, images: np.ndarray, labels: np.ndarray, *, batch: int = 1000,
             clusters: bool = False, threads: int = 1) -> dict[str, Any]:
    """Classification error (fraction) and mean cross-entropy of the DCN decision ``argmax_c s_c``.

    ``threads > 1`` computes each batch's scores in that many shards on host threads (the same
    numbers: each image's scores are computed alone either way).

    ``images`` and ``labels`` are host arrays; they are moved to the parameters' namespace a batch at a time.
    With ``clusters=True`` the result also holds ``cluster`` (:func:`~drmm_ref.learning.semi.cluster_accuracy`
    of the class latent: accuracy after matching clusters to labels, cluster sizes).

    Raises
    ------
    ValueError
        No images (an error of 0% on nothing would be meaningless), or labels that do not match them.
    """
    xp, dt = params.xp, dtype_name(params.dtype)
    n = int(labels.shape[0])
    if n == 0 or int(images.shape[0]) == 0:
        raise ValueError("evaluate: images is empty; there is nothing to evaluate (check n_eval and the data)")
    if int(images.shape[0]) != n:
        raise ValueError(f"evaluate: {int(images.shape[0])} images but {n} labels")
    batch = _checks.count(batch, "batch")
    wrong, ce_sum = 0, 0.0
    k = params.net.n_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    for s in range(0, n, batch):
        x = _backend.asarray(images[s:s + batch].astype(dt), xp=xp, device=params.device)
        y = _backend.asarray(labels[s:s + batch], xp=xp, device=params.device)
        if threads > 1:
            scores = check_finite_output(sharded_scores(params, x, threads), "evaluate scores")
        else:
            scores = bottom_up(params, x).scores
        predicted = xp.astype(xp.argmax(scores, axis=1), xp.int64)
        wrong += int(xp.sum(xp.astype(predicted != y, xp.int64)))
        ce, _ = cross_entropy(scores, y)
        ce_sum += float(ce) * int(y.shape[0])
        if clusters:
            confusion += confusion_matrix(predicted, labels[s:s + batch], k)
    out: dict[str, Any] = {"error": wrong / n, "ce": ce_sum / n, "n": n}
    if clusters:
        out["cluster"] = cluster_accuracy(confusion)
    return out


def _monitor_rc(params: DRMMParams, images: np.ndarray, labels: np.ndarray | None, prev: DRMMParams | None,
                batch: int) -> dict[str, float] | None:
    """RC on the monitoring set with the latents of ``prev`` (after the M-steps) and with fresh latents.

    ``labels=None`` renders each image from its predicted class (semi-supervised runs: the monitor
    must not use labels the training does not have).
    """
    xp, dt = params.xp, dtype_name(params.dtype)
    n = int(images.shape[0])
    if n == 0:
        return None
    new_sum, old_sum = 0.0, 0.0
    for s in range(0, n, batch):
        x = _backend.asarray(images[s:s + batch].astype(dt), xp=xp, device=params.device)
        fw = bottom_up(params, x)
        y = fw.classes if labels is None else _backend.asarray(labels[s:s + batch], xp=xp, device=params.device)
        m = int(x.shape[0])
        new_sum += float(reconstruction(x, render(params, y, fw.latents).image)[0]) * m
        if prev is not None:
            old = bottom_up(prev, x).latents
            old_sum += float(reconstruction(x, render(params, y, old).image)[0]) * m
    out = {"rc_after_e": new_sum / n}
    if prev is not None:
        out["rc_after_m"] = old_sum / n
        out["e_step_raised_rc"] = bool(out["rc_after_e"] > out["rc_after_m"])
    return out


def _empty_table() -> dict[str, list]:
    return {key: [] for key in STEP_COLUMNS}


def _epoch_record(epoch, table, trace_seconds, seconds, cumulative, wall, val, test, stats, monitor,
                  cpu: float = 0.0, cumulative_cpu: float = 0.0) -> dict[str, Any]:
    """One epoch's entry of ``log.json``: timings, evaluation, the step trace's summary, the priors, the monitor."""
    rec: dict[str, Any] = {"epoch": epoch, "train_seconds": seconds, "cumulative_train_seconds": cumulative,
                           "train_cpu_seconds": cpu, "cumulative_train_cpu_seconds": cumulative_cpu,
                           "wall_seconds": wall, "validation_error": val["error"], "validation_ce": val["ce"],
                           "test_error": test["error"], "test_ce": test["ce"], "steps": len(table["objective"])}
    for split, res in (("validation", val), ("test", test)):
        if "cluster" in res:
            rec[f"{split}_cluster_accuracy"] = res["cluster"]["accuracy"]
            rec[f"{split}_cluster_sizes"] = res["cluster"]["cluster_sizes"]
    rec.update(step_summary(table, trace_seconds))
    rec.update(prior_summary(stats))
    if monitor is not None:
        rec["monitor"] = monitor
    return rec


def _checkpoint_path(out: Path, epoch: int) -> Path:
    return out / "checkpoints" / f"epoch-{epoch:03d}.npz"


def _mid_path(out: Path) -> Path:
    return out / "checkpoints" / MID_EPOCH_CHECKPOINT


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in ``<out>/checkpoints``, or None (mid-epoch ones aside)."""
    folder = Path(out) / "checkpoints"
    found = sorted(folder.glob("epoch-*.npz")) if folder.is_dir() else []
    return found[-1] if found else None


def resume_point(out: str | os.PathLike) -> Path | None:
    """The checkpoint a rerun on ``out`` resumes from: the mid-epoch one when it is newer, else the latest epoch's.

    Reads only the file names and the mid-epoch checkpoint's epoch (it is loaded, so a damaged one
    raises :class:`~drmm_ref.learning.CheckpointError`).
    """
    out = Path(out)
    latest, mid = latest_checkpoint(out), _mid_path(out)
    if not mid.is_file():
        return latest
    latest_epoch = int(latest.stem.split("-")[1]) if latest is not None else 0
    return mid if load_checkpoint(mid).epoch >= latest_epoch else latest


def _same_run(saved: dict, current: dict) -> list[str]:
    """Fields (other than :data:`RESUMABLE_CHANGES`) in which two configurations differ.

    Raises ``ValueError`` when ``saved`` cannot be read as a configuration (e.g. a newer drmm_ref wrote it).
    """
    saved = TrainConfig.from_dict(saved).to_dict()  # fields added since the checkpoint take their defaults
    resumable = RESUMABLE_CHANGES
    if TrainConfig.from_dict(current).schedule.uses_epochs:  # the rates of every epoch depend on the count
        resumable = tuple(k for k in RESUMABLE_CHANGES if k != "epochs")
    keys = [k for k in set(current) | set(saved) if k not in resumable]
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def _describe(cfg: dict) -> str:
    keys = ("model", "net", "epochs", "seed", "lr", "optimizer", "batch_size", "n_train", "n_labels", "data")
    parts = []
    for k in keys:
        if k in cfg:
            v = cfg[k]
            parts.append(f"{k}={v.get('name', 'custom') if isinstance(v, dict) else v}")
    return ", ".join(parts)


# -------------------------------------------------------------------------------- output folder
def _check_out_path(out: Any) -> Path:
    if out is None or str(out).strip() == "":
        raise ValueError("out is empty: give the run's output folder (it is created if needed)")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ValueError(f"out={str(out)!r} is a file, not a folder: give the run's output folder")
    return path


def _owner_problem(out: Path, cfg_dict: dict, resume: bool) -> str | None:
    """Why ``out`` is not this run's folder (another configuration, a foreign log.json), or None."""
    ckpt_path = resume_point(out) if resume else None
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path)
        try:
            diff = _same_run(ckpt.config, cfg_dict)
        except ValueError as exc:
            raise CheckpointError(f"{ckpt_path}: its configuration cannot be read ({exc})") from None
        if diff:
            return (f"{ckpt_path} was written by a run with another configuration ({_describe(ckpt.config)}; "
                    f"differs in {diff})")
        return None
    sources = []
    log_path = out / "log.json"
    if log_path.is_file():
        try:
            log = json.loads(log_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            log = None
        if not isinstance(log, dict) or log.get("format") != LOG_FORMAT or not isinstance(log.get("config"), dict):
            return f"{log_path} exists and is not a drmm_ref training log; it would be overwritten"
        sources.append((log_path, log["config"]))
    latest = latest_checkpoint(out)
    if not resume and latest is not None:  # --restart: only this run's own folder may be started over
        sources.append((latest, load_checkpoint(latest).config))
    for path, saved in sources:
        try:
            diff = _same_run(saved, cfg_dict)
        except ValueError as exc:
            return f"{path} holds a configuration this drmm_ref cannot read ({exc})"
        if diff:
            return f"{path} belongs to a run with another configuration ({_describe(saved)}; differs in {diff})"
    return None


def _lock_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"process {info.get('pid')} on {info.get('host')} since {info.get('started')}, "
                f"configuration {_describe(info.get('config', {}))}")
    except (OSError, ValueError, AttributeError):
        return "details unavailable"


@contextlib.contextmanager
def _folder_lock(out: Path, cfg_dict: dict):
    """Hold ``<out>/LOCK_NAME`` (an exclusive ``flock``) for the duration; the kernel releases it on any exit."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no locking (documented in docs/guarantees.md)
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise FolderInUse(f"{out} is being written by another training run ({_lock_holder(path)}); "
                              "wait for it to finish or choose another output folder") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "config": cfg_dict}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        yield
    finally:
        os.close(fd)


def check_output_folder(out: Any, config: TrainConfig, *, resume: bool = True) -> Path:
    """Check that ``out`` can be this run's folder, before any data are loaded; return it as a Path.

    Refused (naming the reason): an empty path, a file, a folder another run is writing now, a folder
    whose checkpoints or ``log.json`` belong to another configuration, a ``log.json`` that is not a
    drmm_ref training log. :func:`train` repeats these checks under its lock.

    Raises
    ------
    ValueError
        A bad path.
    FolderInUse
        The folder belongs to another run.
    CheckpointError
        A checkpoint in the folder is damaged.
    """
    path = _check_out_path(out)
    if not path.is_dir():
        return path
    lock = path / LOCK_NAME
    if lock.is_file():
        try:
            import fcntl

            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                raise FolderInUse(f"{path} is being written by another training run ({_lock_holder(lock)}); "
                                  "wait for it to finish or choose another output folder") from None
            finally:
                os.close(fd)
        except ImportError:  # pragma: no cover
            pass
    problem = _owner_problem(path, config.to_dict(), resume)
    if problem is not None:
        raise FolderInUse(f"{problem}; choose another output folder")
    return path


# -------------------------------------------------------------------------------- the loop
def _first_nonfinite(obj: Any, where: str = "") -> str | None:
    """Path of the first NaN/inf float in a JSON-like object, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else where or "value"
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = _first_nonfinite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _first_nonfinite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def _last_logged(log: dict, key: str) -> Any:
    """``key`` of the last epoch record that has it (older logs and epoch 0 lack run settings), else None."""
    return next((e[key] for e in reversed(log.get("epochs", [])) if e.get(key) is not None), None)


def train(config: TrainConfig, data: Any, out: str | os.PathLike, *, resume: bool = True, progress: bool = True,
          keep_checkpoints: bool = True, on_epoch: Callable[[dict], None] | None = None,
          threads: int | None = None, flush_denormals: bool = True) -> TrainResult:
    """Train for ``config.epochs`` epochs, evaluating, logging and checkpointing after each.

    Parameters
    ----------
    config : TrainConfig
    data :
        An object with ``train``, ``validation``, ``test`` splits (``images``, ``labels``) and a
        ``source`` string: :func:`drmm_ref.data.load_mnist` or :func:`synthetic_digits` output.
    out : path
        Output folder (``log.json``, ``checkpoints/``); the run holds a lock on it while it runs.
    resume : bool, default True
        Continue from the latest checkpoint in ``out`` (an epoch's or a mid-epoch one) when there
        is one (its configuration must match ``config`` except for ``epochs`` and the checkpoint
        cadence). False starts afresh: the folder's previous checkpoints of *this* configuration
        are removed first; a folder of another configuration is refused either way.
    progress : bool, default True
        Show a tqdm progress bar per epoch.
    keep_checkpoints : bool, default True
        Keep every epoch's checkpoint (False keeps only the latest).
    on_epoch : callable, optional
        Called with each epoch record after it is logged.
    threads : int, optional
        Host threads for the steps and the evaluation (data-parallel shards of each batch,
        :mod:`~drmm_ref.learning.parallel`); default: every core this process may use. A resumed run
        is bit-identical to an uninterrupted one for the same number of threads; runs with different
        numbers differ in the last bits. Only the NumPy backend shards (CuPy: one device, one stream).
    flush_denormals : bool, default True
        Flush subnormal floats to zero on the host CPU while the run computes
        (:func:`drmm_ref.backend.flush_denormals`): trained parameters make float32 subnormals
        that slow a step down up to 2.2x; flushing changes only numbers below 1.2e-38. Each epoch
        record says whether it was on (``flush_denormals``); like ``threads``, a run resumed with
        the other setting continues correctly but no longer bit-identically.

    Returns
    -------
    TrainResult

    Raises
    ------
    FolderInUse
        ``out`` is being written by another run, or belongs to another configuration.
    TrainingDiverged
        A non-finite objective term or non-finite parameters (epoch, step and term named; the last
        good checkpoint is kept).
    CheckpointError
        A checkpoint in ``out`` is damaged.
    ValueError
        Bad sizes (``n_train`` above the training split, an empty split), a backend that cannot
        be used here, and the like.
    """
    out = _check_out_path(out)
    _checks.check_backend(config.backend)
    cfg_dict = config.to_dict()
    with _folder_lock(out, cfg_dict):
        for folder in (out, out / "checkpoints"):
            remove_temporaries(folder)
        problem = _owner_problem(out, cfg_dict, resume)
        if problem is not None:
            raise FolderInUse(f"{problem}; choose another output folder")
        if not resume:
            for old in list((out / "checkpoints").glob("epoch-*.npz")) + [_mid_path(out)]:
                old.unlink(missing_ok=True)
        # BLAS threads: one per shard when the steps are data-parallel (every step but those with block
        # steps, which run unsharded and may use the threads inside the BLAS instead). Multi-threaded
        # OpenBLAS under other load costs several times its CPU time in spinning (docs/learning.md).
        n_threads = default_threads() if threads is None else threads
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=n_threads if config.cg_blocks else 1, user_api="blas"), \
                _fpenv.flush_denormals(flush_denormals) as flushed:
            restart_pools()  # shard threads take the calling thread's floating-point modes when they start
            try:
                return _train_locked(config, data, out, resume, progress, keep_checkpoints, on_epoch, threads,
                                     flushed)
            finally:
                restart_pools()


def _train_locked(config, data, out, resume, progress, keep_checkpoints, on_epoch, threads,
                  flushed) -> TrainResult:
    from tqdm.auto import tqdm

    net = config.network
    xp = _backend.resolve_namespace(config.backend)
    backend = _backend.namespace_name(xp)
    threads = default_threads() if threads is None else _checks.count(threads, "threads")
    if backend != "numpy":
        threads = 1
    else:
        _backend.keep_freed_host_memory()
    optimizer = config.optimizer_object()
    cfg_dict = config.to_dict()
    xtr, ytr = _host_split(data.train, config.n_train, "n_train", "training")
    xva, yva = _host_split(data.validation, config.n_eval, "n_eval", "validation")
    xte, yte = _host_split(data.test, config.n_eval, "n_eval", "test")
    n = len(ytr)
    if n == 0:
        raise ValueError("the training split is empty; check n_train and the data")
    for name, y in (("validation", yva), ("test", yte)):
        if len(y) == 0:
            raise ValueError(f"the {name} split is empty: there is nothing to evaluate the run on")
    for name, x, y in (("training", xtr, ytr), ("validation", xva, yva), ("test", xte, yte)):
        check_split(x, y, net, name)
    # the data were checked once here: the steps skip their per-batch boundary checks (no host synchronisation)
    split = None
    if config.semi_supervised:
        split = label_split(ytr, config.n_labels, config.seed if config.label_seed is None else config.label_seed,
                            net.n_classes)
    batches = Batches(xtr, ytr, config.batch_size, split, labels_only=split is not None and config.model == "dcn")
    mon = min(config.monitor_size, n) if config.model == "drmm" else 0
    xmon, ymon = xtr[:mon], (None if config.semi_supervised else ytr[:mon])
    clusters = config.n_labels == 0

    ckpt_path = resume_point(out) if resume else None
    partial = None  # the partial epoch of a mid-epoch checkpoint
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, xp=xp)
        if ckpt.mid_epoch is not None and ckpt.epoch + 1 > config.epochs:
            # the run is asked to stop before the epoch in progress: resume from that epoch's end
            ckpt_path = latest_checkpoint(out)
            ckpt = load_checkpoint(ckpt_path, xp=xp)
        _check_schedule_position(ckpt_path, ckpt, config)
        params, opt_state, start_epoch, log, rng_state = ckpt.params, ckpt.opt_state, ckpt.epoch, ckpt.history, \
            ckpt.rng_state
        if ckpt.mid_epoch is not None:
            partial = EpochProgress.from_json(ckpt.mid_epoch, ckpt.start_params)
        used = _last_logged(log, "backend") or (ckpt.config or {}).get("backend")  # older logs: the saved config
        before = _last_logged(log, "threads")
        if used is not None and used != backend:  # (the thread count then changes the numbers no further)
            warnings.warn(f"{out}: this run trained on the {used} backend and resumes on {backend}: it continues "
                          "correctly but no longer bit-identically to an uninterrupted run (the arrays' kernels "
                          "round differently); each epoch record names the backend that trained it",
                          RuntimeWarning, stacklevel=3)
        elif before is not None and before != threads:
            warnings.warn(f"{out}: this run trained with {before} thread(s) and resumes with {threads}: it continues "
                          "correctly but no longer bit-identically to an uninterrupted run (the data-parallel shards "
                          f"add in another order); pass threads={before} (--threads {before}) for that",
                          RuntimeWarning, stacklevel=3)
        was = _last_logged(log, "flush_denormals")
        if was is not None and was != flushed:
            warnings.warn(f"{out}: this run trained with subnormal flushing {'on' if was else 'off'} and resumes "
                          f"with it {'on' if flushed else 'off'}: it continues correctly but no longer "
                          "bit-identically to an uninterrupted run; pass flush_denormals="
                          f"{was} ({'the default' if was else '--no-flush-denormals'}) for that",
                          RuntimeWarning, stacklevel=3)
        log["config"] = cfg_dict
    else:
        params = _initial_params(config, net, xp)
        mapping = None
        if config.init_from is not None and split is not None and split.labelled.size:
            params, mapping = align_classes(params, xtr[split.labelled], ytr[split.labelled])
        opt_state, rng_state, start_epoch = None, None, 0  # fit starts them: optimizer.init, default_rng(seed)
        t0 = time.perf_counter()
        val = evaluate(params, xva, yva, batch=config.eval_batch, clusters=clusters, threads=threads)
        test = evaluate(params, xte, yte, batch=config.eval_batch, clusters=clusters, threads=threads)
        monitor = _monitor_rc(params, xmon, ymon, None, config.eval_batch) if mon else None
        log = {"format": LOG_FORMAT, "version": 1, "config": cfg_dict, "network": net.to_dict(),
               "data_source": getattr(data, "source", "unknown"), "n_train": n, "n_validation": len(yva),
               "n_test": len(yte), "batches_per_epoch": batches.n_batches, "versions": _versions(config.backend),
               "epochs": [_epoch_record(0, _empty_table(), [], 0.0, 0.0, time.perf_counter() - t0, val, test, None,
                                        monitor)],
               "steps": [], "finished": False}
        if mapping is not None:
            log["init_class_mapping"] = mapping
        if split is not None:
            log["labelled_indices"] = [int(i) for i in split.labelled]
            log["n_unlabelled"] = int(split.unlabelled.size)
        _check_log_finite(log, 0, None)
    log["finished"] = False
    write_json_atomic(out / "log.json", log)
    run = {"cumulative": log["epochs"][-1]["cumulative_train_seconds"],
           "cumulative_cpu": log["epochs"][-1].get("cumulative_train_cpu_seconds", 0.0),
           "last_good": ckpt_path, "last_save": time.perf_counter(), "bar": None}
    schedule_spec = config.schedule.spec

    def position(s: FitState) -> dict:
        return {"schedule": schedule_spec, "epoch": s.epoch, "lr": float(s.lr)}

    def on_step(s: FitState) -> None:
        if run["bar"] is None:
            run["bar"] = tqdm(total=s.n_steps, initial=s.step - 1, desc=f"{config.model} epoch {s.epoch}/{s.epochs}",
                              disable=not progress, leave=False, unit="batch")
        run["bar"].update(1)
        run["bar"].set_postfix(loss=f"{s.trace.terms.objective:.4f}")
        if s.step < s.n_steps and _due(config, s.step, time.perf_counter() - run["last_save"]):
            ckpt = Checkpoint(s.params, optimizer, s.opt_state, s.epoch_rng_state, s.epoch - 1, cfg_dict, log,
                              s.progress.to_json(s.epoch), s.progress.start_params if mon else None, position(s))
            run["last_good"] = save_checkpoint(_mid_path(out), ckpt)
            run["last_save"] = time.perf_counter()

    def on_epoch_end(s: FitState) -> None:
        if run["bar"] is not None:
            run["bar"].close()
            run["bar"] = None
        epoch, p = s.epoch, s.progress
        run["cumulative"] += p.seconds
        run["cumulative_cpu"] += p.cpu_seconds
        t0 = time.perf_counter()
        val = evaluate(s.params, xva, yva, batch=config.eval_batch, clusters=clusters, threads=threads)
        test = evaluate(s.params, xte, yte, batch=config.eval_batch, clusters=clusters, threads=threads)
        monitor = _monitor_rc(s.params, xmon, ymon, p.start_params, config.eval_batch) if mon else None
        rec = _epoch_record(epoch, p.table, p.trace_seconds, p.seconds, run["cumulative"],
                            p.wall_seconds + time.perf_counter() - t0, val, test, p.stats, monitor, p.cpu_seconds,
                            run["cumulative_cpu"])
        rec["threads"] = threads
        rec["flush_denormals"] = flushed
        rec["backend"] = backend
        if "whole_set" in s.record:  # m_step="whole-set": RC before/after each block at the E-step's latents
            rec["whole_set"] = s.record["whole_set"]
        if schedule_spec != "constant":  # logs of constant-rate runs stay as they were
            rec["lr"] = s.lr
        log["epochs"].append(rec)
        log["steps"].append(p.table)
        log["finished"] = epoch == config.epochs
        _check_log_finite(log, epoch, run["last_good"])
        ckpt = Checkpoint(s.params, optimizer, s.opt_state, s.rng_state, epoch, cfg_dict, log, lr_schedule=position(s))
        run["last_good"] = save_checkpoint(_checkpoint_path(out, epoch), ckpt)
        run["last_save"] = time.perf_counter()
        _mid_path(out).unlink(missing_ok=True)
        if not keep_checkpoints and epoch > 1:
            _checkpoint_path(out, epoch - 1).unlink(missing_ok=True)
        write_json_atomic(out / "log.json", log)
        if progress:
            print(f"[{config.model} {net.name}] epoch {epoch}/{config.epochs}: val error {100 * val['error']:.2f}%, "
                  f"test error {100 * test['error']:.2f}%, train {p.seconds:.1f} s", flush=True)
        if on_epoch is not None:
            on_epoch(rec)

    def callback(s: FitState) -> None:
        (on_step if s.kind == "step" else on_epoch_end)(s)

    try:
        result = fit(params, batches, config, optimizer_state=opt_state, rng=rng_state, epoch=start_epoch,
                     partial=partial, callback=callback, threads=threads)
    except TrainingDiverged as exc:  # name the last good checkpoint, which is left as it was
        raise diverged(exc.epoch, exc.step, exc.term, exc.detail, run=True, checkpoint=run["last_good"]) from None
    finally:
        if run["bar"] is not None:
            run["bar"].close()
    log["finished"] = True
    write_json_atomic(out / "log.json", log)
    return TrainResult(result.params, log)


def _check_schedule_position(path: Path, ckpt: Checkpoint, config: TrainConfig) -> None:
    """The checkpoint's learning-rate schedule position agrees with the configuration (bit-identical resume)."""
    pos = ckpt.lr_schedule
    if pos is None:  # written before schedules: the constant rate
        return
    expected = config.schedule.lr_at(config.lr, pos["epoch"], config.epochs)
    if pos["schedule"] != config.schedule.spec or pos["lr"] != expected:
        raise CheckpointError(f"{path}: its learning-rate schedule stood at {pos['schedule']!r}, epoch {pos['epoch']}, "
                              f"lr {pos['lr']!r}; the configuration gives {config.schedule.spec!r}, lr {expected!r} "
                              "there: resume with the run's own settings")


def _due(config: TrainConfig, steps_done: int, seconds_since_save: float) -> bool:
    """Whether a mid-epoch checkpoint is due: every ``checkpoint_every_steps`` steps of the epoch, or when
    ``checkpoint_every_seconds`` have passed since the last checkpoint."""
    every = config.checkpoint_every_steps
    if every is not None and steps_done % every == 0:
        return True
    return config.checkpoint_every_seconds is not None and seconds_since_save >= config.checkpoint_every_seconds


def _check_log_finite(log: dict, epoch: int, last_good: Path | None) -> None:
    bad = _first_nonfinite({"epochs": log["epochs"][-1:], "steps": log["steps"][-1:]})
    if bad is not None:
        raise diverged(epoch, 0, bad, f"the epoch's record has a non-finite {bad} (evaluation overflowed)",
                       run=True, checkpoint=last_good)


def _initial_params(config: TrainConfig, net: Network, xp: Any) -> DRMMParams:
    """``init_params(net, seed)``, or the parameters of ``config.init_from`` (pre-training): a checkpoint or a
    parameter file (:func:`~drmm_ref.io.load_params` reads both)."""
    if config.init_from is None:
        return init_params(net, config.seed, dtype=config.dtype, xp=xp)
    params = load_params(config.init_from, xp=xp)
    if params.net.to_dict() != net.to_dict():
        raise ValueError(f"init_from={config.init_from!r} holds a {params.net.name!r} network, not {net.name!r}")
    if dtype_name(params.dtype) != config.dtype:
        raise ValueError(f"init_from={config.init_from!r} is {dtype_name(params.dtype)}, the run is {config.dtype}")
    return params


def _versions(backend: str) -> dict[str, str]:
    import platform

    from .. import __version__

    v = {"python": platform.python_version(), "numpy": np.__version__, "drmm_ref": __version__}
    if backend != "numpy":
        try:
            v[backend] = __import__(backend).__version__
        except Exception:  # pragma: no cover
            v[backend] = "unavailable"
    return v
