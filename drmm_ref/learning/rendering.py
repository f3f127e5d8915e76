"""Rendering at fixed latents with its unpooled intermediates kept, and the matching VJP (SPEC §2, §3).

The same chain as :func:`drmm_ref.drmm.render` and :func:`drmm_ref.drmm.render_vjp`, written once
more on the learning side for speed: an EG step renders and then differentiates the rendering, and
``render_vjp`` recomputes every layer's unpooled map ``v^(l) = unpool2d(a^(l) z^(l), t^(l))`` that
the rendering has just made. Keeping them saves one unpooling per layer and step. The tests check
both functions against the model package's ``render`` and ``render_vjp``.

.. math::

    v^{(l)} = \\mathrm{unpool2d}(a^{(l)} \\odot z^{(l)}, t^{(l)}),\\quad z^{(l-1)} = \\mathrm{conv2d\\_transpose}(v^{(l)}, W^{(l)}, q_l)

    \\bar W^{(l)} = \\mathrm{conv2d\\_transpose\\_vjp\\_weight}(\\bar z^{(l-1)}, v^{(l)}),\\quad
    \\bar z^{(l)} = a^{(l)} \\odot \\mathrm{select}_{t}(\\mathrm{conv2d}(\\bar z^{(l-1)}, W^{(l)})) + \\text{(direct terms)}
"""

from __future__ import annotations

import math
from typing import Any

from .. import _backend
from .. import primitives as P
from ..drmm import DRMMParams, Latents, Rendering
from ..drmm.params import template_maps

__all__ = ["render_cached", "render_cached_vjp"]


def render_cached(params: DRMMParams, classes: Any, latents: Latents) -> tuple[Rendering, tuple[Any, ...]]:
    """``render(params, classes, latents)`` and the unpooled maps ``v^(1..L)`` (``unpooled[l-1]``).

    ``classes`` must already be an int64 array of shape (N,) in ``[0, K)`` (as the E-step makes it).
    """
    xp, net = params.xp, params.net
    zero = xp.zeros((), dtype=params.dtype, device=params.device)
    z = xp.take(template_maps(params), classes, axis=0)
    zs, vs = [z], [None] * net.L
    for l in range(net.L, 0, -1):
        ly = net.layers[l - 1]
        v = xp.where(latents.switches[l - 1], z, zero)
        if ly.pool > 1:
            v = P.unpool2d(v, latents.positions[l - 1], ly.pool, xp=xp)
        vs[l - 1] = v
        z = P.conv2d_transpose(v, params.filters[l - 1], ly.padding, xp=xp)
        zs.append(z)
    return Rendering(tuple(reversed(zs)), classes, latents), tuple(vs)


def render_cached_vjp(params: DRMMParams, rendering: Rendering, unpooled: tuple[Any, ...], grad_image: Any = None,
                      grad_renderings: dict[int, Any] | None = None) -> dict[str, Any]:
    """Gradient tree (``filters_<l>``, ``class_templates``) of a function of the partial renderings.

    Same contract as :func:`drmm_ref.drmm.render_vjp` (``grad_image`` = cotangent of ``z^(0)``,
    ``grad_renderings[l]`` = direct cotangents of ``z^(l)``), using the cached ``unpooled`` maps.
    """
    xp, net = params.xp, params.net
    extra = dict(grad_renderings or {})
    g = grad_image
    if 0 in extra:
        g = extra[0] if g is None else g + extra[0]
    if g is None:
        g = xp.zeros(tuple(rendering.renderings[0].shape), dtype=params.dtype, device=params.device)
    lat = rendering.latents
    zero = xp.zeros((), dtype=params.dtype, device=params.device)
    tree = {}
    for l in range(1, net.L + 1):
        ly = net.layers[l - 1]
        tree[f"filters_{l}"] = P.conv2d_transpose_vjp_weight(g, unpooled[l - 1], ly.padding, xp=xp)
        gv = P.conv2d(g, params.filters[l - 1], ly.padding, xp=xp)
        if ly.pool > 1:
            gv = P.select2d(gv, lat.positions[l - 1], ly.pool, xp=xp)
        g = xp.where(lat.switches[l - 1], gv, zero)
        if l in extra:
            g = g + extra[l]
    n, k = g.shape[0], net.n_classes
    classes = rendering.classes
    onehot = xp.astype(xp.expand_dims(classes, axis=1) == xp.arange(k, dtype=classes.dtype,
                                                                     device=_backend.device_of(classes)), params.dtype)
    flat = xp.matmul(xp.matrix_transpose(onehot), xp.reshape(g, (n, math.prod(g.shape[1:]))))
    mubar = xp.reshape(flat, (k,) + tuple(g.shape[1:]))
    tree["class_templates"] = xp.sum(mubar, axis=(2, 3), keepdims=True) if net.constant_templates else mubar
    return tree
