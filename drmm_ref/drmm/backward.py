"""Generic backward passes built from the primitives' VJPs (SPEC §2, D2; SPEC §3 G-step).

:func:`backward` is reverse-mode differentiation of the scores ``s = bottom_up(params, I).scores``:
given a cotangent ``sbar`` of shape (N, K) it chains

.. math::

    \\bar h^{(L)} = \\textstyle\\sum_c \\bar s_c \\mu_c,\\quad
    \\bar r^{(l)} = \\mathrm{maxpool\\_vjp}(\\bar h^{(l)}, t^{(l)}),\\quad
    \\bar u^{(l)} = \\mathrm{relu\\_vjp}(\\bar r^{(l)}, u^{(l)}),\\quad
    \\bar h^{(l-1)} = \\mathrm{conv2d\\_vjp\\_input}(\\bar u^{(l)}, W^{(l)})

and collects ``Wbar^(l) = conv2d_vjp_weight(ubar^(l), h^(l-1))``, ``bbar^(l) = sum ubar^(l)``,
``mubar_c = sum_n sbar_{n,c} h^(L)_n`` and ``bbar_c = sum_n sbar_{n,c}`` (parameter cotangents summed
over the batch). It never calls :func:`~drmm_ref.drmm.render.render`: claim D2 compares the two.
At kinks (``u = 0``, tied windows) it uses the primitives' conventions (SPEC §0).

:func:`render_vjp` is the reverse pass of :func:`~drmm_ref.drmm.render.render` in the filters and
class templates at fixed latents (rendering is linear in each of them), with cotangents on any
partial renderings. The learning code's reconstruction and non-negativity terms need it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import _backend
from .. import primitives as P
from ._common import one_hot
from .inference import BottomUp
from .params import DRMMParams, template_maps
from .render import Rendering

__all__ = ["Gradients", "backward", "render_vjp"]


@dataclasses.dataclass(frozen=True, eq=False)
class Gradients:
    """Cotangents of the inputs and parameters (parameter ones summed over the batch).

    Attributes
    ----------
    input : array of shape (N, C_0, H_0, W_0) or None
    filters : tuple of L arrays (``filters[l-1]`` like ``W^(l)``) or None
    biases : tuple of L arrays (``biases[l-1]`` of shape (C_l,)) or None
    class_templates : array shaped like ``params.class_templates`` or None
    class_biases : array of shape (K,) or None
    """

    input: Any = None
    filters: tuple[Any, ...] | None = None
    biases: tuple[Any, ...] | None = None
    class_templates: Any = None
    class_biases: Any = None


def _fold_templates(params: DRMMParams, full: Any) -> Any:
    """Cotangent of the stored templates from that of the full-grid maps (sum over space if constant)."""
    if params.net.constant_templates:
        return params.xp.sum(full, axis=(2, 3), keepdims=True)
    return full


def backward(params: DRMMParams, forward: BottomUp, grad_scores: Any, *, parameters: bool = True) -> Gradients:
    """Vector-Jacobian product of the bottom-up scores with respect to the images and the parameters.

    Parameters
    ----------
    params : DRMMParams
        The parameters ``forward`` was computed with.
    forward : BottomUp
        Output of ``bottom_up(params, images)`` (its features, pre-activations and positions are used).
    grad_scores : array of shape (N, K)
        Cotangent ``sbar`` of the scores; a one-hot row selects the gradient of one class score
        (``backward(params, fw, one_hot(c))`` gives ``d s_c / d I`` in ``.input``).
    parameters : bool, default True
        Also return the parameter cotangents (False skips the weight-gradient products).

    Returns
    -------
    Gradients
    """
    xp, net = params.xp, params.net
    if not isinstance(forward, BottomUp):
        raise TypeError(f"forward must be the BottomUp returned by bottom_up, got {type(forward).__name__}")
    _backend.get_namespace(grad_scores, params.class_templates, names=("grad_scores", "params.class_templates"))
    n = forward.scores.shape[0]
    if tuple(grad_scores.shape) != (n, net.n_classes):
        raise ValueError(f"grad_scores must have shape ({n}, {net.n_classes}), got {tuple(grad_scores.shape)}")
    if grad_scores.dtype != params.dtype:
        raise TypeError(f"grad_scores has dtype {grad_scores.dtype} but the parameters are {params.dtype}")
    mu = template_maps(params)
    top = forward.features[net.L]
    dims = math.prod(top.shape[1:])
    flat_mu = xp.reshape(mu, (net.n_classes, dims))
    g = xp.reshape(xp.matmul(grad_scores, flat_mu), tuple(top.shape))
    wbar, bbar = [None] * net.L, [None] * net.L
    for l in range(net.L, 0, -1):
        layer = net.layers[l - 1]
        u = forward.preactivations[l - 1]
        if layer.pool > 1:
            g = P.maxpool2d_vjp(g, forward.latents.positions[l - 1], layer.pool, xp=xp)
        g = P.relu_vjp(g, u, xp=xp)
        if parameters:
            wbar[l - 1] = P.conv2d_vjp_weight(g, forward.features[l - 1], layer.padding, xp=xp)
            bbar[l - 1] = xp.sum(g, axis=(0, 2, 3))
        g = P.conv2d_vjp_input(g, params.filters[l - 1], layer.padding, xp=xp)
    if not parameters:
        return Gradients(input=g)
    flat_top = xp.reshape(top, (n, dims))
    mubar = xp.reshape(xp.matmul(xp.matrix_transpose(grad_scores), flat_top), tuple(mu.shape))
    return Gradients(input=g, filters=tuple(wbar), biases=tuple(bbar),
                     class_templates=_fold_templates(params, mubar), class_biases=xp.sum(grad_scores, axis=0))


def render_vjp(params: DRMMParams, rendering: Rendering, grad_image: Any = None,
               grad_renderings: dict[int, Any] | None = None) -> Gradients:
    """Cotangents of the filters and class templates of a rendering at fixed latents and classes.

    For a scalar objective ``f(z^(0), ..., z^(L-1))`` of the partial renderings of
    ``rendering = render(params, classes, latents)``, given ``zbar^(0) = grad_image`` and any
    ``zbar^(l) = grad_renderings[l]``, this returns ``df/dW^(l)`` and ``df/dmu`` by the reverse of
    the rendering chain ``z^(l-1) = conv2d_transpose(v^(l), W^(l), q_l)``, ``v^(l) = unpool(a z^(l), t)``:

    .. math::

        \\bar W^{(l)} = \\mathrm{conv2d\\_transpose\\_vjp\\_weight}(\\bar z^{(l-1)}, v^{(l)}),\\quad
        \\bar z^{(l)} \\mathrel{+}= a \\odot \\mathrm{select}_t(\\mathrm{conv2d}(\\bar z^{(l-1)}, W^{(l)}))

    and ``mubar_c = sum_{n: c_n = c} zbar^(L)_n``.

    Parameters
    ----------
    params : DRMMParams
    rendering : Rendering
        Output of ``render`` / ``top_down`` with these parameters.
    grad_image : array of shape (N, C_0, H_0, W_0), optional
        ``zbar^(0)``.
    grad_renderings : dict {l: array of shape (N, C_l, H_l, W_l)}, optional
        Extra cotangents on ``z^(l)`` for ``l`` in 0..L (added to ``grad_image`` at l = 0).

    Returns
    -------
    Gradients
        ``filters`` and ``class_templates`` set (``input``, ``biases``, ``class_biases`` are None: rendering
        does not use them).
    """
    xp, net = params.xp, params.net
    extra = dict(grad_renderings or {})
    for l, v in extra.items():
        if not 0 <= l <= net.L or tuple(v.shape) != tuple(rendering.renderings[l].shape):
            raise ValueError(f"grad_renderings[{l}] must be a level in 0..{net.L} with shape "
                             f"{tuple(rendering.renderings[l].shape) if 0 <= l <= net.L else '?'}")
    g = grad_image
    if 0 in extra:
        g = extra[0] if g is None else g + extra[0]
    if g is None:
        g = xp.zeros(tuple(rendering.renderings[0].shape), dtype=params.dtype, device=params.device)
    lat = rendering.latents
    zero = xp.zeros((), dtype=params.dtype, device=params.device)
    wbar = [None] * net.L
    for l in range(1, net.L + 1):
        layer = net.layers[l - 1]
        t, a = lat.positions[l - 1], lat.switches[l - 1]
        v = xp.where(a, rendering.renderings[l], zero)
        if layer.pool > 1:
            v = P.unpool2d(v, t, layer.pool, xp=xp)
        wbar[l - 1] = P.conv2d_transpose_vjp_weight(g, v, layer.padding, xp=xp)
        gv = P.conv2d_transpose_vjp_input(g, params.filters[l - 1], layer.padding, xp=xp)
        if layer.pool > 1:
            gv = P.unpool2d_vjp_values(gv, t, layer.pool, xp=xp)
        g = xp.where(a, gv, zero)
        if l in extra:
            g = g + extra[l]
    n = g.shape[0]
    dims = math.prod(g.shape[1:])
    oh = one_hot(rendering.classes, net.n_classes, params.dtype, xp)  # (N, K)
    mubar = xp.matmul(xp.matrix_transpose(oh), xp.reshape(g, (n, dims)))
    mubar = xp.reshape(mubar, (net.n_classes,) + tuple(g.shape[1:]))
    return Gradients(filters=tuple(wbar), class_templates=_fold_templates(params, mubar))
