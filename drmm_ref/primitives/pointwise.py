"""ReLU, stable log-sum-exp and softmax, and their VJPs.

SPEC §0: ``relu(u) = max(u, 0)`` with the kink convention ``relu'(0) = 0``. In the rendering
model ReLU is the max-marginal of the on/off switch ``a`` (SPEC §1, R1).

``logsumexp`` subtracts the maximum before exponentiating, so it is exact for very large or
very negative inputs (float32 included) and returns ``-inf`` (not NaN) for an all ``-inf`` slice.
"""

from __future__ import annotations

from typing import Any

from .._backend import device_of
from . import _checks

__all__ = ["relu", "relu_vjp", "logsumexp", "logsumexp_vjp", "softmax", "softmax_vjp"]


def relu(u: Any, *, xp: Any = None) -> Any:
    """Elementwise ``max(u, 0)``; same namespace, device, dtype and shape as ``u``."""
    xp = _checks.namespace(u, names=("u",), xp=xp)
    _checks.float_array(u, "u", xp)
    return xp.maximum(u, xp.zeros((), dtype=u.dtype, device=device_of(u)))


def relu_vjp(grad_out: Any, u: Any, *, xp: Any = None) -> Any:
    """VJP of :func:`relu` in ``u``: ``grad_out`` where ``u > 0``, else 0 (kink convention at 0)."""
    xp = _checks.namespace(grad_out, u, names=("grad_out", "u"), xp=xp)
    _checks.float_array(grad_out, "grad_out", xp)
    _checks.float_array(u, "u", xp)
    if tuple(grad_out.shape) != tuple(u.shape):
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but u has shape {tuple(u.shape)}")
    return xp.where(u > 0, grad_out, xp.zeros((), dtype=grad_out.dtype, device=device_of(grad_out)))


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes:
        raise ValueError("axis must name at least one axis")
    norm = []
    for a in axes:
        if not isinstance(a, int) or not -ndim <= a < ndim:
            raise ValueError(f"axis {a!r} is out of range for an array of rank {ndim}")
        norm.append(a % ndim)
    if len(set(norm)) != len(norm):
        raise ValueError(f"axis {axis!r} repeats an axis")
    return tuple(sorted(norm))


def logsumexp(x: Any, axis: Any = -1, *, keepdims: bool = False, xp: Any = None) -> Any:
    """Stable :math:`\\log \\sum \\exp x` over ``axis`` (an int or a tuple of ints).

    .. math:: \\mathrm{lse}(x) = m + \\log \\sum_i \\exp(x_i - m), \\quad m = \\max_i x_i

    Slices that are entirely ``-inf`` give ``-inf``, and so does a reduction over an axis of size
    0 (the sum of no terms is 0, and ``log 0 = -inf``), as in ``scipy.special.logsumexp``.
    """
    xp = _checks.namespace(x, names=("x",), xp=xp)
    _checks.float_array(x, "x", xp)
    axes = _axes(axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):  # an empty sum: NumPy's max would raise on it
        kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        out = xp.full(kept, -float("inf"), dtype=x.dtype, device=device_of(x))
        return out if keepdims else xp.squeeze(out, axis=axes)
    m = xp.max(x, axis=axes, keepdims=True)
    zero = xp.zeros((), dtype=x.dtype, device=device_of(x))
    m = xp.where(xp.isfinite(m), m, zero)  # all -inf slice: shift by 0, log(0) = -inf below
    total = xp.sum(xp.exp(x - m), axis=axes, keepdims=True)
    one = xp.ones((), dtype=x.dtype, device=device_of(x))
    neg_inf = xp.full((), -float("inf"), dtype=x.dtype, device=device_of(x))
    out = xp.where(total > 0, xp.log(xp.where(total > 0, total, one)), neg_inf) + m
    return out if keepdims else xp.squeeze(out, axis=axes)


def softmax(x: Any, axis: Any = -1, *, xp: Any = None) -> Any:
    """Stable softmax over ``axis``: ``exp(x - m) / sum exp(x - m)`` with ``m = max x``; sums to one over ``axis``.

    Normalising by the sum (rather than computing ``exp(x - logsumexp(x))``) keeps the sum at one
    to rounding even when ``x`` is so large that ``logsumexp(x)`` rounds to ``max x``: scores
    ``[1e12, 1e12]`` in float32 gave ``[1, 1]`` that way.
    """
    xp = _checks.namespace(x, names=("x",), xp=xp)
    _checks.float_array(x, "x", xp)
    axes = _axes(axis, x.ndim)
    if any(x.shape[a] == 0 for a in axes):
        return x + 0  # an empty axis: an empty result of the same shape
    m = xp.max(x, axis=axes, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros((), dtype=x.dtype, device=device_of(x)))
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axes, keepdims=True)


def logsumexp_vjp(grad_out: Any, x: Any, axis: Any = -1, *, keepdims: bool = False, xp: Any = None) -> Any:
    """VJP of :func:`logsumexp` in ``x``: ``grad_out * softmax(x)`` broadcast over ``axis``."""
    xp = _checks.namespace(grad_out, x, names=("grad_out", "x"), xp=xp)
    _checks.float_array(grad_out, "grad_out", xp)
    axes = _axes(axis, x.ndim)
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    g = xp.reshape(grad_out, kept)
    return g * softmax(x, axes, xp=xp)


def softmax_vjp(grad_out: Any, x: Any, axis: Any = -1, *, xp: Any = None) -> Any:
    """VJP of :func:`softmax` in ``x``: ``s * (grad_out - sum(grad_out * s))`` with ``s = softmax(x)``."""
    xp = _checks.namespace(grad_out, x, names=("grad_out", "x"), xp=xp)
    _checks.float_array(grad_out, "grad_out", xp)
    if tuple(grad_out.shape) != tuple(x.shape):
        raise ValueError(f"grad_out has shape {tuple(grad_out.shape)} but x has shape {tuple(x.shape)}")
    axes = _axes(axis, x.ndim)
    s = softmax(x, axes, xp=xp)
    return s * (grad_out - xp.sum(grad_out * s, axis=axes, keepdims=True))
