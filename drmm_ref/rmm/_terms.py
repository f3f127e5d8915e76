"""The terms of the RMM log joint that inference, the DCN map and EM share (SPEC §1).

Expanding the square of the Gaussian likelihood,

.. math::

    \\ln p(I, c, m, g, a) = \\underbrace{-\\frac{\\|I\\|^2}{2\\sigma^2}
                                         - \\frac D2 \\ln(2\\pi\\sigma^2)}_{\\text{image constant}}
      + \\underbrace{\\ln\\pi_c + \\ln\\pi_{\\mathrm{off},c} - \\ln M}_{\\text{class constant}}
      + \\ln\\pi_{g} + a\\, u_{c,m,g}(I),

    u_{c,m,g}(I) = \\mathrm{conv2d}(I, \\mu/\\sigma^2, q)[(c,m), g]
                   - \\frac{\\mathrm{conv2d}(\\mathbf 1, \\mu^2, q)[(c,m), g]}{2\\sigma^2}
                   + \\ln\\frac{\\pi_{\\mathrm{on},c}}{\\pi_{\\mathrm{off},c}}.

``u`` is the *evidence* for switching the template on: the DCN's pre-activation (SPEC §1, R1;
§4). ``conv2d(1, mu^2, q)`` is the clipped squared norm of a stamp at ``g`` (equal to
``||mu||^2`` at every valid position). In the window form, ``ln pi_g`` is replaced by the
conditional ``ln pi_{g | r}`` of the window ``r`` holding ``g``.

Everything here is private: :mod:`drmm_ref.rmm.model`, :mod:`~drmm_ref.rmm.dcn` and
:mod:`~drmm_ref.rmm.em` build on it.
"""

from __future__ import annotations

import math
from typing import Any

from .._backend import device_of, get_namespace
from ..primitives import conv2d
from .params import RMMParams

__all__ = [
    "check_images",
    "clipped_norms",
    "switch_log_odds",
    "evidence",
    "evidence_parts",
    "log_position_prior",
    "class_log_constant",
    "image_log_constant",
    "to_regions",
    "from_regions",
    "softplus",
    "neg_inf",
]


def neg_inf(like: Any, xp: Any) -> Any:
    """A 0-d ``-inf`` of ``like``'s dtype and device."""
    return xp.asarray(-math.inf, dtype=like.dtype, device=device_of(like))


def check_params(params: Any) -> RMMParams:
    if not isinstance(params, RMMParams):
        raise TypeError(f"params must be an RMMParams, got {type(params).__name__}")
    return params


def check_images(params: RMMParams, images: Any, name: str = "images") -> Any:
    """Namespace of ``images`` after checking it against the model; clear errors otherwise.

    ``images`` must be a finite real floating array of shape ``(N, C, H, W)`` with the model's
    ``C, H, W``, dtype, namespace and device.
    """
    check_params(params)
    xp = get_namespace(params.templates, images, names=("params.templates", name))
    if not xp.isdtype(images.dtype, "real floating"):
        raise TypeError(f"{name} must be a real floating array, got dtype {images.dtype}")
    if images.dtype != params.templates.dtype:
        raise TypeError(f"{name} has dtype {images.dtype} but the model has {params.templates.dtype}; "
                        "cast one of them (RMMParams.astype)")
    expected = (params.channels, *params.image_shape)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"{name} must have shape (N, C, H, W) = (N, {expected[0]}, {expected[1]}, {expected[2]}) "
                         f"for this model, got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image")
    if not bool(xp.all(xp.isfinite(images))):
        raise ValueError(f"{name} contains NaN or inf; clean the data first")
    return xp


def clipped_norms(params: RMMParams) -> Any:
    """``conv2d(1, mu^2, q)``: squared norm of the part of each stamp inside the image, shape (K, M, Hg, Wg)."""
    xp = params.xp
    K, M, C, k = params.num_classes, params.num_subtemplates, params.channels, params.kernel
    H, W = params.image_shape
    ones = xp.ones((1, C, H, W), dtype=params.dtype, device=device_of(params.templates))
    sq = xp.reshape(params.templates * params.templates, (K * M, C, k, k))
    return xp.reshape(conv2d(ones, sq, params.padding), (K, M, *params.grid_shape))


def switch_log_odds(params: RMMParams) -> Any:
    """``ln(pi_on,c / pi_off,c)``, shape (K,)."""
    xp = params.xp
    return xp.log(params.switch_prior) - xp.log(1 - params.switch_prior)


