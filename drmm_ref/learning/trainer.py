"""The mini-batch trainer: EG-trained DRMM or backprop-trained DCN, evaluation, logs, checkpoints.

One run = one :class:`TrainConfig` and one output folder:

* ``<out>/log.json`` -- the run's log, rewritten atomically after every epoch: configuration,
  data source, one record per epoch (epoch 0 = the initialisation) with validation and test error,
  cumulative *training* seconds (steps only: evaluation, checkpointing and trace-only renderings are
  excluded) and the process CPU seconds of the same steps, mean objective terms, RC after E- and
  M-steps, closed-form priors and sigma^2, and the per-step traces;
* ``<out>/checkpoints/epoch-<k>.npz`` -- parameters, optimiser state, RNG state and history after
  epoch k (:mod:`.checkpoint`).

Exact resume: rerunning :func:`train` on the same folder continues after the last checkpoint; the
shuffling generator, the optimiser state and the parameters are restored bit for bit, so a run
resumed from epoch k ends bit-identical to an uninterrupted one on the same backend.

Both models share the network, the initialisation (``init_params(net, seed)``), the optimiser,
its settings, the batch size and the order of the batches; they differ only in the step
(:func:`~drmm_ref.learning.eg_step` vs :func:`~drmm_ref.learning.backprop_step`) and in the
closed-form prior updates that EG makes at the end of each epoch.

**Semi-supervised and unsupervised runs** (``TrainConfig.n_labels``, SPEC §5, issue 6). The training
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

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import _backend
from .._files import atomic_write_json
from ..drmm import DRMMParams, Network, bottom_up, init_params, preset, render
from ..numerics import dtype_name
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .closed_forms import PriorStats, apply_closed_forms
from .objectives import LossWeights, cross_entropy, reconstruction
from .objectives import UNLABELLED
from .optim import make_optimizer
from .semi import align_classes, cluster_accuracy, confusion_matrix, label_split, paired_batches
from .steps import EGConfig, backprop_step, eg_step
from ._tree import trainable

__all__ = ["TrainConfig", "TrainResult", "train", "evaluate", "load_data", "latest_checkpoint", "write_json_atomic", "MODELS"]

MODELS = ("drmm", "dcn")
LOG_FORMAT = "drmm_ref.train_log"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (stored in its log and checkpoints).

    Parameters
    ----------
    model : {"drmm", "dcn"}
        ``drmm``: EG training (E-step, G-step on CE + RC + NN (+ H), closed-form priors);
        ``dcn``: backprop on CE alone (the baseline).
    net : str or Network
        A preset name (``small2``, ``conv-small``, ``conv-small-ladder``, ``tiny``) or a Network.
    epochs : int
    batch_size : int, default 128
    optimizer : {"adam", "sgd"}, default "adam"
    lr : float, default 1e-3
    momentum : float, default 0.9 (SGD only)
    seed : int
        Seeds the initialisation and the batch order.
    dtype : {"float32", "float64"}
    weights : LossWeights
        EG objective weights. A ``dcn`` run stores the backprop objective (CE alone) whatever is
        passed, so its configuration says what it trained on.
    cg_blocks, k_cg, cg_eta, cg_damping :
        Optional exact block steps on RC after each G-step (see :class:`EGConfig`); none by default.
    n_train : int, optional
        Train on the first ``n_train`` training images only.
    n_eval : int, optional
        Evaluate on the first ``n_eval`` validation and test images only.
    n_labels : int, optional
        None (default): every training image is labelled (supervised). ``0``: unsupervised EG
        (``drmm`` only). ``N > 0``: semi-supervised, N class-balanced labels (see the module
        docstring).
    label_seed : int, optional
        Seed of the labelled subset (default: ``seed``).
    init_from : str, optional
        Start from the parameters of this checkpoint instead of ``init_params(net, seed)`` (e.g.
        unsupervised pre-training followed by semi-supervised training); the optimiser starts afresh.
        With labels, the checkpoint's classes are first renumbered to match the labelled images
        (:func:`~drmm_ref.learning.semi.align_classes`; the mapping is logged).
    monitor_size : int, default 1000
        Size of the EG monitoring subset (first training images).
    data : {"mnist", "synthetic"}
        Where :func:`load_data` gets the images (``synthetic`` = :func:`synthetic_digits`).
    backend : {"numpy", "array_api_strict", "cupy"}
    """

    model: str = "drmm"
    net: Any = "small2"
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    seed: int = 0
    dtype: str = "float32"
    weights: LossWeights = LossWeights()
    cg_blocks: tuple[str, ...] = ()
    k_cg: int = 10
    cg_eta: float = 0.5
    cg_damping: float = 0.0
    n_train: int | None = None
    n_eval: int | None = None
    eval_batch: int = 1000
    monitor_size: int = 1000
    data: str = "mnist"
    backend: str = "numpy"
    n_labels: int | None = None
    label_seed: int | None = None
    init_from: str | None = None

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if int(self.epochs) < 0 or int(self.batch_size) < 1:
            raise ValueError(f"epochs must be >= 0 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.data not in ("mnist", "synthetic"):
            raise ValueError(f"data must be 'mnist' or 'synthetic', got {self.data!r}")
        if isinstance(self.weights, dict):
            object.__setattr__(self, "weights", LossWeights(**self.weights))
        if self.model == "dcn":
            object.__setattr__(self, "weights", LossWeights(ce=1.0, rc=0.0, nn=0.0, h=0.0))
        object.__setattr__(self, "cg_blocks", tuple(self.cg_blocks))
        if self.n_labels is not None:
            if isinstance(self.n_labels, bool) or int(self.n_labels) != self.n_labels or self.n_labels < 0:
                raise ValueError(f"n_labels must be None or an integer >= 0, got {self.n_labels!r}")
            if self.n_labels == 0 and self.model == "dcn":
                raise ValueError("n_labels=0 (unsupervised) needs model='drmm': a DCN has nothing to learn from")
        dtype_name(self.dtype)
        self.network  # noqa: B018 - validates the net

    @property
    def semi_supervised(self) -> bool:
        """True when the run splits the training set into labelled and unlabelled images."""
        return self.n_labels is not None

    @property
    def network(self) -> Network:
        if isinstance(self.net, Network):
            return self.net
        if isinstance(self.net, dict):
            return Network.from_dict(self.net)
        return preset(self.net)

    def optimizer_object(self):
        kwargs = {"momentum": self.momentum} if self.optimizer == "sgd" else {}
        return make_optimizer(self.optimizer, self.lr, **kwargs)

    def eg_config(self) -> EGConfig:
        return EGConfig(self.weights, self.cg_blocks, self.k_cg, self.cg_damping, self.cg_eta)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["net"] = self.network.to_dict() if not isinstance(self.net, str) else self.net
        d["weights"] = self.weights.to_dict()
        d["cg_blocks"] = list(self.cg_blocks)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; fields added since a log was written take their defaults."""
        d = dict(d)
        d["weights"] = LossWeights(**d["weights"])
        d["cg_blocks"] = tuple(d.get("cg_blocks", ()))
        return cls(**d)


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


def _host_split(split: Any, n: int | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = _backend.to_numpy(split.images), _backend.to_numpy(split.labels)
    if n is not None:
        x, y = x[:n], y[:n]
    return np.ascontiguousarray(x), np.ascontiguousarray(y).astype(np.int64)


def evaluate(params: DRMMParams, images: np.ndarray, labels: np.ndarray, *, batch: int = 1000,
             clusters: bool = False) -> dict[str, Any]:
    """Classification error (fraction) and mean cross-entropy of the DCN decision ``argmax_c s_c``.

    ``images`` and ``labels`` are host arrays; they are moved to the parameters' namespace a batch at a time.
    With ``clusters=True`` the result also holds ``cluster`` (:func:`~drmm_ref.learning.semi.cluster_accuracy`
    of the class latent: accuracy after matching clusters to labels, cluster sizes).
    """
    xp, dt = params.xp, dtype_name(params.dtype)
    wrong, ce_sum, n = 0, 0.0, int(labels.shape[0])
    k = params.net.n_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    for s in range(0, n, batch):
        x = _backend.asarray(images[s:s + batch].astype(dt), xp=xp, device=params.device)
        y = _backend.asarray(labels[s:s + batch], xp=xp, device=params.device)
        fw = bottom_up(params, x)
        wrong += int(xp.sum(xp.astype(fw.classes != y, xp.int64)))
        ce, _ = cross_entropy(fw.scores, y)
        ce_sum += float(ce) * int(y.shape[0])
        if clusters:
            confusion += confusion_matrix(fw.classes, labels[s:s + batch], k)
    out: dict[str, Any] = {"error": wrong / max(n, 1), "ce": ce_sum / max(n, 1), "n": n}
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


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _epoch_record(epoch, traces, seconds, cumulative, wall, val, test, params, stats, monitor,
                  cpu: float = 0.0, cumulative_cpu: float = 0.0) -> dict[str, Any]:
    rec: dict[str, Any] = {"epoch": epoch, "train_seconds": seconds, "cumulative_train_seconds": cumulative,
                           "train_cpu_seconds": cpu, "cumulative_train_cpu_seconds": cumulative_cpu,
                           "wall_seconds": wall, "validation_error": val["error"], "validation_ce": val["ce"],
                           "test_error": test["error"], "test_ce": test["ce"], "steps": len(traces)}
    for split, res in (("validation", val), ("test", test)):
        if "cluster" in res:
            rec[f"{split}_cluster_accuracy"] = res["cluster"]["accuracy"]
            rec[f"{split}_cluster_sizes"] = res["cluster"]["cluster_sizes"]
    if traces:
        for key in ("objective", "ce", "rc", "nn", "h", "balance"):
            rec[f"mean_{key}"] = _mean([getattr(t.terms, key) for t in traces])
        rec["mean_rc_after_e"] = _mean([t.rc_after_e for t in traces])
        rec["mean_rc_after_m"] = _mean([t.rc_after_m for t in traces])
        pairs = [(t.rc_after_e, t.rc_after_m) for t in traces if t.rc_after_e is not None and t.rc_after_m is not None]
        rec["m_steps_raising_rc"] = sum(1 for e, m in pairs if m > e) if pairs else None
        rec["trace_seconds"] = float(sum(t.trace_seconds for t in traces))
    if stats is not None:
        rec["class_prior"] = [float(v) for v in stats.class_prior]
        rec["switch_prior"] = [float(v) for v in stats.switch_prior]
        rec["noise_variance"] = stats.noise_variance if stats.pixels else None
    if monitor is not None:
        rec["monitor"] = monitor
    return rec


def _step_trace_table(traces) -> dict[str, list]:
    def r(v):
        return None if v is None else float(v)

    return {"objective": [r(t.terms.objective) for t in traces], "ce": [r(t.terms.ce) for t in traces],
            "rc": [r(t.terms.rc) for t in traces], "nn": [r(t.terms.nn) for t in traces],
            "h": [r(t.terms.h) for t in traces], "balance": [r(t.terms.balance) for t in traces],
            "rc_after_e": [r(t.rc_after_e) for t in traces],
            "rc_after_m": [r(t.rc_after_m) for t in traces], "seconds": [r(t.seconds) for t in traces]}


def _checkpoint_path(out: Path, epoch: int) -> Path:
    return out / "checkpoints" / f"epoch-{epoch:03d}.npz"


def latest_checkpoint(out: str | os.PathLike) -> Path | None:
    """The checkpoint of the highest epoch in ``<out>/checkpoints``, or None."""
    folder = Path(out) / "checkpoints"
    found = sorted(folder.glob("epoch-*.npz")) if folder.is_dir() else []
    return found[-1] if found else None


def _same_run(saved: dict, current: dict) -> list[str]:
    saved = TrainConfig.from_dict(saved).to_dict()  # fields added since the checkpoint take their defaults
    keys = [k for k in current if k != "epochs"]
    return [k for k in keys if saved.get(k) != current.get(k)]


def train(config: TrainConfig, data: Any, out: str | os.PathLike, *, resume: bool = True, progress: bool = True,
          keep_checkpoints: bool = True, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    """Train for ``config.epochs`` epochs, evaluating, logging and checkpointing after each.

    Parameters
    ----------
    config : TrainConfig
    data :
        An object with ``train``, ``validation``, ``test`` splits (``images``, ``labels``) and a
        ``source`` string: :func:`drmm_ref.data.load_mnist` or :func:`synthetic_digits` output.
    out : path
        Output folder (``log.json``, ``checkpoints/``).
    resume : bool, default True
        Continue from the latest checkpoint in ``out`` when there is one (its configuration must
        match ``config`` except for ``epochs``); otherwise start afresh (old checkpoints are ignored
        and overwritten).
    progress : bool, default True
        Show a tqdm progress bar per epoch.
    keep_checkpoints : bool, default True
        Keep every epoch's checkpoint (False keeps only the latest).
    on_epoch : callable, optional
        Called with each epoch record after it is logged.

    Returns
    -------
    TrainResult
    """
    from tqdm.auto import tqdm

    out = Path(out)
    net = config.network
    xp = _backend.resolve_namespace(config.backend)
    dt = config.dtype
    optimizer = config.optimizer_object()
    cfg_dict = config.to_dict()
    xtr, ytr = _host_split(data.train, config.n_train)
    xva, yva = _host_split(data.validation, config.n_eval)
    xte, yte = _host_split(data.test, config.n_eval)
    n = len(ytr)
    if n == 0:
        raise ValueError("the training split is empty; check n_train and the data")
    split = None
    if config.semi_supervised:
        split = label_split(ytr, config.n_labels, config.seed if config.label_seed is None else config.label_seed,
                            net.n_classes)
        batches = math.ceil(split.unlabelled.size / config.batch_size)
    else:
        batches = math.ceil(n / config.batch_size)
    mon = min(config.monitor_size, n) if config.model == "drmm" else 0
    xmon, ymon = xtr[:mon], (None if config.semi_supervised else ytr[:mon])
    clusters = config.n_labels == 0

    ckpt_path = latest_checkpoint(out) if resume else None
    if ckpt_path is not None:
        ckpt = load_checkpoint(ckpt_path, xp=xp)
        diff = _same_run(ckpt.config, cfg_dict)
        if diff:
            raise ValueError(f"{ckpt_path} was written by a run with another configuration (differs in {diff}); "
                             "use another output folder or resume=False")
        params, opt_state, start_epoch, log = ckpt.params, ckpt.opt_state, ckpt.epoch, ckpt.history
        rng = np.random.default_rng()
        rng.bit_generator.state = ckpt.rng_state
        log["config"] = cfg_dict
    else:
        params = _initial_params(config, net, xp)
        mapping = None
        if config.init_from is not None and split is not None and split.labelled.size:
            params, mapping = align_classes(params, xtr[split.labelled], ytr[split.labelled])
        opt_state = optimizer.init(trainable(params))
        rng = np.random.default_rng(config.seed)
        start_epoch = 0
        t0 = time.perf_counter()
        val = evaluate(params, xva, yva, batch=config.eval_batch, clusters=clusters)
        test = evaluate(params, xte, yte, batch=config.eval_batch, clusters=clusters)
        monitor = _monitor_rc(params, xmon, ymon, None, config.eval_batch) if mon else None
        log = {"format": LOG_FORMAT, "version": 1, "config": cfg_dict, "network": net.to_dict(),
               "data_source": getattr(data, "source", "unknown"), "n_train": n, "n_validation": len(yva),
               "n_test": len(yte), "batches_per_epoch": batches, "versions": _versions(config.backend),
               "epochs": [_epoch_record(0, [], 0.0, 0.0, time.perf_counter() - t0, val, test, params, None, monitor)],
               "steps": [], "finished": False}
        if mapping is not None:
            log["init_class_mapping"] = mapping
        if split is not None:
            log["labelled_indices"] = [int(i) for i in split.labelled]
            log["n_unlabelled"] = int(split.unlabelled.size)
    log["finished"] = False
    write_json_atomic(out / "log.json", log)
    eg_cfg = config.eg_config()
    cumulative = log["epochs"][-1]["cumulative_train_seconds"]
    cumulative_cpu = log["epochs"][-1].get("cumulative_train_cpu_seconds", 0.0)
    for epoch in range(start_epoch + 1, config.epochs + 1):
        wall0 = time.perf_counter()
        prev = params
        schedule = _epoch_schedule(rng, n, config.batch_size, split)
        traces, stats = [], PriorStats.zeros(net.n_classes, net.L) if config.model == "drmm" else None
        bar = tqdm(total=batches, desc=f"{config.model} epoch {epoch}/{config.epochs}", disable=not progress,
                   leave=False, unit="batch")
        seconds = cpu = 0.0
        for idx_l, idx_u in schedule:
            x, y = _batch(xtr, ytr, idx_l, idx_u, config.model, dt, xp)
            if config.model == "drmm":
                params, opt_state, tr = eg_step(params, optimizer, opt_state, x, y, eg_cfg)
                stats = stats + tr.stats
            else:
                params, opt_state, tr = backprop_step(params, optimizer, opt_state, x, y)
            traces.append(tr)
            seconds += tr.seconds
            cpu += tr.cpu_seconds
            bar.update(1)
            bar.set_postfix(loss=f"{tr.terms.objective:.4f}")
        bar.close()
        if config.model == "drmm":
            t0, c0 = time.perf_counter(), time.process_time()
            params = apply_closed_forms(params, stats)
            seconds += time.perf_counter() - t0
            cpu += time.process_time() - c0
        cumulative += seconds
        cumulative_cpu += cpu
        val = evaluate(params, xva, yva, batch=config.eval_batch, clusters=clusters)
        test = evaluate(params, xte, yte, batch=config.eval_batch, clusters=clusters)
        monitor = _monitor_rc(params, xmon, ymon, prev, config.eval_batch) if mon else None
        rec = _epoch_record(epoch, traces, seconds, cumulative, time.perf_counter() - wall0, val, test, params,
                            stats, monitor, cpu, cumulative_cpu)
        log["epochs"].append(rec)
        log["steps"].append(_step_trace_table(traces))
        log["finished"] = epoch == config.epochs
        ckpt = Checkpoint(params, optimizer, opt_state, rng.bit_generator.state, epoch, cfg_dict, log)
        save_checkpoint(_checkpoint_path(out, epoch), ckpt)
        if not keep_checkpoints and epoch > 1:
            _checkpoint_path(out, epoch - 1).unlink(missing_ok=True)
        write_json_atomic(out / "log.json", log)
        if progress:
            print(f"[{config.model} {net.name}] epoch {epoch}/{config.epochs}: val error {100 * val['error']:.2f}%, "
                  f"test error {100 * test['error']:.2f}%, train {seconds:.1f} s", flush=True)
        if on_epoch is not None:
            on_epoch(rec)
    log["finished"] = True
    write_json_atomic(out / "log.json", log)
    return TrainResult(params, log)


def _initial_params(config: TrainConfig, net: Network, xp: Any) -> DRMMParams:
    """``init_params(net, seed)``, or the parameters of the checkpoint ``config.init_from`` (pre-training)."""
    if config.init_from is None:
        return init_params(net, config.seed, dtype=config.dtype, xp=xp)
    params = load_checkpoint(config.init_from, xp=xp).params
    if params.net.to_dict() != net.to_dict():
        raise ValueError(f"init_from={config.init_from!r} holds a {params.net.name!r} network, not {net.name!r}")
    if dtype_name(params.dtype) != config.dtype:
        raise ValueError(f"init_from={config.init_from!r} is {dtype_name(params.dtype)}, the run is {config.dtype}")
    return params


def _epoch_schedule(rng: np.random.Generator, n: int, batch_size: int, split: Any) -> list[tuple[Any, Any]]:
    """One epoch's batches as ``(labelled indices, unlabelled indices or None)``.

    Supervised: a permutation of the training set cut into batches (all labelled). Semi-supervised
    and unsupervised: :func:`~drmm_ref.learning.semi.paired_batches`.
    """
    if split is None:
        perm = rng.permutation(n)
        return [(perm[s:s + batch_size], None) for s in range(0, n, batch_size)]
    return paired_batches(split, batch_size, rng)


def _batch(xtr: np.ndarray, ytr: np.ndarray, idx_l: Any, idx_u: Any, model: str, dt: str, xp: Any):
    """The step's images and labels: the unlabelled half gets ``UNLABELLED`` (its labels are never read).

    The ``dcn`` baseline of a semi-supervised run sees only the labelled half.
    """
    if idx_u is None or model == "dcn":
        x, y = xtr[idx_l], ytr[idx_l]
    else:
        x = np.concatenate([xtr[idx_l], xtr[idx_u]])
        y = np.concatenate([ytr[idx_l], np.full(idx_u.size, UNLABELLED, dtype=ytr.dtype)])
    return _backend.asarray(x.astype(dt), xp=xp), _backend.asarray(y, xp=xp)


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
