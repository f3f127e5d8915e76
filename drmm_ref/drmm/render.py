"""Coarse-to-fine rendering and ancestral sampling of the DRMM (SPEC §2; Patel et al. 2016, §2.2).

A layer's rendering operator takes a map ``z`` on layer l's pooled grid to layer l-1's grid:

.. math::

    \\Lambda^{(l)}_{g^{(l)}} z = \\mathrm{conv2d\\_transpose}\\big(
                                  \\mathrm{unpool2d}(a^{(l)} \\odot z,\\, t^{(l)},\\, p_l), W^{(l)},\\, q_l\\big)

and the image template of class c under latents g is
``mu_{c,g} = z^(0) = Lambda^(1) ... Lambda^(L) mu_c`` with ``z^(L) = mu_c``. Every partial
rendering ``z^(l)`` is returned (``renderings[l]``, l = 0..L), since the learning objective's
non-negativity term and D1's condition are stated on them.

Sampling draws ``c ~ pi_c``, each unit's ``t`` uniformly in its window and ``a ~ Bernoulli(pi_on^(l))``
on the host (``numpy.random.default_rng``), renders, and adds ``N(0, sigma^2)`` pixel noise.

:func:`expected_rendering` carries a partial rendering to image space through the
*prior-expected* lower operators, ``E[Lambda^(l)] z = pi_on^(l) conv2d_transpose(spread(z) / p_l^2, W^(l), q_l)``
where ``spread`` copies each value over its ``p_l x p_l`` window (uniform ``t``): the picture of
what level l alone determines (the figure of coarse-to-fine rendering uses it).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend
from .. import primitives as P
from ..primitives import batchlast as BL
from ..primitives.conv import to_batch_last, to_nchw
from ..numerics import dtype_name
from ._common import as_classes, check_count, host_rng
from .latents import Latents, check_latents
from .params import DRMMParams, template_maps

__all__ = ["Rendering", "Sample", "render", "render_layer", "sample", "expected_rendering", "draw_latents"]


@dataclasses.dataclass(frozen=True, eq=False)
class Rendering:
    """The partial renderings of a batch: ``renderings[l] = z^(l)``, l = 0..L.

    Attributes
    ----------
    renderings : tuple of L+1 arrays, ``renderings[l]`` of shape (N, C_l, H_l, W_l)
        ``renderings[L]`` are the class templates ``mu_c``, ``renderings[0]`` the image template
        ``mu_{c,g}`` (the top-down reconstruction ``x_hat`` when the latents come from ``bottom_up``).
    classes : int64 array of shape (N,)
    latents : Latents
    unpooled : tuple of L arrays or None
        The unpooled maps ``v^(l) = unpool2d(a^(l) z^(l), t^(l))`` in the batch-last layout
        ``(C_l, H_{l-1}', W_{l-1}', N)`` that :func:`render` made on the way down; :func:`render_vjp`
        reuses them instead of unpooling again. None when the rendering was built elsewhere.
    """

    renderings: tuple[Any, ...]
    classes: Any
    latents: Latents
    unpooled: tuple[Any, ...] | None = dataclasses.field(default=None, repr=False)
    #: True when made with ``render(..., relu_topdown=True)``: ``z^(l) = relu(Lambda^(l+1) z^(l+1))`` for l = 1..L-1.
    relu_topdown: bool = False

    @property
    def image(self) -> Any:
        """``z^(0) = mu_{c,g}``, array of shape (N, C_0, H_0, W_0)."""
        return self.renderings[0]

    @property
    def reconstruction(self) -> Any:
        """Alias of :attr:`image` (the top-down pass's ``x_hat``)."""
        return self.renderings[0]


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """Draws from the DRMM: noisy ``images``, their ``classes`` and ``latents``, and the ``rendering``."""

    images: Any
    classes: Any
    latents: Latents
    rendering: Rendering


def _down_layer_bl(z: Any, positions: Any, switches: Any, weight: Any, padding: int, pool: int, xp: Any,
                   *, transpose: bool = True) -> tuple[Any, Any]:
    """One rendering operator on batch-last maps: ``v = unpool(a z, t)``, ``conv2d_transpose(v, W)``.

    ``z`` is ``(C_l, H_l, W_l, N)``, or ``(C_l, S, H_l, W_l, N)`` for ``S`` signals that share the
    latents (``positions`` and ``switches`` are ``(C_l, H_l, W_l, N)`` and broadcast over ``S``).
    Returns ``(v, Lambda z)``; with ``transpose=False`` only ``v`` (the second value is None).
    """
    if z.ndim == 5:
        shape = tuple(positions.shape)
        positions = xp.reshape(positions, (shape[0], 1) + shape[1:])
        switches = xp.reshape(switches, (shape[0], 1) + shape[1:])
    v = BL.mask(z, switches, xp)
    if pool > 1:
        v = BL.unpool_bl(v, positions, pool, xp)
    if not transpose:
        return v, None
    return v, BL.conv2d_transpose_bl(v, weight, padding, xp)


def render_layer(z: Any, positions: Any, switches: Any, weight: Any, padding: int, pool: int, *, xp: Any = None) -> Any:
    """One rendering operator ``Lambda^(l)_{g^(l)} z`` (SPEC §2).

    Parameters
    ----------
    z : array of shape (N, C_l, H_l, W_l)
    positions : int array of shape (N, C_l, H_l, W_l)
        ``t^(l)``.
    switches : bool array of shape (N, C_l, H_l, W_l)
        ``a^(l)``.
    weight : array of shape (C_l, C_{l-1}, k_l, k_l)
    padding, pool : int
        ``q_l`` and ``p_l``.

    Returns
    -------
    array of shape (N, C_{l-1}, H_{l-1}, W_{l-1})
    """
    xp = _backend.get_namespace(z, positions, switches, weight, xp=xp, names=("z", "positions", "switches", "weight"))
    _, out = _down_layer_bl(to_batch_last(z, xp), to_batch_last(positions, xp), to_batch_last(switches, xp), weight,
                            padding, pool, xp)
    return to_nchw(out, xp)


def _top_bl(params: DRMMParams, classes: Any, xp: Any) -> Any:
    """Batch-last class templates ``(C_L, H_L, W_L, N)`` of ``classes``: columns of the ``(D_L, K)`` template matrix."""
    mu = template_maps(params)
    k = mu.shape[0]
    flat = xp.matrix_transpose(xp.reshape(mu, (k, math.prod(mu.shape[1:]))))  # (D_L, K)
    return xp.reshape(xp.take(flat, classes, axis=1), tuple(mu.shape[1:]) + (classes.shape[0],))


def render(params: DRMMParams, classes: Any, latents: Latents, *, check: bool = True,
           relu_topdown: bool = False) -> Rendering:
    """Render class templates through the latents: ``z^(L) = mu_c``, ``z^(l-1) = Lambda^(l) z^(l)`` (SPEC §2).

    Linear in the class template and in each layer's filters (for fixed latents). With
    ``relu_topdown`` the partial renderings of levels L-1..1 pass through a ReLU before the next
    layer renders them, ``z^(l-1) = relu(Lambda^(l) z^(l))`` for l = L..2, and the image level is
    not clipped (SPEC §5, "Non-negativity, two forms": the NIPS paper's "ReLU operation in the
    top-down reconstruction"; D1's condition is on levels 1..L).

    Parameters
    ----------
    params : DRMMParams
    classes : int, sequence or int array of shape (N,)
        Class of each example, in ``[0, K)``.
    latents : Latents
        Per-unit positions and switches with batch N (e.g. from :func:`sample` or ``bottom_up``).
    check : bool, default True
        Check the latents and classes (False: the caller guarantees them, e.g. from ``bottom_up``).
    relu_topdown : bool, default False
        Clip the partial renderings of levels 1..L-1 at 0 (see above).

    Returns
    -------
    Rendering
        ``renderings[l] = z^(l)`` for l = 0..L (NCHW views of batch-last arrays);
        ``image = z^(0) = mu_{c,g}``; the unpooled maps kept for :func:`render_vjp`.

    Raises
    ------
    ValueError
        Classes out of range; latents of the wrong shape for the network.
    TypeError
        Latents or classes from another namespace, wrong dtypes.
    """
    xp, net = params.xp, params.net
    if check:
        n = check_latents(net, latents, None, xp)
        cls = as_classes(classes, net.n_classes, n, xp, params.device)
    else:
        cls = classes
    z = _top_bl(params, cls, xp)
    out, vs = [z], [None] * net.L
    for l in range(net.L, 0, -1):
        layer = net.layers[l - 1]
        vs[l - 1], z = _down_layer_bl(z, to_batch_last(latents.positions[l - 1], xp),
                                      to_batch_last(latents.switches[l - 1], xp), params.filters[l - 1],
                                      layer.padding, layer.pool, xp)
        if relu_topdown and l > 1:
            z = xp.maximum(z, xp.zeros((), dtype=z.dtype, device=params.device))
        out.append(z)
    return Rendering(tuple(to_nchw(z, xp) for z in reversed(out)), cls, latents, tuple(vs), relu_topdown)


def draw_latents(params: DRMMParams, n: int, seed: Any = 0) -> Latents:
    """Draw every unit's ``t`` (uniform in its window) and ``a ~ Bernoulli(pi_on^(l))`` for N examples."""
    rng, net, xp = host_rng(seed), params.net, params.xp
    on = _backend.to_numpy(params.switch_prior).astype(np.float64)
    positions, switches = [], []
    for l in range(1, net.L + 1):
        shape = (n,) + tuple(net.shapes[l])
        p = net.layers[l - 1].pool
        positions.append(_backend.asarray(rng.integers(0, p * p, size=shape, dtype=np.int64), xp=xp,
                                          device=params.device))
        switches.append(_backend.asarray(rng.random(shape) < on[l - 1], xp=xp, device=params.device))
    return Latents(tuple(positions), tuple(switches))


def sample(params: DRMMParams, n: int, seed: Any = 0, *, classes: Any = None, noise: bool = True) -> Sample:
    """Ancestral samples from the DRMM (SPEC §2): class, every unit's (t, a), rendering, pixel noise.

    .. math:: c \\sim \\pi_c,\\quad t_j \\sim U\\{0..p_l^2-1\\},\\quad a_j \\sim \\mathrm{Bernoulli}(\\pi^{(l)}_{on}),
              \\quad I = \\mu_{c,g} + \\varepsilon,\\ \\varepsilon \\sim N(0, \\sigma^2 \\mathrm{Id})

    Parameters
    ----------
    params : DRMMParams
    n : int
        Number of samples.
    seed : int, SeedSequence or Generator, default 0
        All randomness is drawn on the host with ``numpy.random.default_rng(seed)`` in the order
        classes, latents (layer 1 first), noise, then moved to the parameters' namespace/device.
    classes : int or int array of shape (N,), optional
        Clamp the classes instead of drawing them from ``pi_c``.
    noise : bool, default True
        Add the pixel noise (False returns the clean renderings as ``images``).

    Returns
    -------
    Sample
    """
    n = check_count(n, "n")
    rng, net, xp = host_rng(seed), params.net, params.xp
    if classes is None:
        prior = _backend.to_numpy(params.class_prior).astype(np.float64)
        classes = _backend.asarray(rng.choice(net.n_classes, size=n, p=prior / prior.sum()).astype(np.int64),
                                   xp=xp, device=params.device)
    classes = as_classes(classes, net.n_classes, n, xp, params.device)
    latents = draw_latents(params, n, rng)
    rendering = render(params, classes, latents)
    images = rendering.image
    if noise:
        eps = rng.standard_normal((n,) + net.image_shape) * np.sqrt(params.noise_variance)
        images = images + _backend.asarray(eps.astype(dtype_name(params.dtype)), xp=xp, device=params.device)
    return Sample(images, classes, latents, rendering)


def _spread(z: Any, p: int, xp: Any) -> Any:
    """Copy each value over its ``p x p`` window, divided by ``p^2`` (the mean of unpool over uniform t)."""
    n, c, h, w = z.shape
    big = xp.broadcast_to(xp.reshape(z / (p * p), (n, c, h, 1, w, 1)), (n, c, h, p, w, p))
    return xp.reshape(big, (n, c, h * p, w * p))


def expected_rendering(params: DRMMParams, z: Any, level: int) -> Any:
    """Carry a partial rendering ``z^(level)`` to image space with the prior-expected operators.

    .. math:: E[z^{(0)} \\mid z^{(l)}] = \\bar\\Lambda^{(1)} \\cdots \\bar\\Lambda^{(l)} z^{(l)},\\qquad
              \\bar\\Lambda^{(m)} z = \\pi^{(m)}_{on}\\,
              \\mathrm{conv2d\\_transpose}(\\mathrm{spread}_{p_m}(z) / p_m^2, W^{(m)}, q_m)

    (the latents of different layers are independent a priori and each operator is linear, so
    the expectation factorises). ``level = 0`` returns ``z`` itself.

    Parameters
    ----------
    z : array of shape (N, C_level, H_level, W_level)
    level : int in 0..L
    """
    xp, net = params.xp, params.net
    if not 0 <= level <= net.L:
        raise ValueError(f"level must be in 0..{net.L}, got {level}")
    _backend.get_namespace(z, params.class_templates, names=("z", "params.class_templates"))
    if z.ndim != 4 or tuple(z.shape[1:]) != tuple(net.shapes[level]):
        raise ValueError(f"z must have shape (N, {', '.join(map(str, net.shapes[level]))}) at level {level}, "
                         f"got {tuple(z.shape)}")
    on = _backend.to_numpy(params.switch_prior).astype(np.float64)
    for m in range(level, 0, -1):
        layer = net.layers[m - 1]
        v = _spread(z, layer.pool, xp) if layer.pool > 1 else z
        z = float(on[m - 1]) * P.conv2d_transpose(v, params.filters[m - 1], layer.padding, xp=xp)
    return z
