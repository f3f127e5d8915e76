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
from ..primitives import batchlast as BL
from ..primitives.conv import to_batch_last, to_nchw
from ._common import one_hot
from .inference import BottomUp
from .params import DRMMParams, template_maps
from .render import Rendering, _down_layer_bl, _top_bl

__all__ = ["Gradients", "backward", "backward_and_render", "render_vjp"]


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


def _check_backward_args(params: DRMMParams, forward: Any, grad_scores: Any) -> None:
    net = params.net
    if not isinstance(forward, BottomUp):
        raise TypeError(f"forward must be the BottomUp returned by bottom_up, got {type(forward).__name__}")
    _backend.get_namespace(grad_scores, params.class_templates, names=("grad_scores", "params.class_templates"))
    n = forward.scores.shape[0]
    if tuple(grad_scores.shape) != (n, net.n_classes):
        raise ValueError(f"grad_scores must have shape ({n}, {net.n_classes}), got {tuple(grad_scores.shape)}")
    if grad_scores.dtype != params.dtype:
        raise TypeError(f"grad_scores has dtype {grad_scores.dtype} but the parameters are {params.dtype}")


def _top_cotangent_bl(params: DRMMParams, grad_scores: Any) -> Any:
    """``hbar^(L) = sum_c sbar_c mu_c`` in the batch-last layout ``(C_L, H_L, W_L, N)``: one product."""
    xp = params.xp
    mu = template_maps(params)
    flat_mu = xp.reshape(mu, (mu.shape[0], math.prod(mu.shape[1:])))  # (K, D_L)
    g = xp.matmul(xp.matrix_transpose(flat_mu), xp.matrix_transpose(grad_scores))  # (D_L, N)
    return xp.reshape(g, tuple(mu.shape[1:]) + (grad_scores.shape[0],))


def _template_cotangent(params: DRMMParams, weights_nk: Any, top_bl: Any) -> Any:
    """``mubar = W^T h`` for per-example weights ``(N, K)`` and batch-last maps ``(C_L, H_L, W_L, N)``."""
    xp = params.xp
    n = top_bl.shape[-1]
    flat = xp.reshape(top_bl, (math.prod(top_bl.shape[:-1]), n))  # (D_L, N)
    mubar = xp.matrix_transpose(xp.matmul(flat, weights_nk))  # (K, D_L)
    return _fold_templates(params, xp.reshape(mubar, (weights_nk.shape[1],) + tuple(top_bl.shape[:-1])))


