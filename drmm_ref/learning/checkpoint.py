"""Training checkpoints: parameters, optimiser state, RNG state and the run's history in one file.

Format ``drmm_ref.checkpoint`` version 2: an uncompressed ``.npz`` with the arrays
``param/<name>`` (every :class:`~drmm_ref.drmm.DRMMParams` field, ``noise_variance`` as a 0-d
float64), ``opt/<slot>/<name>`` (the optimiser state's arrays, ``slot`` in ``velocity`` or ``m``,
``v``), for a mid-epoch checkpoint ``start/<name>`` (the parameters at the start of the epoch in
progress, which the epoch's monitor compares with), and ``__meta__``: JSON with the network, the
optimiser settings and step count, the state of the host ``numpy.random.Generator``
(``bit_generator.state``), the epoch, the training configuration, the history so far, for a
mid-epoch checkpoint its position in the epoch (``mid_epoch``), a SHA-256 over every array
(``checksum``) and a SHA-256 over the rest of the meta (``meta_checksum``): editing the epoch, the
history or the configuration is detected like a flipped byte in an array.

Arrays are stored in their own dtype, so a resumed run continues bit for bit. Writes go to a
temporary file that is fsynced and renamed (atomic); loading never unpickles. Every way a file can
be damaged (truncated, flipped bytes, edited meta, missing entries, a newer version) raises
:class:`CheckpointError` naming the file. Version 1 files (no ``meta_checksum``) are still read;
their meta is checked for consistency (the epoch against the history) instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend
from .._files import array_checksum, save_npz_atomic
from ..drmm import DRMMParams, Network
from ._tree import trainable_names
from .optim import Adam, AdamState, SGD, SGDState

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CheckpointError", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "drmm_ref.checkpoint"
CHECKPOINT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_PARAM_FIELDS = ("class_templates", "class_biases", "class_prior", "switch_prior")


class CheckpointError(ValueError):
    """A checkpoint cannot be read: missing, corrupted, foreign or of an unsupported version."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Everything needed to continue a run exactly.

    Attributes
    ----------
    params : DRMMParams
    optimizer : SGD or Adam
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
        traces and statistics so far; see :mod:`.trainer`). None for an epoch checkpoint.
    start_params : DRMMParams or None
        Mid-epoch: the parameters at the start of the epoch in progress (None if not needed).
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


def _host(a: Any) -> np.ndarray:
    return np.ascontiguousarray(_backend.to_numpy(a))


_checksum = array_checksum


def _meta_checksum(meta: dict) -> str:
    """sha256 of the meta's canonical JSON (sorted keys), leaving out the two checksum fields."""
    rest = {k: v for k, v in meta.items() if k not in ("checksum", "meta_checksum")}
    text = json.dumps(json.loads(json.dumps(rest, allow_nan=False)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _opt_slots(state: Any) -> dict[str, dict[str, Any]]:
    if isinstance(state, AdamState):
        return {"m": state.m, "v": state.v}
    if isinstance(state, SGDState):
        return {"velocity": state.velocity}
    raise TypeError(f"unknown optimiser state {type(state).__name__}")


def _param_arrays(p: DRMMParams, prefix: str) -> dict[str, np.ndarray]:
    arrays = {f"{prefix}filters_{l}": _host(w) for l, w in enumerate(p.filters, start=1)}
    arrays.update({f"{prefix}biases_{l}": _host(b) for l, b in enumerate(p.biases, start=1)})
    arrays.update({f"{prefix}{name}": _host(getattr(p, name)) for name in _PARAM_FIELDS})
    arrays[f"{prefix}noise_variance"] = np.asarray(p.noise_variance, dtype=np.float64)
    return arrays


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically and return the path.

    Raises
    ------
    ValueError
        ``path`` is empty or a folder, or the history holds NaN or inf (JSON refuses them).
    """
    path = Path(path)
    p = ckpt.params
    arrays = _param_arrays(p, "param/")
    for slot, tree in _opt_slots(ckpt.opt_state).items():
        arrays.update({f"opt/{slot}/{name}": _host(a) for name, a in tree.items()})
    if ckpt.start_params is not None:
        arrays.update(_param_arrays(ckpt.start_params, "start/"))
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "network": p.net.to_dict(),
            "optimizer": ckpt.optimizer.to_dict(), "opt_step": int(ckpt.opt_state.step),
            "rng_state": ckpt.rng_state, "epoch": int(ckpt.epoch), "config": ckpt.config, "history": ckpt.history}
    if ckpt.mid_epoch is not None:
        meta["mid_epoch"] = ckpt.mid_epoch
    meta["checksum"] = _checksum(arrays)
    meta["meta_checksum"] = _meta_checksum(meta)
    save_npz_atomic(path, meta, arrays)
    return path


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


def load_checkpoint(path: str | os.PathLike, *, xp: Any = "numpy", device: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` onto namespace ``xp`` / ``device``.

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupted (checksums), edited, inconsistent, foreign or newer-version file.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__meta__" not in data.files:
                raise CheckpointError(f"{path}: not a drmm_ref checkpoint (no __meta__ entry)")
            meta = json.loads(str(data["__meta__"]))
            arrays = {name: np.array(data[name]) for name in data.files if name != "__meta__"}
    except CheckpointError:
        raise
    except Exception as exc:  # zip, npy-header and JSON parsers raise many types on damaged bytes
        raise CheckpointError(f"{path}: unreadable or corrupted checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT!r} file")
    version = meta.get("version")
    if version not in _READABLE_VERSIONS:
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not supported "
                              f"(this library reads versions {list(_READABLE_VERSIONS)}); upgrade drmm_ref")
    if _checksum(arrays) != meta.get("checksum"):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupted or was edited")
    try:
        if version >= 2 and _meta_checksum(meta) != meta.get("meta_checksum"):
            raise CheckpointError(f"{path}: meta checksum mismatch: its epoch, history or configuration was edited "
                                  "or is corrupted")
        _check_meta(meta)
        net = Network.from_dict(meta["network"])

        def put(a):
            return _backend.asarray(a, xp=xp, device=device)

        def params_from(prefix):
            return DRMMParams(net, tuple(put(arrays[f"{prefix}filters_{l}"]) for l in range(1, net.L + 1)),
                              tuple(put(arrays[f"{prefix}biases_{l}"]) for l in range(1, net.L + 1)),
                              *(put(arrays[f"{prefix}{name}"]) for name in _PARAM_FIELDS),
                              float(arrays[f"{prefix}noise_variance"]))

        params = params_from("param/")
        start = params_from("start/") if "start/class_templates" in arrays else None
        opt_cfg = dict(meta["optimizer"])
        kind = opt_cfg.pop("name")
        if kind not in ("adam", "sgd"):
            raise ValueError(f"unknown optimiser {kind!r}")
        optimizer = Adam(**opt_cfg) if kind == "adam" else SGD(**opt_cfg)

        def slot(s):
            prefix = f"opt/{s}/"
            return {k[len(prefix):]: put(v) for k, v in arrays.items() if k.startswith(prefix)}

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
                      meta["history"], meta.get("mid_epoch"), start)
