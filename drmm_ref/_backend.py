"""Array namespace, device and host-copy handling: the one module that knows about backends.

Every other module of :mod:`drmm_ref` gets its namespace from :func:`get_namespace` and moves
data to the host with :func:`to_numpy`. CuPy is imported lazily, only when a caller asks for
``xp="cupy"``; importing :mod:`drmm_ref` never imports it (STYLE, "Arrays and backends").

Conventions
-----------
* A *namespace* is an Array API standard namespace as returned by
  :func:`array_api_compat.array_namespace` (``array_api_compat.numpy`` for NumPy arrays,
  ``array_api_compat.cupy`` for CuPy arrays, ``array_api_strict`` itself for strict arrays).
* Functions that take arrays infer the namespace from them; a keyword-only ``xp=None``
  overrides it. The override may be a module (``numpy``, ``cupy``, ``array_api_strict``), a
  compat namespace, or one of the names ``"numpy"``, ``"cupy"``, ``"array_api_strict"``.
* Random numbers are always drawn on the host with :func:`numpy.random.default_rng` and then
  moved to the target namespace and device, so a seed gives the same numbers on every backend.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.util
import os
import sys
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "get_namespace",
    "resolve_namespace",
    "namespace_name",
    "device_of",
    "check_same_device",
    "to_numpy",
    "asarray",
    "random_normal",
    "random_uniform",
    "random_integers",
    "host_rng",
    "is_floating",
    "is_integer",
    "keep_freed_host_memory",
    "backend_problem",
]

_NAMES = ("numpy", "cupy", "array_api_strict")


def resolve_namespace(xp: Any) -> Any:
    """Return the Array API namespace for a module, a compat namespace or a backend name.

    Parameters
    ----------
    xp : module or str
        ``numpy``, ``cupy``, ``array_api_strict`` (modules or their names), or a namespace
        already returned by :func:`get_namespace`.

    Raises
    ------
    ValueError
        If ``xp`` is a string naming no known backend.
    ImportError
        If the named backend is not installed (CuPy without a CUDA install, say).
    """
    if isinstance(xp, str):
        if xp not in _NAMES:
            raise ValueError(f"xp={xp!r} is not a known backend; use one of {_NAMES}")
        module = importlib.import_module(xp)
    else:
        module = xp
    # An array made by the module tells array_api_compat which namespace wraps it.
    try:
        probe = module.asarray(0.0)
    except Exception as exc:  # pragma: no cover - a module that cannot make arrays
        raise TypeError(f"xp={xp!r} is not an array namespace (it cannot make an array)") from exc
    return array_api_compat.array_namespace(probe)


def namespace_name(xp: Any) -> str:
    """Short name of a namespace: ``'numpy'``, ``'cupy'``, ``'array_api_strict'`` or its module name."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", repr(xp))


def get_namespace(*arrays: Any, xp: Any = None, names: tuple[str, ...] | None = None) -> Any:
    """Namespace of ``arrays`` (``None`` entries ignored), or the ``xp`` override.

    All arrays must come from one namespace and sit on one device.

    Parameters
    ----------
    *arrays : arrays or None
        The array arguments of the calling function.
    xp : module or str, optional
        Override. When given, every array must already belong to it.
    names : tuple of str, optional
        Argument names matching ``arrays``, used in error messages.

    Raises
    ------
    TypeError
        If an argument is not an array, or the arrays come from different namespaces, or an
        array does not belong to the override ``xp``.
    ValueError
        If the arrays sit on different devices.
    """
    labels = names if names is not None else tuple(f"argument {i}" for i in range(len(arrays)))
    present = [(label, a) for label, a in zip(labels, arrays) if a is not None]
    spaces = []
    for label, a in present:
        if not array_api_compat.is_array_api_obj(a):
            raise TypeError(f"{label} must be an array, got {type(a).__name__}")
        spaces.append((label, array_api_compat.array_namespace(a)))
    if xp is not None:
        target = resolve_namespace(xp)
    elif spaces:
        target = spaces[0][1]
    else:
        raise TypeError("no array arguments to infer the namespace from; pass xp=")
    for label, space in spaces:
        if space is not target:
            raise TypeError(
                f"{label} is a {namespace_name(space)} array but the computation uses "
                f"{namespace_name(target)}; move all arrays to one namespace (drmm_ref.to_numpy / xp.asarray)"
            )
    check_same_device(*[a for _, a in present], names=tuple(label for label, _ in present))
    return target


def device_of(x: Any) -> Any:
    """The device an array lives on (:func:`array_api_compat.device`)."""
    return array_api_compat.device(x)


def check_same_device(*arrays: Any, names: tuple[str, ...] | None = None) -> Any:
    """Return the common device of ``arrays``; raise ``ValueError`` naming the odd one out."""
    labels = names if names is not None else tuple(f"argument {i}" for i in range(len(arrays)))
    common = None
    first = None
    for label, a in zip(labels, arrays):
        if a is None:
            continue
        dev = device_of(a)
        if common is None:
            common, first = dev, label
        elif dev != common:
            raise ValueError(
                f"{label} is on device {dev} but {first} is on device {common}; "
                "move the arrays to one device first"
            )
    return common


