"""Training checkpoints: a parameter file plus the optimiser state, the RNG state and the run's history.

A checkpoint *is* a parameter file (:mod:`drmm_ref.io.params`: format ``drmm_ref.params``, the same
arrays under the same names, the same meta fields, ``kind = "checkpoint"``), so everything that
takes a model (:func:`~drmm_ref.io.load_params`, the figures' ``--checkpoint``, ``drmm-ref
evaluate``) takes a checkpoint. It adds:

* arrays ``opt/<slot>/<name>`` (the optimiser state; ``slot`` in ``velocity`` or ``m``, ``v``) and,
  for a mid-epoch checkpoint, ``start/<name>`` (the parameters at the start of the epoch in
  progress, which the epoch's monitor compares with);
* meta fields ``optimizer`` (its settings), ``opt_step``, ``rng_state`` (the host
  ``numpy.random.Generator``'s ``bit_generator.state``), ``epoch`` (epochs completed), ``config``
  (the training configuration), ``history`` (the run's log so far), for a mid-epoch checkpoint
  ``mid_epoch`` (its position in the epoch), and ``lr_schedule`` (the learning-rate schedule's
  position: the schedule, the epoch and the rate it gave, checked on resume).

The two checksums of the parameter file cover all of it: a flipped byte in any array, and an edited
epoch, history, configuration or generator state, are detected. Arrays are stored in their own
dtype, so a resumed run continues bit for bit. Writes go to a temporary file that is fsynced and
renamed (atomic); loading never unpickles. Every way a file can be damaged (truncated, flipped
bytes, edited meta, missing entries, a newer version) raises :class:`CheckpointError` naming the
file.

Files of the former format ``drmm_ref.checkpoint`` (version 1: arrays checksummed, meta checked for
consistency only; version 2: with a meta checksum; the parameters under ``param/``) are still read.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend
from ..drmm import DRMMParams, Network
from .params import (FORMAT, LEGACY_CHECKPOINT_FORMAT, DRMMFileError, kind_of, params_from_arrays, param_arrays,
                     read_file, verify, write_file)

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CheckpointError", "NoTrainingState",
           "CHECKPOINT_FORMAT"]

#: The name checkpoints answer to in messages (and the former format's name, still read).
CHECKPOINT_FORMAT = LEGACY_CHECKPOINT_FORMAT


class CheckpointError(DRMMFileError):
    """A checkpoint cannot be read: missing, corrupted, foreign, not a checkpoint, or of an unsupported version."""


class NoTrainingState(CheckpointError):
    """A sound parameter file, but not a checkpoint: it holds no training state (read it with ``load_params``)."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Everything needed to continue a run exactly.

    Attributes
    ----------
    params : DRMMParams
    optimizer : SGD or Adam
        The optimiser with the run's base learning rate (the schedule scales it per epoch).
    opt_state : SGDState or AdamState
    rng_state : dict
        ``numpy.random.Generator.bit_generator.state`` of the shuffling generator: after epoch
        ``epoch`` (an epoch checkpoint), or at the start of the epoch in progress (mid-epoch).
    epoch : int
        Epochs completed.
    config : dict
        The training configuration (:meth:`TrainConfig.to_dict`).
    history : dict
        The run's log so far.
    mid_epoch : dict or None
        For a mid-epoch checkpoint: the position in epoch ``epoch + 1`` (steps done, the step
        traces and statistics so far; see :mod:`drmm_ref.learning.fit_loop`). None for an epoch checkpoint.
    start_params : DRMMParams or None
        Mid-epoch: the parameters at the start of the epoch in progress (None if not needed).
    lr_schedule : dict or None
        The schedule's position: ``{"schedule", "epoch", "lr"}``, the learning rate of the last
        epoch stepped (None in files written before schedules existed: the constant schedule).
    """

    params: DRMMParams
    optimizer: Any
    opt_state: Any
    rng_state: dict
    epoch: int
    config: dict
    history: dict
    mid_epoch: dict | None = None
    start_params: DRMMParams | None = None
    lr_schedule: dict | None = None


def _opt_slots(state: Any) -> dict[str, dict[str, Any]]:
    from ..learning.optim import AdamState, SGDState

    if isinstance(state, AdamState):
        return {"m": state.m, "v": state.v}
    if isinstance(state, SGDState):
        return {"velocity": state.velocity}
    raise TypeError(f"unknown optimiser state {type(state).__name__}")


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically and return the path.

    Raises
    ------
    TypeError
        ``ckpt`` is not a :class:`Checkpoint`.
    ValueError
        ``path`` is empty or a folder, or the history holds NaN or inf (JSON refuses them).
    """
    if not isinstance(ckpt, Checkpoint):
        raise TypeError(f"ckpt must be a Checkpoint, got {type(ckpt).__name__}")
    arrays: dict[str, np.ndarray] = {}
    for slot, tree in _opt_slots(ckpt.opt_state).items():
        arrays.update({f"opt/{slot}/{name}": np.ascontiguousarray(_backend.to_numpy(a)) for name, a in tree.items()})
    if ckpt.start_params is not None:
        arrays.update(param_arrays(ckpt.start_params, "start/"))
    meta = {"optimizer": ckpt.optimizer.to_dict(), "opt_step": int(ckpt.opt_state.step), "rng_state": ckpt.rng_state,
            "epoch": int(ckpt.epoch), "config": ckpt.config, "history": ckpt.history}
    if ckpt.mid_epoch is not None:
        meta["mid_epoch"] = ckpt.mid_epoch
    if ckpt.lr_schedule is not None:
        meta["lr_schedule"] = ckpt.lr_schedule
    return write_file(path, ckpt.params, kind="checkpoint", extra_meta=meta, extra_arrays=arrays)


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ValueError(what)