def _down_cotangent(params: DRMMParams, forward: BottomUp, g: Any, parameters: bool, input_gradient: bool,
                    classes: Any = None, relu_topdown: bool = False) -> tuple[Any, list, list, tuple | None]:
    r"""The reverse of the bottom-up pass from ``g = hbar^(L)`` (batch-last), optionally rendering ``classes`` with it.

    Per layer, from L down to 1 (``relu_vjp`` folded into the switches, since ``[u > 0]`` at the
    window's first maximum is ``a``; a layer without pooling has ``a = [u > 0]``):

    .. math:: \bar u^{(l)} = \mathrm{unpool}(a^{(l)} \bar h^{(l)}, t^{(l)}),\quad
              \bar W^{(l)} = \mathrm{conv2d\_vjp\_weight}(\bar u^{(l)}, h^{(l-1)}),\quad
              \bar h^{(l-1)} = \mathrm{conv2d\_transpose}(\bar u^{(l)}, W^{(l)})

    With ``classes``, the class templates ``mu_c`` go down beside ``g`` as a second signal through the
    same operators (SPEC §2, "two facts about cost": the rendering operator is the same linear map),
    one unpooling and one transposed convolution per layer with twice the columns; returns their
    partial renderings (batch-last) and unpooled maps too.
    """
    xp, net = params.xp, params.net
    render_too = classes is not None
    if render_too:
        x = xp.stack([g, _top_bl(params, classes, xp)], axis=1)  # (C_L, 2, H_L, W_L, N)
        zs, vs = [x[:, 1, ...]], [None] * net.L
    wbar, bbar = [None] * net.L, [None] * net.L
    for l in range(net.L, 0, -1):
        layer = net.layers[l - 1]
        t = to_batch_last(forward.latents.positions[l - 1], xp)
        a = to_batch_last(forward.latents.switches[l - 1], xp)
        skip_image = l == 1 and not input_gradient  # the image cotangent is not wanted
        v, out = _down_layer_bl(x if render_too else g, t, a, params.filters[l - 1], layer.padding, layer.pool, xp,
                                transpose=not skip_image)
        gu = v[:, 0, ...] if render_too else v
        if parameters:
            h_prev = to_batch_last(forward.features[l - 1], xp)
            wbar[l - 1] = BL.conv2d_weight_grad_bl(gu, h_prev, layer.kernel, layer.padding, xp)
            bbar[l - 1] = xp.sum(xp.reshape(gu, (gu.shape[0], math.prod(gu.shape[1:]))), axis=1)
        if render_too:
            vs[l - 1] = v[:, 1, ...]
            if skip_image:  # only the rendering goes through layer 1's transposed convolution
                zs.append(BL.conv2d_transpose_bl(vs[0], params.filters[0], layer.padding, xp))
                g = None
            else:
                g, z = out[:, 0, ...], out[:, 1, ...]
                if relu_topdown:  # the rendering's partial renderings of levels >= 1 pass a ReLU (SPEC §5)
                    z = xp.maximum(z, xp.zeros((), dtype=z.dtype, device=params.device))
                    out = xp.stack([g, z], axis=1)
                x = out
                zs.append(z)
        else:
            g = out
    return g, wbar, bbar, ((tuple(reversed(zs)), tuple(vs)) if render_too else None)