def to_numpy(x: Any) -> np.ndarray:
    """Copy an array of any supported namespace to a host :class:`numpy.ndarray`.

    NumPy arrays are returned as they are (no copy); CuPy arrays are copied from the device;
    other Array API arrays go through DLPack.
    """
    if isinstance(x, np.ndarray):
        return x
    if np.isscalar(x):
        return np.asarray(x)
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_array_api_obj(x):
        try:
            return np.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError):
            return np.asarray(x)
    raise TypeError(f"x must be an array, got {type(x).__name__}")


def asarray(x: Any, *, xp: Any, dtype: Any = None, device: Any = None) -> Any:
    """Move host data (NumPy array, list, scalar) to namespace ``xp`` on ``device``."""
    space = resolve_namespace(xp)
    host = to_numpy(x) if array_api_compat.is_array_api_obj(x) else np.asarray(x)
    if array_api_compat.is_cupy_namespace(space) and device is not None:
        with device:
            return space.asarray(host, dtype=dtype)
    if array_api_compat.is_cupy_namespace(space):
        return space.asarray(host, dtype=dtype)
    return space.asarray(host, dtype=dtype, device=device)


def host_rng(seed: Any) -> np.random.Generator:
    """``numpy.random.default_rng(seed)`` (a Generator passes through): randomness lives on the host."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, a numpy SeedSequence or Generator, got {type(seed).__name__}")


def _float_dtype_name(dtype: Any) -> str:
    name = str(dtype) if not isinstance(dtype, str) else dtype
    for candidate in ("float64", "float32"):
        if candidate in name:
            return candidate
    raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")


def random_normal(shape, seed=None, *, dtype="float64", xp="numpy", device=None, scale=1.0):
    """Standard normal samples times ``scale``, drawn on the host and moved to ``xp``/``device``."""
    host = host_rng(seed).standard_normal(size=tuple(shape)) * scale
    return asarray(host.astype(_float_dtype_name(dtype)), xp=xp, device=device)


def random_uniform(shape, seed=None, *, low=0.0, high=1.0, dtype="float64", xp="numpy", device=None):
    """Uniform samples on ``[low, high)``, drawn on the host and moved to ``xp``/``device``."""
    host = host_rng(seed).uniform(low, high, size=tuple(shape))
    return asarray(host.astype(_float_dtype_name(dtype)), xp=xp, device=device)


def random_integers(shape, high, seed=None, *, low=0, xp="numpy", device=None):
    """Integers on ``[low, high)`` (int64), drawn on the host and moved to ``xp``/``device``."""
    host = host_rng(seed).integers(low, high, size=tuple(shape), dtype=np.int64)
    return asarray(host, xp=xp, device=device)


def is_floating(x: Any, xp: Any) -> bool:
    """True when ``x`` has a real floating dtype."""
    return xp.isdtype(x.dtype, "real floating")


def is_integer(x: Any, xp: Any) -> bool:
    """True when ``x`` has an integer dtype (signed or unsigned)."""
    return xp.isdtype(x.dtype, "integral")


_ALLOCATOR_TUNED: bool | None = None


def keep_freed_host_memory() -> bool:
    """Let glibc keep freed host buffers for reuse instead of returning them to the kernel (Linux only).

    A training step allocates and frees arrays of tens of megabytes (im2col matrices, unpooled
    maps). By default glibc serves those with fresh ``mmap`` pages and unmaps them on ``free``, so
    every step pays page faults and the kernel's zeroing of every page again; measured on the
    2-core development machine, that is 15-25% of a conv-small EG step's CPU time. Raising
    ``M_MMAP_THRESHOLD`` to its maximum (32 MiB) and ``M_TRIM_THRESHOLD`` / ``M_TOP_PAD`` keeps
    them in the heap. Process-wide and idempotent; the trainer, the command line and the benchmarks
    call it, importing :mod:`drmm_ref` does not. ``DRMM_REF_MALLOPT=0`` turns it off. Results are
    unchanged (only where buffers come from). Returns whether the settings were applied.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is not None:
        return _ALLOCATOR_TUNED
    _ALLOCATOR_TUNED = False
    if not sys.platform.startswith("linux") or os.environ.get("DRMM_REF_MALLOPT", "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30) and mallopt(m_top_pad, 64 << 20)
    _ALLOCATOR_TUNED = bool(ok)
    return _ALLOCATOR_TUNED


def backend_problem(name: str) -> str | None:
    """Why the array backend ``name`` cannot be used here, or None when it can.

    Checked before any data are loaded: ``cupy`` needs the package and a CUDA device;
    ``array_api_strict`` needs the package.
    """
    if name not in ("numpy", "array_api_strict", "cupy"):
        return f"unknown backend {name!r}; choose numpy, array_api_strict or cupy"
    if importlib.util.find_spec(name) is None:
        hint = " (pip install -e '.[gpu]', see README 'Running on a GPU')" if name == "cupy" else ""
        return f"backend {name!r} is not installed{hint}"
    if name == "cupy":
        try:
            import cupy

            if not cupy.cuda.is_available():
                return "backend 'cupy' is installed but no CUDA device is available"
        except Exception as exc:  # a broken CUDA install is a reason, not a crash
            return f"backend 'cupy' is installed but unusable ({type(exc).__name__}: {exc})"
    return None
