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

from . import _checks
from . import batchlast as BL

__all__ = [
    "maxpool2d",
    "unpool2d",
    "select2d",
    "maxpool2d_vjp",
    "unpool2d_vjp_values",
    "select2d_vjp",
]


def _trailing(x: Any, xp: Any) -> Any:
    """NCHW -> ``(N, C, H, W, 1)`` view, the ``(..., H, W, batch)`` shape of the :mod:`.batchlast` kernels."""
    return xp.reshape(x, tuple(x.shape) + (1,))


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
    values, positions = BL.maxpool_bl(_trailing(x, xp), p, xp)
    return values[..., 0], positions[..., 0]


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
    return BL.unpool_bl(_trailing(values, xp), _trailing(positions, xp), p, xp)[..., 0]


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
        raise ValueError(f"positions has shape {tuple(positions.shape)} but x pooled by {p} "
                         f"has shape {(n, c, h // p, w // p)}")
    return BL.select_bl(_trailing(x, xp), _trailing(positions, xp), p, xp)[..., 0]


def maxpool2d_vjp(grad_out: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """VJP of :func:`maxpool2d` in ``x``: the cotangent goes to each window's first maximum."""
    return unpool2d(grad_out, positions, pool, xp=xp)


def unpool2d_vjp_values(grad_out: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """VJP of :func:`unpool2d` in ``values``: ``select2d(grad_out, positions, pool)``."""
    return select2d(grad_out, positions, pool, xp=xp)


def select2d_vjp(grad_out: Any, positions: Any, pool: int, *, xp: Any = None) -> Any:
    """VJP of :func:`select2d` in ``x``: ``unpool2d(grad_out, positions, pool)``."""
    return unpool2d(grad_out, positions, pool, xp=xp)
