"""The exact block step on RC at fixed latents, by CGLS (SPEC §3, "our choice").

For fixed latents and classes the reconstruction ``x_hat`` is linear in any one block
``B in {W^(1), ..., W^(L), mu}``: ``x_hat = A_B theta_B``. The block step minimises

.. math::

    \\mathrm{RC}_B(\\theta) + \\tfrac{\\lambda}{2} \\|\\theta - \\theta_{old}\\|^2
    = \\tfrac{1}{2ND} \\|I - A_B \\theta\\|^2 + \\tfrac{\\lambda}{2} \\|\\theta - \\theta_{old}\\|^2

by CGLS (conjugate gradients on the normal equations, never formed) in ``delta = theta - theta_old``,
warm-started at the current parameters (``delta = 0``), at most ``k_CG`` iterations. ``A_B`` and
its adjoint are matrix-free chains of the primitives:

* ``W^(l)``: ``A theta = Lambda^(1) ... Lambda^(l-1) conv2d_transpose(v^(l), theta, q_l)`` with the
  fixed ``v^(l) = unpool2d(a^(l) z^(l), t^(l))``; the adjoint carries the image cotangent up through
  ``a^(m) select_t(conv2d(., W^(m)))``, m = 1..l-1, then takes ``conv2d_transpose_vjp_weight`` against ``v^(l)``;
* ``mu``: ``A theta = Lambda^(1) ... Lambda^(L) theta_{c_n}``; the adjoint sums the level-L cotangents per class.

The CG vectors (iterate, residual, direction) are kept and accumulated in float64 whatever the
parameters' dtype; the operator itself runs in the parameters' dtype. With ``lambda = 0`` the first
iterate is the exact line search along ``-grad RC_B``, and every further iterate has a residual no
larger (CGLS minimises ``||I - A theta||`` over nested Krylov spaces), so the step never does worse
than any gradient step on that block, and never raises RC at fixed latents.

**Which data (our choice): damped mini-batch.** :func:`block_step` solves the block problem on the
batch it is given (it could be given the whole set, but rendering 50,000 images per CG iteration
is out of reach on a CPU); the trainer applies it per mini-batch with damping,
``theta <- theta_old + eta (theta* - theta_old)``, ``eta in (0, 1]``. Because ``RC_B`` is a convex
quadratic, the damped point still has batch RC no higher than ``theta_old``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend
from .. import primitives as P
from ..numerics import dtype_name
from ..primitives._checks import int_at_least
from ._checks import finite_nonnegative
from ..drmm import DRMMParams, Rendering, render_layer
from ..drmm.params import template_maps

__all__ = ["BlockOperator", "block_operator", "BlockStepInfo", "block_step", "block_names"]


def block_names(L: int) -> tuple[str, ...]:
    """Blocks the exact step can update: ``filters_1 .. filters_L`` and ``class_templates``."""
    return tuple(f"filters_{l}" for l in range(1, L + 1)) + ("class_templates",)


@dataclasses.dataclass(frozen=True)
class BlockOperator:
    """The linear map ``theta_B -> x_hat`` at fixed latents and classes, and its adjoint.

    ``apply(theta)`` returns images (N, C_0, H_0, W_0); ``adjoint(g)`` returns an array shaped like
    the block. Both run in the parameters' dtype.
    """

    block: str
    shape: tuple[int, ...]
    apply: Any
    adjoint: Any


def _relu_mask(rendering: Rendering, level: int, xp: Any) -> Any:
    """The fixed ReLU mask ``[z^(level) > 0]`` of a ``relu_topdown`` rendering's level 1..L-1 (None otherwise)."""
    if not rendering.relu_topdown or not 1 <= level < len(rendering.renderings) - 1:
        return None
    z = rendering.renderings[level]
    return xp.astype(z > 0, z.dtype)


def _lower_apply(params: DRMMParams, rendering: Rendering, z: Any, level: int, xp: Any) -> Any:
    """``Lambda^(1) ... Lambda^(level) z`` for ``z`` on level ``level``'s grid.

    For a ``relu_topdown`` rendering the ReLU masks of its levels (1..level, each applied to the map
    of that level, ``z`` included) are held fixed, like the latents (SPEC §5): the map stays linear.
    """
    net, lat = params.net, rendering.latents
    for m in range(level, 0, -1):
        mask = _relu_mask(rendering, m, xp)
        if mask is not None:
            z = z * mask
        ly = net.layers[m - 1]
        z = render_layer(z, lat.positions[m - 1], lat.switches[m - 1], params.filters[m - 1], ly.padding, ly.pool,
                         xp=xp)
    return z