def evidence_parts(params: RMMParams, images: Any) -> tuple[Any, Any]:
    """``(conv, bias)`` with ``u = conv + bias``: conv of shape (N, K, M, Hg, Wg), bias of shape (K, M, Hg, Wg).

    Callers that add further per-position terms fold them into the small ``bias`` first, so the
    full-size array is touched once (a pass over ``N K M Hg Wg`` entries is the cost unit here).
    """
    xp = params.xp
    K, M, C, k = params.num_classes, params.num_subtemplates, params.channels, params.kernel
    w = xp.reshape(params.templates, (K * M, C, k, k)) / params.sigma2
    conv = xp.reshape(conv2d(images, w, params.padding), (images.shape[0], K, M, *params.grid_shape))
    bias = -clipped_norms(params) / (2 * params.sigma2) + xp.reshape(switch_log_odds(params), (K, 1, 1, 1))
    return conv, bias


def evidence(params: RMMParams, images: Any) -> Any:
    """The switch-on evidence ``u[n, c, m, gy, gx]`` (module docstring), shape (N, K, M, Hg, Wg).

    One convolution with the ``K M`` filters ``mu / sigma^2`` plus the bias (a constant at valid
    positions, the clipped-norm map at padded ones).
    """
    conv, bias = evidence_parts(params, images)
    return conv + bias


def log_position_prior(params: RMMParams) -> Any:
    """``ln pi_g`` (global form) or ``ln pi_{g | r}`` (window form) on the grid, shape (Hg, Wg).

    Uniform priors give ``-ln |G|`` (global) or ``-ln p^2`` (window); zero-probability positions give ``-inf``.
    """
    xp = params.xp
    hg, wg = params.grid_shape
    dev = device_of(params.templates)
    if params.nuisance_prior is None:
        return xp.full((hg, wg), -math.log(params.positions_per_model), dtype=params.dtype, device=dev)
    prior = params.nuisance_prior
    if params.pool is not None:
        mass = xp.sum(to_regions(prior, params), axis=-1, keepdims=True)  # (Rh, Rw, 1)
        prior = from_regions(to_regions(prior, params) / mass, params)
    positive = prior > 0
    one = xp.ones((), dtype=prior.dtype, device=dev)
    return xp.where(positive, xp.log(xp.where(positive, prior, one)), neg_inf(prior, xp))


def class_log_constant(params: RMMParams) -> Any:
    """``ln pi_c + ln pi_off,c - ln M``, shape (K,)."""
    xp = params.xp
    return xp.log(params.class_prior) + xp.log(1 - params.switch_prior) - math.log(params.num_subtemplates)


def image_log_constant(params: RMMParams, images: Any) -> Any:
    """``-||I||^2 / (2 sigma^2) - (D/2) ln(2 pi sigma^2)``, shape (N,): the class-independent part."""
    xp = params.xp
    sq = xp.sum(images * images, axis=(1, 2, 3))
    return -sq / (2 * params.sigma2) - 0.5 * params.num_pixels * math.log(2 * math.pi * params.sigma2)


def to_regions(x: Any, params: RMMParams) -> Any:
    """``(..., Hg, Wg) -> (..., Rh, Rw, S)``: the positions of each model (window) on the last axis.

    Global form: one region holding the whole grid (``Rh = Rw = 1``, ``S = Hg Wg``, row-major).
    Window form: ``p x p`` windows, row-major inside each window (as :func:`drmm_ref.primitives.maxpool2d`).
    """
    xp = get_namespace(x)
    lead = tuple(x.shape[:-2])
    hg, wg = params.grid_shape
    if params.pool is None:
        return xp.reshape(x, (*lead, 1, 1, hg * wg))
    p = params.pool
    nl = len(lead)
    blocks = xp.reshape(x, (*lead, hg // p, p, wg // p, p))
    perm = tuple(range(nl)) + (nl, nl + 2, nl + 1, nl + 3)
    return xp.reshape(xp.permute_dims(blocks, perm), (*lead, hg // p, wg // p, p * p))


def from_regions(x: Any, params: RMMParams) -> Any:
    """Inverse of :func:`to_regions`."""
    xp = get_namespace(x)
    lead = tuple(x.shape[:-3])
    hg, wg = params.grid_shape
    if params.pool is None:
        return xp.reshape(x, (*lead, hg, wg))
    p = params.pool
    nl = len(lead)
    blocks = xp.reshape(x, (*lead, hg // p, wg // p, p, p))
    perm = tuple(range(nl)) + (nl, nl + 2, nl + 1, nl + 3)
    return xp.reshape(xp.permute_dims(blocks, perm), (*lead, hg, wg))


def softplus(u: Any) -> Any:
    """Stable ``ln(1 + e^u) = logaddexp(0, u)``: the switch's sum-product message (one pass)."""
    xp = get_namespace(u)
    return xp.logaddexp(xp.zeros((), dtype=u.dtype, device=device_of(u)), u)
