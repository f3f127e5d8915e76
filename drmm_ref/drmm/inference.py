"""Max-sum inference in the DRMM: the bottom-up pass (the DCN forward), the top-down pass, the log joint.

SPEC §2 (Patel et al. 2016, §2.2). The bottom-up pass is

.. math::

    h^{(0)} = I,\\quad u^{(l)} = \\mathrm{conv2d}(h^{(l-1)}, W^{(l)}, q_l) + b^{(l)},\\quad
    h^{(l)} = \\mathrm{maxpool}(\\mathrm{relu}(u^{(l)}), p_l),\\quad s_c = \\langle \\mu_c, h^{(L)} \\rangle + b_c

and its latents are ``t^(l)`` = the positions returned by ``maxpool(relu(u^(l)))`` (first maximum,
so ``t = 0`` in windows where every ``u <= 0``) and ``a^(l) = [select_t(u^(l)) > 0]``. Since
the first maximum of ``relu(u)`` over a window is ``relu(u[t])``, ``a^(l) = [h^(l) > 0]``, which is
how it is computed. Implementation: ``maxpool(relu(u)) = relu(maxpool(u))`` with the same first
maximum wherever the window maximum is positive, so the pass pools ``u`` first and sets ``t = 0``
where ``a = 0`` (the ReLU then runs on the pooled grid; the result is identical, see the tests'
loop oracle).

Claim D1: with zero biases ``<mu_c, h^(L)(I)> = <mu_{c,g*}, I> <= max_g <mu_{c,g}, I>`` with
equality when every partial rendering is non-negative. Claim D2: ``top_down`` from the bottom-up
latents is the input gradient of ``s_c`` (see :mod:`drmm_ref.drmm.backward`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend
from ..primitives import batchlast as BL
from ..primitives.conv import to_batch_last, to_nchw
from ._common import as_classes, check_finite_output, check_images
from .latents import Latents, check_latents
from .params import DRMMParams, template_maps
from .render import Rendering, render

__all__ = ["BottomUp", "bottom_up", "bottom_up_layer", "top_down", "log_joint", "log_prior_latents", "class_scores"]


@dataclasses.dataclass(frozen=True, eq=False)
class BottomUp:
    """Everything the bottom-up pass computes, including what a backward pass needs.

    Attributes
    ----------
    features : tuple of L+1 arrays, ``features[l]`` of shape (N, C_l, H_l, W_l)
        ``h^(l)``; ``features[0]`` are the images.
    preactivations : tuple of L arrays, ``preactivations[l-1]`` of shape (N, C_l, H_l p_l, W_l p_l)
        ``u^(l)`` (before ReLU and pooling).
    latents : Latents
        ``t^(l)`` (max-pool positions) and ``a^(l)`` (switches) of every unit.
    scores : array of shape (N, K)
        ``s_c = <mu_c, h^(L)> + b_c``.
    """

    features: tuple[Any, ...]
    preactivations: tuple[Any, ...]
    latents: Latents
    scores: Any

    @property
    def images(self) -> Any:
        return self.features[0]

    @property
    def classes(self) -> Any:
        """DCN class decision ``argmax_c s_c`` (first maximum), int64 array of shape (N,)."""
        xp = _backend.get_namespace(self.scores)
        return xp.astype(xp.argmax(self.scores, axis=1), xp.int64)


def class_scores(params: DRMMParams, top: Any) -> Any:
    """``s_c = <mu_c, h^(L)> + b_c`` for ``top = h^(L)`` of shape (N, C_L, H_L, W_L); returns (N, K)."""
    return _scores_bl(params, to_batch_last(top, params.xp))


def _scores_bl(params: DRMMParams, top_bl: Any) -> Any:
    """Scores from the batch-last ``h^(L)`` of shape (C_L, H_L, W_L, N): one ``(K, D_L) @ (D_L, N)`` product."""
    xp = params.xp
    mu = template_maps(params)
    flat_mu = xp.reshape(mu, (mu.shape[0], math.prod(mu.shape[1:])))
    flat_h = xp.reshape(top_bl, (flat_mu.shape[1], top_bl.shape[-1]))
    return xp.matrix_transpose(xp.matmul(flat_mu, flat_h)) + xp.reshape(params.class_biases, (1, mu.shape[0]))


def _up_layer_bl(params: DRMMParams, l: int, h: Any) -> tuple[Any, Any, Any, Any]:
    """One bottom-up layer on batch-last maps ``(C, H, W, N)``: ``h^(l-1) -> (u^(l), h^(l), t^(l), a^(l))``.

    ``maxpool(relu(u)) = relu(maxpool(u))`` with the same first maximum wherever the window maximum
    is positive; where it is 0 every ``u <= 0`` and SPEC's position is 0. So ``u`` is pooled first
    and ``t`` set to 0 where ``a = 0`` (the ReLU then runs on the pooled grid). A layer without
    pooling has ``t = 0`` everywhere (a broadcast, read-only zero array).
    """
    xp = params.xp
    layer = params.net.layers[l - 1]
    u = BL.conv2d_bl(h, params.filters[l - 1], layer.padding, xp)
    u = u + xp.reshape(params.biases[l - 1], (u.shape[0], 1, 1, 1))
    zero = xp.zeros((), dtype=u.dtype, device=_backend.device_of(u))
    if layer.pool > 1:
        m, t = BL.maxpool_bl(u, layer.pool, xp)
        h = xp.maximum(m, zero)
        a = h > 0  # = [select_t(u) > 0]
        t = t * xp.astype(a, t.dtype)  # SPEC: t = 0 where the switch is off
    else:
        h = xp.maximum(u, zero)
        a = h > 0
        t = xp.broadcast_to(xp.zeros((1, 1, 1, 1), dtype=xp.int64, device=_backend.device_of(h)), tuple(h.shape))
    return u, h, t, a


def bottom_up_layer(params: DRMMParams, l: int, h: Any) -> tuple[Any, Any, Any, Any]:
    """One layer of the bottom-up pass on NCHW maps: ``h^(l-1) -> (u^(l), h^(l), t^(l), a^(l))`` (no argument checks).

    See :func:`_up_layer_bl`; the results are NCHW views of batch-last arrays.
    """
    xp = params.xp
    out = _up_layer_bl(params, l, to_batch_last(h, xp))
    return tuple(to_nchw(v, xp) for v in out)


def bottom_up(params: DRMMParams, images: Any, *, check: bool = True) -> BottomUp:
    """The DCN forward = max-sum inference of the DRMM's latents, bottom up (SPEC §2).

    Parameters
    ----------
    params : DRMMParams
    images : array of shape (N, C_0, H_0, W_0)
        Same namespace, device and dtype as the parameters; finite.
    check : bool, default True
        Check the images (shape, dtype, namespace, finiteness) and that no pre-activation or score
        overflowed the dtype (one reduction and host synchronisation per layer). A training loop
        that has checked its data set once passes False (its divergence check sees the objective).

    Returns
    -------
    BottomUp
        Feature maps ``h^(0..L)``, pre-activations ``u^(1..L)``, latents ``(t, a)`` per layer and
        scores ``s`` of shape (N, K). The maps are NCHW views of the batch-last ``(C, H, W, N)``
        arrays the pass computes (see :mod:`drmm_ref.primitives.batchlast`).

    Raises
    ------
    ValueError
        Images of the wrong shape for the network, or containing NaN / inf.
    TypeError
        Wrong dtype, or another namespace than the parameters.
    """
    if check:
        check_images(params, images)
    xp, net = params.xp, params.net
    h = to_batch_last(images, xp)
    features, pre, positions, switches = [images], [], [], []
    for l in range(1, net.L + 1):
        u, h, t, a = _up_layer_bl(params, l, h)
        if check:  # finite images whose pre-activations overflow the dtype: an error, not a silent -inf -> 0
            check_finite_output(u, f"bottom_up pre-activations of layer {l}")
        pre.append(to_nchw(u, xp))
        features.append(to_nchw(h, xp))
        positions.append(to_nchw(t, xp))
        switches.append(to_nchw(a, xp))
    scores = _scores_bl(params, h)
    if check:
        check_finite_output(scores, "bottom_up scores")
    return BottomUp(tuple(features), tuple(pre), Latents(tuple(positions), tuple(switches)), scores)


def top_down(params: DRMMParams, latents: Latents | BottomUp, classes: Any = None) -> Rendering:
    """Top-down reconstruction: render class ``c`` through given latents (SPEC §2, D2).

    .. math:: \\hat x = \\Lambda^{(1)}_{g^*} \\cdots \\Lambda^{(L)}_{g^*} \\mu_c

    Parameters
    ----------
    params : DRMMParams
    latents : Latents or BottomUp
        Usually ``bottom_up(params, images)`` (or its ``.latents``).
    classes : int or int array of shape (N,), optional
        Class to render from (the label, in learning). Defaults to the DCN decision
        ``argmax_c s_c`` when ``latents`` is a :class:`BottomUp`.

    Returns
    -------
    Rendering
        ``reconstruction = z^(0) = x_hat`` and every partial rendering ``z^(l)``.
    """
    if isinstance(latents, BottomUp):
        if classes is None:
            classes = latents.classes
        latents = latents.latents
    elif classes is None:
        raise ValueError("classes is required when latents is a Latents (pass a BottomUp to use its argmax classes)")
    return render(params, classes, latents)


def log_prior_latents(params: DRMMParams, latents: Latents) -> Any:
    """``sum_{l, j} [ln pi(a_j) + ln pi(t_j)]`` per example, shape (N,) (uniform ``t``: ``-ln p_l^2`` per unit)."""
    xp, net = params.xp, params.net
    n = check_latents(net, latents, None, xp)
    on = _backend.to_numpy(params.switch_prior).astype(np.float64)
    total = xp.zeros((n,), dtype=params.dtype, device=params.device)
    for l in range(1, net.L + 1):
        a = latents.switches[l - 1]
        n_on = xp.astype(xp.sum(xp.astype(a, xp.int64), axis=(1, 2, 3)), params.dtype)
        units = net.units(l)
        p2 = net.layers[l - 1].pool ** 2
        total = total + n_on * math.log(on[l - 1]) + (units - n_on) * math.log1p(-on[l - 1]) - units * math.log(p2)
    return total


def log_joint(params: DRMMParams, images: Any, classes: Any, latents: Latents) -> Any:
    """The complete-data log-likelihood ``ln p(I, c, g)`` per example (SPEC §2).

    .. math::

        \\ln p(I, c, g) = -\\frac{\\|I - \\mu_{c,g}\\|^2}{2\\sigma^2} - \\frac{D}{2}\\ln(2\\pi\\sigma^2) + \\ln\\pi_c
                         + \\sum_{l, j} [\\ln \\pi(a_j) + \\ln \\pi(t_j)],\\qquad \\pi(t_j) = 1/p_l^2

    Parameters
    ----------
    params : DRMMParams
    images : array of shape (N, C_0, H_0, W_0)
    classes : int or int array of shape (N,)
    latents : Latents with batch N

    Returns
    -------
    array of shape (N,)
        In the parameters' dtype.
    """
    xp = check_images(params, images)
    n = int(images.shape[0])
    check_latents(params.net, latents, n, xp)
    cls = as_classes(classes, params.net.n_classes, n, xp, params.device)
    mu = render(params, cls, latents).image
    s2 = params.noise_variance
    d = params.net.n_pixels
    resid = xp.sum((images - mu) ** 2, axis=(1, 2, 3))
    log_pc = xp.take(xp.log(params.class_prior), cls, axis=0)
    result = -resid / (2 * s2) - 0.5 * d * math.log(2 * math.pi * s2) + log_pc + log_prior_latents(params, latents)
    return check_finite_output(result, "log_joint")
