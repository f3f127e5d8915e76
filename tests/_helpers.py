"""Test helpers: host copies, dtype-keyed closeness, central finite differences."""

from __future__ import annotations

import numpy as np

from drmm_ref import to_numpy
from drmm_ref.numerics import FD_ATOL, FD_RTOL, dtype_name, identity_tolerance


def host(x) -> np.ndarray:
    return np.asarray(to_numpy(x))


def assert_identity_close(actual, expected, *, scale=None, err_msg=""):
    """Exact identity up to rounding: ``|a - e| <= tol * max(1, scale)`` with the dtype's identity tolerance."""
    a, e = host(actual), host(expected)
    assert a.shape == e.shape, f"shape {a.shape} != {e.shape}. {err_msg}"
    tol = identity_tolerance(a.dtype)
    s = scale if scale is not None else max(1.0, float(np.max(np.abs(e))) if e.size else 1.0)
    err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
    assert err <= tol * s * 10, f"max abs error {err:.3e} > {tol * s * 10:.3e} ({dtype_name(a.dtype)}). {err_msg}"


def central_fd_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Gradient of a scalar function of a float64 host array by central differences, entry by entry."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = float(f(x))
        flat[i] = old - eps
        fm = float(f(x))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def assert_fd_close(analytic, numeric, err_msg=""):
    """Finite-difference comparison with the project's float64 tolerances (rtol 1e-6, atol 1e-8)."""
    np.testing.assert_allclose(host(analytic), numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=err_msg)


def assert_same_array_kind(out, like, xp):
    """Output keeps the namespace, device and dtype of ``like``."""
    from drmm_ref._backend import device_of, get_namespace

    assert get_namespace(out) is xp
    assert device_of(out) == device_of(like)
    assert out.dtype == like.dtype