def _lower_adjoint(params: DRMMParams, rendering: Rendering, g: Any, level: int, xp: Any) -> Any:
    """Adjoint of :func:`_lower_apply`: an image cotangent carried up to level ``level``."""
    net, lat = params.net, rendering.latents
    zero = xp.zeros((), dtype=g.dtype, device=_backend.device_of(g))
    for m in range(1, level + 1):
        ly = net.layers[m - 1]
        g = P.conv2d(g, params.filters[m - 1], ly.padding, xp=xp)
        if ly.pool > 1:
            g = P.select2d(g, lat.positions[m - 1], ly.pool, xp=xp)
        g = xp.where(lat.switches[m - 1], g, zero)
        mask = _relu_mask(rendering, m, xp)
        if mask is not None:
            g = g * mask
    return g


def block_operator(params: DRMMParams, rendering: Rendering, block: str) -> BlockOperator:
    """The operator ``A_B`` of block ``block`` at the latents and classes of ``rendering``.

    Parameters
    ----------
    params : DRMMParams
        Parameters of every *other* block (the block's own value is not used).
    rendering : Rendering
        ``render(params, classes, latents)`` (its partial renderings above the block are reused).
    block : str
        ``"filters_<l>"`` (1-based) or ``"class_templates"``.
    """
    xp, net = params.xp, params.net
    if block not in block_names(net.L):
        raise ValueError(f"block must be one of {block_names(net.L)}, got {block!r}")
    if block == "class_templates":
        classes = rendering.classes
        k = net.n_classes
        onehot = xp.astype(xp.expand_dims(classes, axis=1) == xp.arange(k, dtype=classes.dtype,
                                                                         device=params.device), params.dtype)
        full_shape = (k,) + tuple(net.shapes[net.L])

        def apply(theta):
            mu = template_maps(params.replace(class_templates=theta))
            return _lower_apply(params, rendering, xp.take(mu, classes, axis=0), net.L, xp)

        def adjoint(g):
            gl = _lower_adjoint(params, rendering, g, net.L, xp)
            n = gl.shape[0]
            flat = xp.matmul(xp.matrix_transpose(onehot), xp.reshape(gl, (n, math.prod(gl.shape[1:]))))
            full = xp.reshape(flat, full_shape)
            return xp.sum(full, axis=(2, 3), keepdims=True) if net.constant_templates else full

        return BlockOperator(block, tuple(net.template_shape), apply, adjoint)

    l = int(block.split("_")[1])
    ly = net.layers[l - 1]
    lat = rendering.latents
    zero = xp.zeros((), dtype=params.dtype, device=params.device)
    v = xp.where(lat.switches[l - 1], rendering.renderings[l], zero)
    if ly.pool > 1:
        v = P.unpool2d(v, lat.positions[l - 1], ly.pool, xp=xp)

    def apply(theta):
        return _lower_apply(params, rendering, P.conv2d_transpose(v, theta, ly.padding, xp=xp), l - 1, xp)

    def adjoint(g):
        return P.conv2d_transpose_vjp_weight(_lower_adjoint(params, rendering, g, l - 1, xp), v, ly.padding, xp=xp)

    return BlockOperator(block, tuple(net.filter_shapes[l - 1]), apply, adjoint)


@dataclasses.dataclass(frozen=True)
class BlockStepInfo:
    """Trace of one block step: RC (per-pixel mean, at fixed latents) before and after each iterate.

    Attributes
    ----------
    block : str
    rc_before : float
        RC at the old value of the block.
    rc_iterates : tuple of float
        RC after each accepted CGLS iterate (from the CG recurrence, accumulated in float64);
        non-increasing.
    iterations : int
        Accepted iterates (``<= k_cg``; fewer when CGLS converged or stopped on rounding noise).
    rc_final : float or None
        RC recomputed from the returned block (one more rendering, in the working dtype); never
        above ``rc_before``.
    stopped : str
        Why the loop ended: ``"k_cg"``, ``"converged"`` (the normal-equation residual reached the
        tolerance or the rounding level), ``"no_descent"`` (an iterate would have raised the
        objective: rounding noise, rejected), or ``"rejected"`` (the recomputed RC was above
        ``rc_before``; the old block is returned).
    """

    block: str
    rc_before: float
    rc_iterates: tuple[float, ...]
    iterations: int
    rc_final: float | None = None
    stopped: str = "k_cg"

    @property
    def rc_after(self) -> float:
        if self.rc_final is not None:
            return self.rc_final
        return self.rc_iterates[-1] if self.rc_iterates else self.rc_before


#: Rounding level of the CG quantities, in units of the working dtype's machine epsilon: once the
#: normal-equation residual ``||A^T r||`` is below ``_NOISE_ULPS * eps * ||A|| * ||r||`` it is
#: rounding noise of the operator, and a further iterate would divide noise by noise.
_NOISE_ULPS = 64.0