def backward(params: DRMMParams, forward: BottomUp, grad_scores: Any, *, parameters: bool = True,
             input_gradient: bool = True, check: bool = True) -> Gradients:
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
    input_gradient : bool, default True
        Also return the image cotangent (training does not need it: False skips layer 1's
        transposed convolution).
    check : bool, default True
        Check the arguments (a training step that made them itself passes False).

    Returns
    -------
    Gradients
    """
    xp, net = params.xp, params.net
    if check:
        _check_backward_args(params, forward, grad_scores)
    g = _top_cotangent_bl(params, grad_scores)
    top = to_batch_last(forward.features[net.L], xp)
    g, wbar, bbar, _ = _down_cotangent(params, forward, g, parameters, input_gradient)
    image = to_nchw(g, xp) if input_gradient else None
    if not parameters:
        return Gradients(input=image)
    return Gradients(input=image, filters=tuple(wbar), biases=tuple(bbar),
                     class_templates=_template_cotangent(params, grad_scores, top),
                     class_biases=xp.sum(grad_scores, axis=0))


def backward_and_render(params: DRMMParams, forward: BottomUp, grad_scores: Any, classes: Any, *,
                        relu_topdown: bool = False) -> tuple[Gradients, Rendering]:
    """One fused downward pass: the parameter cotangents of the scores and the rendering of ``classes``.

    Equal to ``(backward(params, forward, grad_scores, input_gradient=False),
    render(params, classes, forward.latents))``: by D2 the cotangent's way down and the rendering
    of a template through the bottom-up latents apply the same linear map per layer (unpool at
    ``t`` with the switches, then ``conv2d_transpose``), so both go down together as two signals
    with twice the columns per product (SPEC §2, "two facts about cost"). This is the EG step's
    pass; the image cotangent is not computed. ``relu_topdown`` renders as ``render(...,
    relu_topdown=True)`` (the cotangent half is not clipped). No argument checks (``classes`` must be an int64
    array of shape (N,) in ``[0, K)``; ``grad_scores`` of shape (N, K) in the parameters' dtype).

    Returns
    -------
    Gradients
        ``filters``, ``biases``, ``class_templates``, ``class_biases`` (``input`` is None).
    Rendering
        Every partial rendering, with the unpooled maps kept for :func:`render_vjp`.
    """
    from .render import Rendering

    xp, net = params.xp, params.net
    g = _top_cotangent_bl(params, grad_scores)
    top = to_batch_last(forward.features[net.L], xp)
    _, wbar, bbar, (zs, vs) = _down_cotangent(params, forward, g, True, False, classes, relu_topdown)
    grads = Gradients(filters=tuple(wbar), biases=tuple(bbar),
                      class_templates=_template_cotangent(params, grad_scores, top),
                      class_biases=xp.sum(grad_scores, axis=0))
    return grads, Rendering(tuple(to_nchw(z, xp) for z in zs), classes, forward.latents, vs, relu_topdown)


def render_vjp(params: DRMMParams, rendering: Rendering, grad_image: Any = None,
               grad_renderings: dict[int, Any] | None = None) -> Gradients:
    r"""Cotangents of the filters and class templates of a rendering at fixed latents and classes.

    For a scalar objective ``f(z^(0), ..., z^(L-1))`` of the partial renderings of
    ``rendering = render(params, classes, latents)``, given ``zbar^(0) = grad_image`` and any
    ``zbar^(l) = grad_renderings[l]``, this returns ``df/dW^(l)`` and ``df/dmu`` by the reverse of
    the rendering chain ``z^(l-1) = conv2d_transpose(v^(l), W^(l), q_l)``, ``v^(l) = unpool(a z^(l), t)``:

    .. math::

        \bar W^{(l)} = \mathrm{conv2d\_transpose\_vjp\_weight}(\bar z^{(l-1)}, v^{(l)}),\quad
        \bar z^{(l)} \mathrel{+}= a \odot \mathrm{select}_t(\mathrm{conv2d}(\bar z^{(l-1)}, W^{(l)}))

    and ``mubar_c = sum_{n: c_n = c} zbar^(L)_n``. For a ``relu_topdown`` rendering the cotangent of
    ``z^(l-1)``, l >= 2, is first multiplied by the ReLU's mask ``[z^(l-1) > 0]`` (``relu'(0) = 0``). The
    unfolded ``zbar^(l-1)`` serves both the
    convolution and the weight gradient; the unpooled maps ``v^(l)`` are the rendering's own
    (:attr:`Rendering.unpooled`) when it kept them.

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
    g = to_batch_last(g, xp)
    lat = rendering.latents
    wbar = [None] * net.L
    for l in range(1, net.L + 1):
        layer = net.layers[l - 1]
        t, a = to_batch_last(lat.positions[l - 1], xp), to_batch_last(lat.switches[l - 1], xp)
        if rendering.unpooled is not None:
            v = rendering.unpooled[l - 1]
        else:
            v, _ = _down_layer_bl(to_batch_last(rendering.renderings[l], xp), t, a, None, layer.padding, layer.pool,
                                  xp, transpose=False)
        if rendering.relu_topdown and l > 1:  # through the ReLU that made z^(l-1) from Lambda^(l) z^(l)
            z_prev = to_batch_last(rendering.renderings[l - 1], xp)
            g = BL.mask(g, z_prev > 0, xp)
        cols = BL.unfold(g, layer.kernel, layer.padding, xp)
        wbar[l - 1] = BL.conv2d_weight_grad_bl(v, g, layer.kernel, layer.padding, xp, cols=cols)
        w = params.filters[l - 1]
        gv = xp.reshape(xp.matmul(BL.weight_matrix(w, xp), cols), (w.shape[0],) + tuple(v.shape[1:]))
        if layer.pool > 1:
            gv = BL.select_bl(gv, t, layer.pool, xp)
        g = BL.mask(gv, a, xp)
        if l in extra:
            g = g + to_batch_last(extra[l], xp)
    oh = one_hot(rendering.classes, net.n_classes, params.dtype, xp)  # (N, K)
    return Gradients(filters=tuple(wbar), class_templates=_template_cotangent(params, oh, g))
