"""Atomic file writes and array checksums, shared by every module that writes files.

A file is written to a temporary name in its target folder, flushed and fsync'ed, made readable
(0644), then renamed over the target in one step: a reader sees the old file or the new one, never a
partial write, and an interrupted write leaves nothing behind (a process killed by SIGKILL in the
middle of a write can leave its temporary file, ``.<name>.<random>.tmp``: the trainer removes those
of its own folder, under its lock, before it writes anything: :func:`remove_temporaries`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "save_npz_atomic", "array_checksum",
           "remove_temporaries", "TEMP_SUFFIX"]

#: Suffix of the temporary files of :func:`atomic_write` (their names start with a dot).
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, then rename it to ``path`` atomically.

    Raises
    ------
    ValueError
        ``path`` is empty or names an existing folder.
    """
    if str(path) == "":
        raise ValueError("path is empty; give a file path")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a file path inside it (e.g. {path / 'params.npz'})")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_json(path: str | os.PathLike, payload: Any, *, indent: int = 2) -> Path:
    """Write JSON (NaN and inf refused, before anything is written) to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(payload, indent=indent, allow_nan=False) + "\n")


def save_npz_atomic(path: str | os.PathLike, meta: dict, arrays: dict[str, np.ndarray]) -> Path:
    """An ``.npz`` holding ``arrays`` and the JSON ``meta`` (entry ``__meta__``), written atomically."""
    text = json.dumps(meta, allow_nan=False)
    return atomic_write(path, lambda fh: np.savez(fh, __meta__=np.asarray(text), **arrays))


def array_checksum(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the arrays in name order, each with its name, dtype and shape.

    The shape is the array's own (``np.asarray``, not ``np.ascontiguousarray``, which would turn a
    0-d array into shape ``(1,)`` and change the checksum of files already written); ``tobytes``
    gives the C-order bytes whatever the memory layout.
    """
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` (not recursive); return them.

    Only names of the form ``.<name>.<random>.tmp`` are touched. Call it only while holding the
    folder (the trainer's lock): another writer's temporary file is in use.
    """
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