def _check_meta(meta: dict) -> None:
    """Types and consistency of the meta fields the loader and the trainer read (ValueError otherwise)."""
    _require(isinstance(meta.get("network"), dict), "network is not a dict")
    _require(isinstance(meta.get("optimizer"), dict), "optimizer is not a dict")
    _require(isinstance(meta.get("rng_state"), dict), "rng_state is not a dict")
    _require(isinstance(meta.get("config"), dict), "config is not a dict")
    epoch, step = meta.get("epoch"), meta.get("opt_step")
    _require(type(epoch) is int and epoch >= 0, f"epoch {epoch!r} is not an integer >= 0")
    _require(type(step) is int and step >= 0, f"opt_step {step!r} is not an integer >= 0")
    history = meta.get("history")
    _require(isinstance(history, dict), "history is missing or not a dict")
    epochs = history.get("epochs")
    _require(isinstance(epochs, list) and len(epochs) >= 1 and all(isinstance(e, dict) for e in epochs),
             "history has no list of epoch records")
    _require([e.get("epoch") for e in epochs] == list(range(len(epochs))),
             "history's epoch records are not numbered 0, 1, 2, ...")
    _require(epochs[-1]["epoch"] == epoch, f"epoch {epoch} does not match the history, which ends at epoch "
             f"{epochs[-1]['epoch']}")
    _require(isinstance(history.get("steps"), list) and len(history["steps"]) == epoch,
             "history's step traces do not match the epoch")
    mid = meta.get("mid_epoch")
    if mid is not None:
        _require(isinstance(mid, dict) and type(mid.get("step")) is int and mid["step"] >= 1,
                 "mid_epoch has no step count")
    schedule = meta.get("lr_schedule")
    if schedule is not None:
        _require(isinstance(schedule, dict) and isinstance(schedule.get("schedule"), str)
                 and type(schedule.get("epoch")) is int and isinstance(schedule.get("lr"), float),
                 "lr_schedule is not a {schedule, epoch, lr} record")


def load_checkpoint(path: str | os.PathLike, *, xp: Any = "numpy", device: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (or of the former format) onto ``xp`` / ``device``.

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupted (checksums), edited, inconsistent, foreign or newer-version
        file; :class:`NoTrainingState` (a subclass) for a sound parameter file without training state
        (read that with :func:`~drmm_ref.io.load_params`).
    """
    from ..learning._tree import trainable_names
    from ..learning.optim import Adam, AdamState, SGD, SGDState

    path = Path(path)
    meta, arrays = read_file(path, CheckpointError, "checkpoint file")
    fmt = meta.get("format")
    if fmt not in (FORMAT, LEGACY_CHECKPOINT_FORMAT):
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT!r} file (its format is {fmt!r}, not {FORMAT!r})")
    prefix = verify(path, meta, arrays, CheckpointError)
    if kind_of(meta) != "checkpoint":
        raise NoTrainingState(f"{path}: a parameter file without training state (no optimiser state, generator "
                              f"state or history), not a {CHECKPOINT_FORMAT!r}; read it with "
                              "drmm_ref.io.load_params, or start a run from it with --init-from")
    try:
        _check_meta(meta)
        net = Network.from_dict(meta["network"])
        params = params_from_arrays(arrays, net, prefix, xp=xp, device=device)
        start = (params_from_arrays(arrays, net, "start/", xp=xp, device=device)
                 if "start/class_templates" in arrays else None)
        opt_cfg = dict(meta["optimizer"])
        kind = opt_cfg.pop("name")
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimiser {kind!r}")
        optimizer = Adam(**opt_cfg) if kind == "adam" else SGD(**opt_cfg)

        def slot(s):
            p = f"opt/{s}/"
            return {k[len(p):]: _backend.asarray(v, xp=xp, device=device) for k, v in arrays.items()
                    if k.startswith(p)}

        step = int(meta["opt_step"])
        state = AdamState(slot("m"), slot("v"), step) if kind == "adam" else SGDState(slot("velocity"), step)
        names = set(state.m if kind == "adam" else state.velocity)
        if names != set(trainable_names(net.L)):
            raise ValueError(f"the optimiser state covers {sorted(names)}, not the trainable arrays")
    except CheckpointError:
        raise
    except Exception as exc:  # whatever an inconsistent meta trips on, the file is named
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(exc).__name__}: {exc})") from None
    return Checkpoint(params, optimizer, state, meta["rng_state"], int(meta["epoch"]), meta["config"],
                      meta["history"], meta.get("mid_epoch"), start, meta.get("lr_schedule"))