def block_step(params: DRMMParams, images: Any, rendering: Rendering, block: str, *, k_cg: int = 10,
               damping: float = 0.0, tol: float = 0.0) -> tuple[Any, BlockStepInfo]:
    """Minimise ``RC_B + (damping/2) ||theta - theta_old||^2`` over one block by CGLS at fixed latents.

    Parameters
    ----------
    params : DRMMParams
        Current parameters; ``theta_old`` is their value of the block.
    images : array of shape (N, C_0, H_0, W_0)
        The images whose reconstruction error is minimised.
    rendering : Rendering
        ``render(params, classes, latents)`` for those images (fixes latents and classes).
    block : str
        ``"filters_<l>"`` or ``"class_templates"``.
    k_cg : int, default 10
        Maximum number of CGLS iterations (``k_CG``; each costs one apply and one adjoint).
    damping : float, default 0
        ``lambda >= 0``; 0 makes the first iterate the exact line search along ``-grad RC_B``.
    tol : float, default 0
        Also stop when the squared norm of the normal-equation residual falls to ``tol`` times its
        first value. Whatever ``tol``, the loop stops once that residual is at the rounding level
        of the operator (below ``64 eps ||A|| ||r||``, ``eps`` of the working dtype, ``||A||``
        estimated from the iterates' Rayleigh quotients).

    Returns
    -------
    theta : array shaped like the block, in the parameters' dtype
        The new value of the block (undamped in the mini-batch sense: the caller mixes it with
        ``theta_old``).
    BlockStepInfo

    Notes
    -----
    In exact arithmetic every CGLS iterate lowers the damped objective
    ``||r||^2 + lambda ||delta||^2`` while ``||delta||`` grows, so RC never rises from one iterate to
    the next. In floating point, once the block's problem is solved (``k_cg`` above the rank of
    ``A_B``) the recurrence runs on rounding noise and can blow up (step sizes of 1e13 were seen).
    Three guards keep the promise: the rounding-level stop above; an iterate whose recurrence
    objective or RC is above the previous one's is rejected and the loop stops; and RC is recomputed from
    the returned block (one more rendering), the old block being returned should that RC exceed
    ``rc_before``.
    """
    xp = params.xp
    k_cg = int_at_least(k_cg, "k_cg", 1)
    damping = finite_nonnegative(damping, "damping")
    tol = finite_nonnegative(tol, "tol")
    op = block_operator(params, rendering, block)
    f64, work = xp.float64, params.dtype
    eps = float(np.finfo(dtype_name(work)).eps)
    old = params.class_templates if block == "class_templates" else params.filters[int(block.split("_")[1]) - 1]
    size = math.prod(images.shape)  # N D
    lam = float(damping) * size  # ||r||^2 + lam ||delta||^2 = 2 N D (RC_B + damping/2 ||delta||^2)

    def sq(a):
        return float(xp.sum(a * a))

    r = xp.astype(images, f64) - xp.astype(op.apply(old), f64)
    rr = sq(r)
    rc_before = rr / (2 * size)
    x = xp.zeros(tuple(old.shape), dtype=f64, device=params.device)
    s = xp.astype(op.adjoint(xp.astype(r, work)), f64)
    p = s
    gamma = gamma0 = sq(s)
    objective = rr  # ||r||^2 + lam ||x||^2 at x = 0
    norm_a2 = 0.0  # largest Rayleigh quotient ||A p||^2 / ||p||^2 seen: a lower estimate of ||A||^2
    iterates, stopped = [], "k_cg"
    if not math.isfinite(gamma0):
        raise ValueError(f"block_step: the gradient of RC in {block} is not finite (inf or NaN); the images "
                         "or the parameters are too large for the working dtype")
    for _ in range(k_cg):
        if gamma == 0.0 or (tol > 0 and gamma <= tol * gamma0) or \
                gamma <= (_NOISE_ULPS * eps) ** 2 * max(norm_a2, 0.0) * rr:
            stopped = "converged"
            break
        pp = sq(p)
        q = xp.astype(op.apply(xp.astype(p, work)), f64)
        qq = sq(q)
        norm_a2 = max(norm_a2, qq / pp) if pp > 0 else norm_a2
        denom = qq + lam * pp
        alpha = gamma / denom if denom > 0 else math.inf
        if not math.isfinite(alpha):
            stopped = "converged"
            break
        x_new = x + alpha * p
        r_new = r - alpha * q
        rr_new = sq(r_new)
        objective_new = rr_new + lam * sq(x_new)
        # In exact arithmetic both fall (||delta|| grows along CGLS); a rise in either is rounding noise (or NaN)
        if not (objective_new <= objective and rr_new <= rr):
            stopped = "no_descent"
            break
        x, r, rr, objective = x_new, r_new, rr_new, objective_new
        iterates.append(rr / (2 * size))
        s = xp.astype(op.adjoint(xp.astype(r, work)), f64) - lam * x
        gamma_new = sq(s)
        p = s + (gamma_new / gamma) * p
        gamma = gamma_new
    theta = xp.astype(xp.astype(old, f64) + x, work)
    rc_final = rc_before
    if iterates:
        rc_final = sq(xp.astype(images, f64) - xp.astype(op.apply(theta), f64)) / (2 * size)
        if not rc_final <= rc_before:
            theta, rc_final, stopped = old, rc_before, "rejected"
    return theta, BlockStepInfo(block, rc_before, tuple(iterates), len(iterates), rc_final, stopped)
