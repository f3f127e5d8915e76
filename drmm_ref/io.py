"""Save and load DRMM parameters as ``.npz`` files: versioned, checksummed, written atomically.

File layout (format ``drmm_ref.params``, version :data:`FORMAT_VERSION`): an uncompressed NumPy
``.npz`` archive with the arrays ``filters_<l>``, ``biases_<l>`` (l = 1..L), ``class_templates``,
``class_biases``, ``class_prior``, ``switch_prior``, ``noise_variance`` (a 0-d float64) and
``__meta__``, a 0-d unicode array holding JSON: the format name and version, the network
description, the dtype, the library version, optional user metadata, and a SHA-256 checksum over
every array's name, dtype, shape and bytes (in sorted name order).

Guarantees: the round trip is bit-exact (arrays are saved in their own dtype, ``sigma^2`` as a
float64); a file is written to a temporary file in the target folder, flushed, fsynced and
renamed over the target, so a crash never leaves a half-written file under the final name;
loading never unpickles (``allow_pickle=False``) and raises :class:`DRMMFileError` (a
``ValueError``) naming the file and the problem for a missing, truncated, corrupted, foreign or
newer-version file.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from . import _backend
from ._files import array_checksum, save_npz_atomic
from .drmm.network import Network
from .drmm.params import DRMMParams

__all__ = ["FORMAT", "FORMAT_VERSION", "DRMMFileError", "save_params", "load_params"]

FORMAT = "drmm_ref.params"
FORMAT_VERSION = 1


class DRMMFileError(ValueError):
    """A parameter file cannot be read: missing, corrupted, foreign format or unsupported version."""


def _arrays(params: DRMMParams) -> dict[str, np.ndarray]:
    out = {}
    for l, (w, b) in enumerate(zip(params.filters, params.biases), start=1):
        out[f"filters_{l}"] = np.ascontiguousarray(_backend.to_numpy(w))
        out[f"biases_{l}"] = np.ascontiguousarray(_backend.to_numpy(b))
    for name in ("class_templates", "class_biases", "class_prior", "switch_prior"):
        out[name] = np.ascontiguousarray(_backend.to_numpy(getattr(params, name)))
    out["noise_variance"] = np.asarray(params.noise_variance, dtype=np.float64)
    return out


_checksum = array_checksum


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
    path = Path(path)
    arrays = _arrays(params)
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "network": params.net.to_dict(),
            "dtype": str(arrays["class_templates"].dtype), "checksum": _checksum(arrays),
            "drmm_ref": _library_version(), "metadata": metadata or {}}
    try:
        json.dumps(meta, allow_nan=False)  # refuse bad metadata before anything is written
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metadata must be JSON-serialisable: {exc}") from None
    save_npz_atomic(path, meta, arrays)
    return path


def _library_version() -> str:
    from . import __version__

    return __version__


def load_params(path: str | os.PathLike, *, xp: Any = "numpy", device: Any = None,
                return_metadata: bool = False) -> DRMMParams | tuple[DRMMParams, dict]:
    """Read parameters written by :func:`save_params`, checking format, version and checksum.

    Parameters
    ----------
    path : str or PathLike
    xp, device :
        Namespace (module or name) and device to put the arrays on.
    return_metadata : bool, default False
        Also return the stored ``metadata`` dict.

    Raises
    ------
    DRMMFileError
        Missing file, not an ``.npz`` archive, truncated or corrupted data (checksum mismatch),
        another format, or a version newer than this library reads.
    """
    path = Path(path)
    if path.is_dir():
        raise DRMMFileError(f"{path} is a folder, not a parameter file")
    if not path.is_file():
        raise DRMMFileError(f"{path}: no such parameter file")
    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            if "__meta__" not in files:
                raise DRMMFileError(f"{path}: not a drmm_ref parameter file (no __meta__ entry; is it another .npz?)")
            meta = json.loads(str(data["__meta__"]))
            arrays = {name: np.array(data[name]) for name in files if name != "__meta__"}
    except DRMMFileError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise DRMMFileError(f"{path}: unreadable or corrupted parameter file ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise DRMMFileError(f"{path}: format {found!r} is not {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise DRMMFileError(f"{path}: format version {version!r} is not supported "
                            f"(this library reads 1..{FORMAT_VERSION}); upgrade drmm_ref")
    if _checksum(arrays) != meta.get("checksum"):
        raise DRMMFileError(f"{path}: checksum mismatch: the file is corrupted or was edited")
    try:
        net = Network.from_dict(meta["network"])
        n_layers = net.L

        def put(a):
            return _backend.asarray(a, xp=xp, device=device)

        params = DRMMParams(
            net,
            tuple(put(arrays[f"filters_{l}"]) for l in range(1, n_layers + 1)),
            tuple(put(arrays[f"biases_{l}"]) for l in range(1, n_layers + 1)),
            put(arrays["class_templates"]), put(arrays["class_biases"]), put(arrays["class_prior"]),
            put(arrays["switch_prior"]), float(arrays["noise_variance"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DRMMFileError(f"{path}: inconsistent parameter file ({type(exc).__name__}: {exc})") from None
    return (params, meta.get("metadata", {})) if return_metadata else params
