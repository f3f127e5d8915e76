"""Inner products, the adjoint-identity error measure and the tolerances of exact identities.

SPEC §0: ``<a, b>`` sums the elementwise product over all axes but the batch axis; the relative
error of an adjoint identity is

.. math:: \\frac{|\\langle Ax, y\\rangle - \\langle x, A^T y\\rangle|}{\\|Ax\\|\\,\\|y\\| + \\|x\\|\\,\\|A^T y\\|}

Tolerances are keyed by dtype and shared by the tests and the claim scripts, so an identity is
held to one standard everywhere.
"""

from __future__ import annotations

from typing import Any

from ._backend import get_namespace, to_numpy

__all__ = ["inner", "adjoint_relative_error", "identity_tolerance", "FD_RTOL", "FD_ATOL", "dtype_name"]

#: Tolerances for exact identities (adjoints, brute force vs. closed form), by dtype.
_IDENTITY_TOL = {"float64": 1e-12, "float32": 1e-5}
#: Central finite differences in float64 (SPEC §0).
FD_RTOL, FD_ATOL = 1e-6, 1e-8


def dtype_name(dtype: Any) -> str:
    """``'float32'`` or ``'float64'`` for a dtype of any namespace."""
    text = str(dtype)
    for name in ("float64", "float32"):
        if name in text:
            return name
    raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")


def identity_tolerance(dtype: Any) -> float:
    """Relative tolerance of an exact identity evaluated in ``dtype`` (float64 1e-12, float32 1e-5)."""
    return _IDENTITY_TOL[dtype_name(dtype)]


def inner(a: Any, b: Any, *, xp: Any = None) -> Any:
    """Per-example inner product: sum of ``a * b`` over every axis but the first (batch) axis."""
    xp = get_namespace(a, b, xp=xp, names=("a", "b"))
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"a has shape {tuple(a.shape)} but b has shape {tuple(b.shape)}")
    if a.ndim < 2:
        raise ValueError(f"a must have a batch axis and at least one more, got shape {tuple(a.shape)}")
    return xp.sum(a * b, axis=tuple(range(1, a.ndim)))


def adjoint_relative_error(ax: Any, y: Any, x: Any, aty: Any) -> float:
    """SPEC §0 relative error of ``<Ax, y> = <x, A^T y>``, summed over the batch, in float64 on the host."""
    import numpy as np

    ax, y, x, aty = (to_numpy(v).astype(np.float64) for v in (ax, y, x, aty))
    lhs, rhs = float(np.sum(ax * y)), float(np.sum(x * aty))
    scale = np.linalg.norm(ax) * np.linalg.norm(y) + np.linalg.norm(x) * np.linalg.norm(aty)
    return abs(lhs - rhs) / scale if scale > 0 else abs(lhs - rhs)
