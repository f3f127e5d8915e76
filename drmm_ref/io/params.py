"""Parameter files: DRMM parameters as a versioned, checksummed ``.npz``, written atomically.

File layout (format ``drmm_ref.params``, version :data:`FORMAT_VERSION`): an uncompressed NumPy
``.npz`` archive with the arrays ``filters_<l>``, ``biases_<l>`` (l = 1..L), ``class_templates``,
``class_biases``, ``class_prior``, ``switch_prior``, ``noise_variance`` (a 0-d float64) and
``__meta__``, a 0-d unicode array holding JSON:

* ``format``, ``version``, ``kind`` (``"params"``; ``"checkpoint"`` for a training checkpoint,
  :mod:`drmm_ref.io.checkpoint`, which is this file plus the training state), ``network`` (the
  network description), ``dtype``, ``drmm_ref`` (the library version), ``metadata`` (the user's);
* ``checksum``: SHA-256 over every array's name, dtype, own shape and bytes, in sorted name order;
* ``meta_checksum``: SHA-256 over the canonical JSON (sorted keys) of the rest of the meta, so an
  edited field is detected like a flipped byte in an array.

Version history: 1 had no ``kind`` and no ``meta_checksum`` (still read; its meta is not
checksummed); 2 added both, and the training state of a checkpoint. Training checkpoints of the
former format ``drmm_ref.checkpoint`` (versions 1 and 2: the same arrays under ``param/``) are read
by :func:`load_params` too.

Guarantees: the round trip is bit-exact (arrays are saved in their own dtype, ``sigma^2`` as a
float64); a file is written to a temporary file in the target folder, flushed, fsynced and
renamed over the target, so a crash never leaves a half-written file under the final name;
loading never unpickles (``allow_pickle=False``) and raises :class:`DRMMFileError` (a
``ValueError``) naming the file and the problem for a missing, truncated, corrupted, edited,
foreign or newer-version file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend
from .._files import array_checksum, save_npz_atomic
from ..drmm.network import Network
from ..drmm.params import DRMMParams

__all__ = ["FORMAT", "FORMAT_VERSION", "DRMMFileError", "save_params", "load_params"]

FORMAT = "drmm_ref.params"
FORMAT_VERSION = 2
#: Versions of :data:`FORMAT` this library reads.
READABLE_VERSIONS = (1, 2)
#: The former training-checkpoint format (arrays under ``param/``); read, no longer written.
LEGACY_CHECKPOINT_FORMAT = "drmm_ref.checkpoint"
LEGACY_CHECKPOINT_VERSIONS = (1, 2)
#: Prefix of the parameter arrays in a file of each format.
_PREFIX = {FORMAT: "", LEGACY_CHECKPOINT_FORMAT: "param/"}
_PARAM_FIELDS = ("class_templates", "class_biases", "class_prior", "switch_prior")


class DRMMFileError(ValueError):
    """A parameter file cannot be read: missing, corrupted, foreign format or unsupported version."""


def param_arrays(params: DRMMParams, prefix: str = "") -> dict[str, np.ndarray]:
    """The host arrays of ``params`` under their file names (``<prefix>filters_1``, ...)."""
    out = {}
    for l, (w, b) in enumerate(zip(params.filters, params.biases), start=1):
        out[f"{prefix}filters_{l}"] = np.ascontiguousarray(_backend.to_numpy(w))
        out[f"{prefix}biases_{l}"] = np.ascontiguousarray(_backend.to_numpy(b))
    for name in _PARAM_FIELDS:
        out[f"{prefix}{name}"] = np.ascontiguousarray(_backend.to_numpy(getattr(params, name)))
    out[f"{prefix}noise_variance"] = np.asarray(params.noise_variance, dtype=np.float64)
    return out


def params_from_arrays(arrays: dict[str, np.ndarray], net: Network, prefix: str = "", *, xp: Any = "numpy",
                       device: Any = None) -> DRMMParams:
    """Inverse of :func:`param_arrays` (``KeyError`` / ``ValueError`` on missing or inconsistent arrays)."""
    def put(a):
        return _backend.asarray(a, xp=xp, device=device)

    return DRMMParams(net, tuple(put(arrays[f"{prefix}filters_{l}"]) for l in range(1, net.L + 1)),
                      tuple(put(arrays[f"{prefix}biases_{l}"]) for l in range(1, net.L + 1)),
                      *(put(arrays[f"{prefix}{name}"]) for name in _PARAM_FIELDS),
                      float(arrays[f"{prefix}noise_variance"]))


def meta_checksum(meta: dict) -> str:
    """sha256 of the meta's canonical JSON (sorted keys), leaving out the two checksum fields."""
    rest = {k: v for k, v in meta.items() if k not in ("checksum", "meta_checksum")}
    text = json.dumps(json.loads(json.dumps(rest, allow_nan=False)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _library_version() -> str:
    from .. import __version__

    return __version__


def write_file(path: str | os.PathLike, params: DRMMParams, *, kind: str = "params", metadata: dict | None = None,
               extra_meta: dict | None = None, extra_arrays: dict[str, np.ndarray] | None = None) -> Path:
    """Write a :data:`FORMAT` file: the parameters, then ``extra_arrays`` and ``extra_meta`` (a checkpoint's state).

    Raises
    ------
    TypeError
        ``metadata`` or ``extra_meta`` is not JSON-serialisable (nothing is written).
    ValueError
        ``path`` is empty or an existing folder; NaN or inf in the meta.
    """
    arrays = param_arrays(params)
    for name, a in (extra_arrays or {}).items():
        if name in arrays:
            raise ValueError(f"extra array {name!r} would overwrite a parameter array")
        arrays[name] = a
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "kind": kind, "network": params.net.to_dict(),
            "dtype": str(arrays["class_templates"].dtype), "drmm_ref": _library_version(),
            "metadata": metadata or {}, **(extra_meta or {})}
    try:
        json.dumps(meta["metadata"], allow_nan=False)  # refuse bad metadata before anything is written
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
    meta["checksum"] = array_checksum(arrays)
    meta["meta_checksum"] = meta_checksum(meta)
    save_npz_atomic(path, meta, arrays)
    return Path(path)


def read_file(path: str | os.PathLike, error: type[DRMMFileError], what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """``(meta, arrays)`` of a drmm_ref ``.npz``; raises ``error`` naming the file for anything unreadable.

    Checks only that the file is an ``.npz`` with a JSON ``__meta__`` dict; format, version and
    checksums are checked by :func:`verify`.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{path} is a folder, not a {what}")
    if not path.is_file():
        raise error(f"{path}: no such {what}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "__meta__" not in data.files:
                raise error(f"{path}: not a drmm_ref {what} (no __meta__ entry; is it another .npz?)")
            meta = json.loads(str(data["__meta__"]))
            arrays = {name: np.array(data[name]) for name in data.files if name != "__meta__"}
    except DRMMFileError:
        raise
    except Exception as exc:  # zip, npy-header and JSON parsers raise many types on damaged bytes
        raise error(f"{path}: unreadable or corrupted {what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict):
        raise error(f"{path}: not a drmm_ref {what} (its __meta__ is not a JSON object)")
    return meta, arrays


def kind_of(meta: dict) -> str:
    """``"params"`` or ``"checkpoint"``: what a file of a known format holds."""
    if meta.get("format") == LEGACY_CHECKPOINT_FORMAT:
        return "checkpoint"
    return meta.get("kind", "params") if meta.get("version") != 1 else "params"


def verify(path: Path, meta: dict, arrays: dict[str, np.ndarray], error: type[DRMMFileError]) -> str:
    """Check a known format's version and checksums; return the parameter arrays' name prefix.

    The caller has checked that ``meta["format"]`` is :data:`FORMAT` or :data:`LEGACY_CHECKPOINT_FORMAT`.
    """
    fmt, version = meta["format"], meta.get("version")
    readable = READABLE_VERSIONS if fmt == FORMAT else LEGACY_CHECKPOINT_VERSIONS
    if type(version) is not int or version not in readable:
        label = "format version" if fmt == FORMAT else "checkpoint version"
        raise error(f"{path}: {label} {version!r} is not supported (this library reads {fmt!r} versions "
                    f"{list(readable)}); upgrade drmm_ref")
    if array_checksum(arrays) != meta.get("checksum"):
        raise error(f"{path}: checksum mismatch: the file is corrupted or was edited")
    if version >= 2 and meta_checksum(meta) != meta.get("meta_checksum"):
        raise error(f"{path}: meta checksum mismatch: its description (epoch, history, configuration, network "
                    "or metadata) was edited or is corrupted")
    if fmt == FORMAT and kind_of(meta) not in ("params", "checkpoint"):
        raise error(f"{path}: unknown content kind {meta.get('kind')!r}")
    return _PREFIX[fmt]


def save_params(path: str | os.PathLike, params: DRMMParams, *, metadata: dict | None = None) -> Path:
    """Write ``params`` to ``path`` (``.npz``) atomically; return the path.

    Parameters
    ----------
    path : str or PathLike
        Target file; its folder is created if needed. A ``.npz`` suffix is not added for you.
    params : DRMMParams
    metadata : dict, optional
        JSON-serialisable extra information stored with the file (e.g. training step).

    Raises
    ------
    TypeError
        ``params`` is not a :class:`DRMMParams`, or ``metadata`` is not JSON-serialisable.
    ValueError
        ``path`` is empty or an existing folder.
    """
    if not isinstance(params, DRMMParams):
        raise TypeError(f"params must be DRMMParams, got {type(params).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    return write_file(path, params, metadata=metadata)


def load_params(path: str | os.PathLike, *, xp: Any = "numpy", device: Any = None,
                return_metadata: bool = False) -> DRMMParams | tuple[DRMMParams, dict]:
    """Read the parameters of a parameter file or of a training checkpoint, checking format, version and checksums.

    Everything that takes a model takes either file: a checkpoint (:func:`drmm_ref.io.save_checkpoint`,
    ``<run>/checkpoints/epoch-<k>.npz``, also those of the former ``drmm_ref.checkpoint`` format) is a
    parameter file plus the training state, which this function leaves aside.

    Parameters
    ----------
    path : str or PathLike
    xp, device :
        Namespace (module or name) and device to put the arrays on.
    return_metadata : bool, default False
        Also return the stored ``metadata`` dict; for a checkpoint it also holds the run's
        ``epoch`` and ``config`` (and ``mid_epoch_step`` for a mid-epoch checkpoint).

    Raises
    ------
    DRMMFileError
        Missing file, not an ``.npz`` archive, truncated or corrupted data (checksum mismatch),
        an edited description, another format, or a version newer than this library reads.
    """
    path = Path(path)
    meta, arrays = read_file(path, DRMMFileError, "parameter file")
    if meta.get("format") not in _PREFIX:
        raise DRMMFileError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r} (nor a drmm_ref checkpoint)")
    prefix = verify(path, meta, arrays, DRMMFileError)
    try:
        net = Network.from_dict(meta["network"])
        params = params_from_arrays(arrays, net, prefix, xp=xp, device=device)
    except Exception as exc:  # whatever an inconsistent file trips on, the file is named
        raise DRMMFileError(f"{path}: inconsistent parameter file ({type(exc).__name__}: {exc})") from None
    if not return_metadata:
        return params
    metadata = meta.get("metadata", {})
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    if kind_of(meta) == "checkpoint":
        metadata.setdefault("epoch", meta.get("epoch"))
        metadata.setdefault("config", meta.get("config"))
        if isinstance(meta.get("mid_epoch"), dict):
            metadata.setdefault("mid_epoch_step", meta["mid_epoch"].get("step"))
    return params, metadata
