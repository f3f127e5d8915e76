"""Non-overlapping max-pooling, unpooling (its adjoint selection), and their VJPs.

SPEC §0. ``maxpool2d(x, p)`` splits each channel into ``p x p`` windows with stride ``p`` (the
side must be divisible by ``p``) and returns, per window, the maximum and the row-major position
``t in {0, ..., p*p - 1}`` of its **first** maximum. ``unpool2d(v, t, p)`` writes each value at its
position and zeros elsewhere; it is the adjoint of ``select2d(x, t, p)`` ("take the entry at t"):

.. math:: \\langle \\mathrm{select2d}(x, t), v \\rangle = \\langle x, \\mathrm{unpool2d}(v, t) \\rangle

The max-pool VJP routes each window's cotangent to its first maximum, i.e. it is
``unpool2d(grad_out, positions, p)`` (a convention at ties, SPEC §0).

In the DRMM (SPEC §2) the positions are the translation latents ``t`` of each unit, and
``unpool2d`` is the first half of a layer's rendering operator.
"""

from __future__ import annotations

from typing import Any

from .._backend import device_of
from . import _checks

__all__ = [
    "maxpool2d",
    "unpool2d",
    "select2d",
    "maxpool2d_vjp",
    "unpool2d_vjp_values",
    "select2d_vjp",
]


def _check_divisible(x: Any, p: int, name: str) -> None:
    h, w = x.shape[2], x.shape[3]
    if h % p or w % p:
        raise ValueError(
            f"pool size {p} does not divide the spatial side {h}x{w} of {name}; "
            "change the pool size or the padding so the side is a multiple of it"
        )


def _check_positions(positions: Any, p: int, xp: Any, name: str = "positions") -> None:
    _checks.int_array(positions, name, xp, ndim=4)
    if positions.shape[0] and (bool(xp.any(positions < 0)) or bool(xp.any(positions >= p * p))):
        raise ValueError(f"{name} must lie in [0, {p * p - 1}] for pool size {p}")


def maxpool2d(x: Any, pool: int, *, xp: Any = None) -> tuple[Any, Any]:
    """Max over non-overlapping ``pool x pool`` windows, with the position of the first maximum.

    Parameters
    ----------
    x : array of shape (N, C, H, W)
        Real floating; ``H`` and ``W`` divisible by ``pool``.
    pool : int
        Window side ``p`` (stride ``p``). ``pool=1`` returns ``x`` and zero positions.

    Returns
    -------
    values : array of shape (N, C, H/p, W/p)
        Window maxima, same namespace, device and dtype as ``x``.
    positions : array of shape (N, C, H/p, W/p), int64
        Row-major index ``i*p + j`` of the first maximum in each window.
    """
    xp = _checks.namespace(x, names=("x",), xp=xp)
    _checks.float_array(x, "x", xp, ndim=4)
    p = _checks.pos_int(pool, "pool")
    _check_divisible(x, p, "x")
    # Running maximum over the p*p strided sub-grids, in row-major window order; a strict ">"
    # keeps the first maximum at ties. (Cheaper than argmax over a permuted copy of the windows.)
    values = x[:, :, 0::p, 0::p]
    positions = xp.zeros(values.shape, dtype=xp.int64, device=device_of(x))
    for slot in range(1, p * p):
        i, j = divmod(slot, p)
        candidate = x[:, :, i::p, j::p]
        better = candidate > values
        values = xp.where(better, candidate, values)
        positions = xp.where(better, xp.asarray(slot, dtype=xp.int64, device=device_of(x)), positions)
    return values, positions


def unpool2d(values: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """Place each value at its window position, zeros elsewhere (adjoint of :func:`select2d`).

    Parameters
    ----------
    values : array of shape (N, C, Hp, Wp)
        Real floating.
    positions : integer array of shape (N, C, Hp, Wp)
        Row-major positions in ``[0, pool*pool)``.
    pool : int
        Window side ``p``.

    Returns
    -------
    array of shape (N, C, Hp*p, Wp*p)
    """
    xp = _checks.namespace(values, positions, names=("values", "positions"), xp=xp)
    _checks.float_array(values, "values", xp, ndim=4)
    p = _checks.pos_int(pool, "pool")
    _check_positions(positions, p, xp)
    if tuple(positions.shape) != tuple(values.shape):
        raise ValueError(f"positions has shape {tuple(positions.shape)} but values has shape {tuple(values.shape)}")
    n, c, hp, wp = values.shape
    zero = xp.zeros((), dtype=values.dtype, device=device_of(values))
    out = xp.zeros((n, c, hp * p, wp * p), dtype=values.dtype, device=device_of(values))
    for slot in range(p * p):
        i, j = divmod(slot, p)
        out[:, :, i::p, j::p] = xp.where(positions == slot, values, zero)
    return out


def select2d(x: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """Take, in every ``pool x pool`` window of ``x``, the entry at ``positions``.

    ``maxpool2d(x, p)`` equals ``select2d(x, positions, p)`` with its own positions. The DRMM
    uses it for the switches, ``a = [select_t(u) > 0]`` (SPEC §2).

    Parameters
    ----------
    x : array of shape (N, C, H, W)
    positions : integer array of shape (N, C, H/p, W/p)
    pool : int

    Returns
    -------
    array of shape (N, C, H/p, W/p)
    """
    xp = _checks.namespace(x, positions, names=("x", "positions"), xp=xp)
    _checks.float_array(x, "x", xp, ndim=4)
    p = _checks.pos_int(pool, "pool")
    _check_divisible(x, p, "x")
    _check_positions(positions, p, xp)
    n, c, h, w = x.shape
    if tuple(positions.shape) != (n, c, h // p, w // p):
        raise ValueError(f"positions has shape {tuple(positions.shape)} but x pooled by {p} has shape {(n, c, h // p, w // p)}")
    out = xp.zeros((n, c, h // p, w // p), dtype=x.dtype, device=device_of(x))
    for slot in range(p * p):
        i, j = divmod(slot, p)
        out = xp.where(positions == slot, x[:, :, i::p, j::p], out)
    return out


def maxpool2d_vjp(grad_out: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """VJP of :func:`maxpool2d` in ``x``: the cotangent goes to each window's first maximum."""
    return unpool2d(grad_out, positions, pool, xp=xp)


def unpool2d_vjp_values(grad_out: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """VJP of :func:`unpool2d` in ``values``: ``select2d(grad_out, positions, pool)``."""
    return select2d(grad_out, positions, pool, xp=xp)


def select2d_vjp(grad_out: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """VJP of :func:`select2d` in ``x``: ``unpool2d(grad_out, positions, pool)``."""
    return unpool2d(grad_out, positions, pool, xp=xp)
