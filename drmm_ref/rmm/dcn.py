"""The discriminative relaxation of the shallow RMM: generative <-> DCN (SPEC §4, claim R1).

Generative -> DCN is always exact (SPEC §1, R1; §4):

.. math::

    w_{c,m} = \\mu_{c,m} / \\sigma^2, \\qquad
    b_{c,m} = -\\frac{\\|\\mu_{c,m}\\|^2}{2\\sigma^2} + \\ln\\frac{\\pi_{\\mathrm{on},c}}{\\pi_{\\mathrm{off},c}}

(at padded positions ``b`` is the clipped-norm map ``-conv2d(1, mu^2, q) / (2 sigma^2) + ln(pi_on/pi_off)``),
and the DCN

.. math:: s_c(I) = \\beta_c + \\max_{m, g}\\big[o_g + \\mathrm{ReLU}(\\mathrm{conv2d}(I, w)[(c,m), g] + b_{c,m})\\big]

with position offsets ``o_g = ln pi_g`` (after the ReLU, inside the max: not a conv bias) and
class biases ``beta_c = ln pi_c + ln pi_off,c - ln M`` computes the max-sum scores up to the pinned,
class-independent constant ``kappa(I) = -||I||^2/(2 sigma^2) - (D/2) ln(2 pi sigma^2)``:

.. math:: \\max_{m,g,a} \\ln p(I, c, m, g, a) = \\kappa(I) + s_c(I).

The window form replaces the global max over positions by ``maxpool2d(., p)`` and ``o_g`` by
``ln pi_{g | r}``. The max over ``m`` is maxout over sub-templates.

DCN -> generative (SPEC §4): for any chosen ``sigma^2``, ``mu = sigma^2 w`` and
``pi_on,c = sigmoid(b_{c,m} + sigma^2 ||w_{c,m}||^2 / 2)``. It exists only when that value is the
same for every sub-template ``m`` of a class (one shared ``pi_on`` additionally needs it equal
across classes), and, with padding, when the bias map is the clipped-norm map plus a constant;
:func:`from_dcn` raises a ``ValueError`` saying which condition fails otherwise. Class biases and
position offsets are mapped to priors by normalising ``exp``: the DCN scores are then recovered up
to a class-independent constant (which changes no decision).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from .._backend import device_of, get_namespace, to_numpy
from ..primitives import conv2d, maxpool2d, relu
from ..primitives._checks import finite_result
from . import _terms as T
from .params import RMMParams

__all__ = ["DCNParams", "to_dcn", "from_dcn", "dcn_scores", "pinned_constant", "dcn_classify"]


@dataclasses.dataclass(frozen=True, eq=False)
class DCNParams:
    """A one-layer DCN classifier: conv -> ReLU -> (+ offsets) -> max-pool / maxout -> + class bias.

    Attributes
    ----------
    weights : array of shape (K, M, C, k, k)
        Filters ``w_{c,m}``.
    bias : array of shape (K, M) or (K, M, Hg, Wg)
        Conv bias per filter, or a bias map over positions (padded convolutions).
    class_bias : array of shape (K,)
        ``beta_c``, added after pooling.
    position_offset : array of shape (Hg, Wg)
        ``o_g``, added after the ReLU and before the max (``-inf`` excludes a position).
    image_shape : tuple of int
        ``(H, W)``.
    padding : int
        Zero padding of the convolution.
    pool : int or None
        ``None``: global max over positions; ``p``: ``p x p`` max-pooling (window form).
    """

    weights: Any
    bias: Any
    class_bias: Any
    position_offset: Any
    image_shape: tuple
    padding: int = 0
    pool: Optional[int] = None

    def __post_init__(self):
        xp = get_namespace(self.weights, self.bias, self.class_bias, self.position_offset,
                           names=("weights", "bias", "class_bias", "position_offset"))
        w = self.weights
        if not (w.dtype == xp.float32 or w.dtype == xp.float64):
            raise TypeError(f"weights must be a real floating array, got dtype {w.dtype}")
        if w.ndim != 5 or w.shape[3] != w.shape[4]:
            raise ValueError(f"weights must have shape (K, M, C, k, k), got {tuple(w.shape)}")
        K, M, _, k, _ = w.shape
        H, W = self.image_shape
        q = int(self.padding)
        grid = (H + 2 * q - k + 1, W + 2 * q - k + 1)
        if grid[0] < 1 or grid[1] < 1:
            raise ValueError(f"weights of side {k} do not fit image_shape {(H, W)} with padding {q}")
        if tuple(self.bias.shape) not in ((K, M), (K, M, *grid)):
            raise ValueError(f"bias must have shape (K, M) = {(K, M)} or (K, M, Hg, Wg) = {(K, M, *grid)}, "
                             f"got {tuple(self.bias.shape)}")
        if tuple(self.class_bias.shape) != (K,):
            raise ValueError(f"class_bias must have shape (K,) = ({K},), got {tuple(self.class_bias.shape)}")
        if tuple(self.position_offset.shape) != grid:
            raise ValueError(f"position_offset must have the grid's shape {grid}, "
                             f"got {tuple(self.position_offset.shape)}")
        for name in ("weights", "bias", "class_bias"):
            if not bool(xp.all(xp.isfinite(getattr(self, name)))):
                raise ValueError(f"{name} contains NaN or inf")
        if bool(xp.any(xp.isnan(self.position_offset))) or bool(xp.any(self.position_offset == math.inf)):
            raise ValueError("position_offset contains NaN or +inf (-inf is allowed: it excludes a position)")
        if self.pool is not None and (grid[0] % self.pool or grid[1] % self.pool):
            raise ValueError(f"pool {self.pool} does not divide the grid of positions {grid}")

    @property
    def grid_shape(self) -> tuple[int, int]:
        H, W = self.image_shape
        k = self.weights.shape[3]
        return H + 2 * self.padding - k + 1, W + 2 * self.padding - k + 1


def to_dcn(params: RMMParams) -> DCNParams:
    """Generative -> DCN (SPEC §1 R1, §4): always exact. See the module docstring for the map.

    The bias is a ``(K, M)`` vector when ``padding = 0`` and the clipped-norm map ``(K, M, Hg, Wg)`` otherwise.
    """
    T.check_params(params)
    xp = params.xp
    K = params.num_classes
    logodds = T.switch_log_odds(params)
    if params.padding == 0:
        sq = xp.sum(params.templates * params.templates, axis=(2, 3, 4))
        bias = -sq / (2 * params.sigma2) + logodds[:, None]
    else:
        bias = -T.clipped_norms(params) / (2 * params.sigma2) + xp.reshape(logodds, (K, 1, 1, 1))
    return DCNParams(weights=params.templates / params.sigma2, bias=bias, class_bias=T.class_log_constant(params),
                     position_offset=T.log_position_prior(params), image_shape=params.image_shape,
                     padding=params.padding, pool=params.pool)


def dcn_scores(dcn: DCNParams, images: Any) -> Any:
    """The DCN forward pass built from :mod:`drmm_ref.primitives` (SPEC §1, R1).

    ``conv2d`` -> ``+ b`` -> ``relu`` -> ``+ o_g`` -> max over sub-templates (maxout) -> global
    max over positions, or ``maxpool2d(., p)`` (window form) -> ``+ beta_c``.

    Parameters
    ----------
    dcn : DCNParams
    images : array of shape (N, C, H, W)

    Returns
    -------
    array of shape (N, K) or (N, K, Hg/p, Wg/p)
    """
    if not isinstance(dcn, DCNParams):
        raise TypeError(f"dcn must be a DCNParams, got {type(dcn).__name__}")
    xp = get_namespace(dcn.weights, images, names=("dcn.weights", "images"))
    K, M, C, k, _ = dcn.weights.shape
    if images.ndim != 4 or tuple(images.shape[1:]) != (C, *dcn.image_shape):
        raise ValueError(f"images must have shape (N, {C}, {dcn.image_shape[0]}, {dcn.image_shape[1]}), "
                         f"got {tuple(images.shape)}")
    if images.shape[0] < 1:
        raise ValueError(f"images must hold at least one image, got an empty batch of shape {tuple(images.shape)}")
    if images.dtype != dcn.weights.dtype:
        raise TypeError(f"images has dtype {images.dtype} but the DCN has {dcn.weights.dtype}; cast one of them")
    if not bool(xp.all(xp.isfinite(images))):
        raise ValueError("images contains NaN or inf; clean the data first")
    n = images.shape[0]
    hg, wg = dcn.grid_shape
    pre = conv2d(images, xp.reshape(dcn.weights, (K * M, C, k, k)), dcn.padding)
    bias = dcn.bias if dcn.bias.ndim == 4 else dcn.bias[:, :, None, None]
    h = relu(xp.reshape(pre, (n, K, M, hg, wg)) + bias) + dcn.position_offset
    h = xp.max(h, axis=2)  # maxout over sub-templates
    if dcn.pool is None:
        pooled = xp.max(h, axis=(2, 3))
        return finite_result(pooled + dcn.class_bias, "dcn_scores")
    pooled, _ = maxpool2d(h, dcn.pool)
    return finite_result(pooled + dcn.class_bias[:, None, None], "dcn_scores")


def dcn_classify(dcn: DCNParams, images: Any) -> Any:
    """``argmax_c`` of :func:`dcn_scores` (first class on ties); shape (N,) or (N, Rh, Rw)."""
    xp = get_namespace(dcn.weights)
    return xp.argmax(dcn_scores(dcn, images), axis=1)


def pinned_constant(params: RMMParams, images: Any) -> Any:
    """``kappa(I) = -||I||^2 / (2 sigma^2) - (D/2) ln(2 pi sigma^2)``: max-sum score minus DCN score, shape (N,)."""
    T.check_images(params, images)
    return T.image_log_constant(params, images)


def from_dcn(dcn: DCNParams, sigma2: float, *, shared_switch: bool = False, rtol: float = 1e-9) -> RMMParams:
    """DCN -> generative (SPEC §4): the RMM whose max-sum the DCN computes, for a chosen ``sigma^2``.

    .. math::

        \\mu = \\sigma^2 w, \\quad
        \\pi_{\\mathrm{on},c} = \\operatorname{sigmoid}\\big(b_{c,m} + \\sigma^2 \\|w_{c,m}\\|^2 / 2\\big), \\quad
        \\pi_c \\propto \\frac{M e^{\\beta_c}}{\\pi_{\\mathrm{off},c}}, \\quad \\pi_g \\propto e^{o_g}

    The window form normalises ``e^{o_g}`` within each window to get ``pi_{g | r}`` and stores the
    prior whose windows have equal mass.

    Parameters
    ----------
    dcn : DCNParams
    sigma2 : float
        The noise variance to give the model (any value > 0 gives an exact inverse).
    shared_switch : bool, default False
        Require one ``pi_on`` for all classes (SPEC §4: only when ``b_c + sigma^2 ||w_c||^2 / 2``
        is the same for every class).
    rtol : float
        Relative tolerance of the equality checks, on the scale ``1 + |b| + sigma^2 ||w||^2 / 2``.

    Raises
    ------
    ValueError
        When no RMM has this DCN as its max-sum: the logit ``b_{c,m} + sigma^2 ||w_{c,m}||^2/2``
        differs between sub-templates of one class (or between classes with ``shared_switch``), or
        a padded bias map is not the clipped-norm map plus a per-filter constant, or the position
        offsets are all ``-inf`` in some window.
    """
    if not isinstance(dcn, DCNParams):
        raise TypeError(f"dcn must be a DCNParams, got {type(dcn).__name__}")
    s2 = float(sigma2)
    if not math.isfinite(s2) or s2 <= 0:
        raise ValueError(f"sigma2 must be a finite number > 0, got {sigma2!r}")
    xp = get_namespace(dcn.weights)
    dev, dtype = device_of(dcn.weights), dcn.weights.dtype
    K, M, C, k, _ = dcn.weights.shape
    host = lambda a: np.asarray(to_numpy(a), dtype=np.float64)  # noqa: E731
    w, b = host(dcn.weights), host(dcn.bias)
    mu = s2 * w
    if dcn.padding > 0 and b.ndim == 2:  # a constant bias at padded positions: checked as a map (SPEC §1)
        b = np.broadcast_to(b[:, :, None, None], (K, M, *dcn.grid_shape))
    if b.ndim == 4:
        # The bias map must be -clipped_norm/(2 sigma^2) + constant per filter.
        probe = RMMParams(templates=xp.asarray(mu, dtype=dtype, device=dev),
                          class_prior=xp.asarray(np.full(K, 1.0 / K), dtype=dtype, device=dev),
                          switch_prior=0.5, sigma2=s2, image_shape=dcn.image_shape, padding=dcn.padding)
        norm_term = -host(T.clipped_norms(probe)) / (2 * s2)
        const = b - norm_term  # (K, M, Hg, Wg): must be constant over positions
        scale = 1 + np.abs(b) + np.abs(norm_term)
        spread = np.max(np.abs(const - const[:, :, :1, :1]) / scale)
        if spread > rtol:
            raise ValueError(
                "bias map is not the clipped-norm map -conv2d(1, mu^2, q)/(2 sigma^2) plus a constant per filter "
                f"(relative spread {spread:.2e} > rtol {rtol:g}): no RMM with sigma2={s2:g} has this DCN as its max-sum"
            )
        logit = const[:, :, 0, 0]
        scale = 1 + np.abs(b[:, :, 0, 0]) + np.abs(norm_term[:, :, 0, 0])
    else:
        half_norm = s2 * np.sum(w * w, axis=(2, 3, 4)) / 2
        logit = b + half_norm
        scale = 1 + np.abs(b) + half_norm
    # one switch prior per class: equal logits across sub-templates
    spread_m = np.max(np.abs(logit - logit[:, :1]) / scale)
    if spread_m > rtol:
        raise ValueError(
            "b_{c,m} + sigma^2 ||w_{c,m}||^2 / 2 differs between sub-templates of one class "
            f"(relative spread {spread_m:.2e} > rtol {rtol:g}); the RMM has one switch prior per class, "
            "so no RMM has this DCN as its max-sum (SPEC §4)"
        )
    logit_c = logit[:, 0]
    if shared_switch:
        spread_c = np.max(np.abs(logit_c - logit_c[0]) / scale[:, 0])
        if spread_c > rtol:
            raise ValueError(
                "shared_switch=True needs b_c + sigma^2 ||w_c||^2 / 2 equal for every class "
                f"(relative spread {spread_c:.2e} > rtol {rtol:g}); use per-class switch priors (SPEC §4)"
            )
    pi_on = 1.0 / (1.0 + np.exp(-logit_c))
    if np.any(pi_on <= 0) or np.any(pi_on >= 1):
        raise ValueError("the switch logit b + sigma^2 ||w||^2 / 2 is too large in magnitude for a probability "
                         "strictly inside (0, 1) in float64; choose another sigma2")
    # class prior: beta_c = ln pi_c + ln pi_off,c - ln M  ->  pi_c proportional to M e^beta / pi_off
    log_pc = host(dcn.class_bias) - np.log1p(-pi_on)
    log_pc -= log_pc.max()
    pc = np.exp(log_pc) / np.exp(log_pc).sum()
    # position prior
    off = host(dcn.position_offset)
    hg, wg = dcn.grid_shape
    if dcn.pool is None:
        if not np.any(np.isfinite(off)):
            raise ValueError("position_offset is -inf everywhere: no position has prior mass")
        e = np.exp(off - off[np.isfinite(off)].max())
        prior = e / e.sum()
    else:
        p = dcn.pool
        blocks = off.reshape(hg // p, p, wg // p, p)
        top = blocks.max(axis=(1, 3), keepdims=True)
        if not np.all(np.isfinite(top)):
            raise ValueError("position_offset is -inf over a whole pooling window: that window has no prior mass")
        e = np.exp(blocks - top)
        e = e / e.sum(axis=(1, 3), keepdims=True)
        prior = (e / ((hg // p) * (wg // p))).reshape(hg, wg)
    uniform = np.allclose(prior, prior.reshape(-1)[0], rtol=0, atol=1e-15)
    to_xp = lambda a: xp.asarray(a, dtype=dtype, device=dev)  # noqa: E731
    return RMMParams(templates=to_xp(mu), class_prior=to_xp(pc),
                     switch_prior=float(pi_on[0]) if shared_switch else to_xp(pi_on), sigma2=s2,
                     image_shape=dcn.image_shape, padding=dcn.padding,
                     nuisance_prior=None if uniform else to_xp(prior), pool=dcn.pool)
