"""Training checkpoints: parameters, optimiser state, RNG state and the run's history in one file.

Format ``drmm_ref.checkpoint`` version 1: an uncompressed ``.npz`` with the arrays
``param/<name>`` (every :class:`~drmm_ref.drmm.DRMMParams` field, ``noise_variance`` as a 0-d
float64), ``opt/<slot>/<name>`` (the optimiser state's arrays, ``slot`` in ``velocity`` or ``m``,
``v``) and ``__meta__``: JSON with the network, the optimiser settings and step count, the state
of the host ``numpy.random.Generator`` (``bit_generator.state``), the epoch, the training
configuration, the history so far and a SHA-256 over every array. Arrays are stored in their own
dtype, so a resumed run continues bit for bit. Writes go to a temporary file that is fsynced and
renamed (atomic); loading never unpickles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend
from .._files import array_checksum, save_npz_atomic
from ..drmm import DRMMParams, Network
from .optim import Adam, AdamState, SGD, SGDState

__all__ = ["Checkpoint", "save_checkpoint", "load_checkpoint", "CheckpointError", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "drmm_ref.checkpoint"
CHECKPOINT_VERSION = 1
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
        ``numpy.random.Generator.bit_generator.state`` of the shuffling generator.
    epoch : int
        Epochs completed.
    config : dict
        The training configuration (:meth:`TrainConfig.to_dict`).
    history : dict
        The run's log so far.
    """

    params: DRMMParams
    optimizer: Any
    opt_state: Any
    rng_state: dict
    epoch: int
    config: dict
    history: dict


def _host(a: Any) -> np.ndarray:
    return np.ascontiguousarray(_backend.to_numpy(a))


_checksum = array_checksum


def _opt_slots(state: Any) -> dict[str, dict[str, Any]]:
    if isinstance(state, AdamState):
        return {"m": state.m, "v": state.v}
    if isinstance(state, SGDState):
        return {"velocity": state.velocity}
    raise TypeError(f"unknown optimiser state {type(state).__name__}")


def save_checkpoint(path: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``path`` atomically and return the path."""
    path = Path(path)
    p = ckpt.params
    arrays = {f"param/filters_{l}": _host(w) for l, w in enumerate(p.filters, start=1)}
    arrays.update({f"param/biases_{l}": _host(b) for l, b in enumerate(p.biases, start=1)})
    arrays.update({f"param/{name}": _host(getattr(p, name)) for name in _PARAM_FIELDS})
    arrays["param/noise_variance"] = np.asarray(p.noise_variance, dtype=np.float64)
    for slot, tree in _opt_slots(ckpt.opt_state).items():
        arrays.update({f"opt/{slot}/{name}": _host(a) for name, a in tree.items()})
    meta = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "network": p.net.to_dict(),
            "optimizer": ckpt.optimizer.to_dict(), "opt_step": int(ckpt.opt_state.step),
            "rng_state": ckpt.rng_state, "epoch": int(ckpt.epoch), "config": ckpt.config, "history": ckpt.history,
            "checksum": _checksum(arrays)}
    save_npz_atomic(path, meta, arrays)
    return path


def load_checkpoint(path: str | os.PathLike, *, xp: Any = "numpy", device: Any = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` onto namespace ``xp`` / ``device``.

    Raises
    ------
    CheckpointError
        Missing, truncated, corrupted (checksum), foreign or newer-version file.
    """
    path = Path(path)
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
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable or corrupted checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT!r} file")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {meta.get('version')!r} is not supported "
                              f"(this library reads version {CHECKPOINT_VERSION})")
    if _checksum(arrays) != meta.get("checksum"):
        raise CheckpointError(f"{path}: checksum mismatch: the checkpoint is corrupted or was edited")
    try:
        net = Network.from_dict(meta["network"])

        def put(a):
            return _backend.asarray(a, xp=xp, device=device)

        params = DRMMParams(net, tuple(put(arrays[f"param/filters_{l}"]) for l in range(1, net.L + 1)),
                            tuple(put(arrays[f"param/biases_{l}"]) for l in range(1, net.L + 1)),
                            *(put(arrays[f"param/{name}"]) for name in _PARAM_FIELDS),
                            float(arrays["param/noise_variance"]))
        opt_cfg = dict(meta["optimizer"])
        kind = opt_cfg.pop("name")
        optimizer = Adam(**opt_cfg) if kind == "adam" else SGD(**opt_cfg)

        def slot(s):
            prefix = f"opt/{s}/"
            return {k[len(prefix):]: put(v) for k, v in arrays.items() if k.startswith(prefix)}

        step = int(meta["opt_step"])
        state = AdamState(slot("m"), slot("v"), step) if kind == "adam" else SGDState(slot("velocity"), step)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: inconsistent checkpoint ({type(exc).__name__}: {exc})") from None
    return Checkpoint(params, optimizer, state, meta["rng_state"], int(meta["epoch"]), meta["config"], meta["history"])
