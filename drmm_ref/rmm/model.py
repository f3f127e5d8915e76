"""The shallow RMM as a probabilistic model: rendering, sampling, log joint and exact inference.

SPEC §1 (Patel et al. 2016 §2.1). With the terms of :mod:`drmm_ref.rmm._terms`,

.. math::

    \\ln p(I, c, m, g, a) = \\kappa(I) + \\beta_c + \\ln\\pi_g + a\\, u_{c,m,g}(I)

(``kappa`` the image constant, ``beta_c = ln pi_c + ln pi_off,c - ln M``). The switch, then the
position and sub-template, are summed (sum-product) or maximised (max-sum) in closed form:

.. math::

    \\ln p(I, c) &= \\kappa + \\beta_c
        + \\operatorname{lse}_{m,g}\\big[\\ln\\pi_g + \\operatorname{softplus}(u_{c,m,g})\\big] \\\\
    \\max_{m,g,a} \\ln p(I, c, m, g, a) &= \\kappa + \\beta_c
        + \\max_{m,g}\\big[\\ln\\pi_g + \\operatorname{ReLU}(u_{c,m,g})\\big]

and :func:`tempered_class_scores` interpolates between them (SPEC §1, R2). Every function is
vectorised over examples, classes, sub-templates and positions (no Python loops over them).

Bad input is an error naming the argument (``docs/guarantees.md``): an empty batch, float class
indices, a count that is not an integer; and a result that overflows the working dtype (float32
images of magnitude 1e30, say) raises ``ValueError`` instead of returning inf or NaN.

Window form (``params.pool = p``): every result carries the window axes ``(Rh, Rw)`` after the
example (and class) axes: it is the result of the model whose nuisance is restricted to that window.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from .._backend import asarray, device_of, get_namespace, to_numpy
from ..primitives import conv2d_transpose, logsumexp, softmax
from ..primitives._checks import finite_result
from . import _terms as T
from .params import RMMParams

__all__ = [
    "Latents",
    "Posterior",
    "render",
    "sample",
    "log_joint",
    "max_sum_scores",
    "map_estimate",
    "tempered_class_scores",
    "class_log_marginal",
    "class_posterior",
    "log_likelihood",
    "posterior",
]

# One-hot rendering buffers larger than this are built a chunk of examples at a time.
_RENDER_CHUNK = 1 << 24


@dataclasses.dataclass(frozen=True, eq=False)
class Latents:
    """Latent variables other than the class, one entry per example (and per window in the window form).

    Attributes
    ----------
    subtemplates : int array of shape (N, ...)
        ``m`` in ``[0, M)``.
    positions : int array of shape (N, ..., 2)
        ``g`` as (row, column) on the grid of positions (``(Hg, Wg)``, SPEC §1): the top-left
        corner of the stamp sits at image pixel ``(row - q, column - q)``.
    switches : int array of shape (N, ...)
        ``a`` in ``{0, 1}``.
    """

    subtemplates: Any
    positions: Any
    switches: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Posterior:
    """The exact posterior over ``(c, m, g, a)``, stored as its two switch slices (SPEC §1, soft E-step).

    Attributes
    ----------
    responsibilities : array of shape (N, K, M, Hg, Wg)
        ``p(c, m, g | I)`` (the switch summed out). Sums to one over ``(c, m, g)`` (global form)
        or over ``c, m`` and the positions of each window (window form).
    responsibilities_on : array of shape (N, K, M, Hg, Wg)
        ``r[..., a = 1] = p(c, m, g, a = 1 | I)``: what the M-step's template and ``pi_on`` updates use.
    log_evidence : array of shape (N,) or (N, Rh, Rw)
        ``ln p(I)``, or ``ln p(I, y)`` when the class was clamped to the label ``y``.
    """

    responsibilities: Any
    responsibilities_on: Any
    log_evidence: Any

    @property
    def switch_on(self) -> Any:
        """``p(a = 1 | c, m, g, I) = sigmoid(u)`` where ``p(c, m, g | I) > 0``; 0 where it underflows to 0."""
        return _switch_probability(self.responsibilities, self.responsibilities_on)


def _switch_probability(resp: Any, resp_on: Any) -> Any:
    xp = get_namespace(resp, resp_on)
    positive = resp > 0
    one = xp.ones((), dtype=resp.dtype, device=device_of(resp))
    return xp.where(positive, resp_on / xp.where(positive, resp, one), xp.zeros_like(resp))


# ---------------------------------------------------------------------------------------------
# argument checks
# ---------------------------------------------------------------------------------------------
def _check_classes(params: RMMParams, classes: Any, n: int, name: str = "classes") -> Any:
    xp = get_namespace(params.templates, classes, names=("params.templates", name))
    if not xp.isdtype(classes.dtype, "integral"):
        raise TypeError(f"{name} must be an integer array of class indices, got dtype {classes.dtype}")
    if classes.ndim < 1 or classes.shape[0] != n:
        raise ValueError(f"{name} must have shape (N,) = ({n},) (or (N, ...) matching the latents), "
                         f"got {tuple(classes.shape)}")
    if classes.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0): the batch must hold at least one example")
    if bool(xp.any(classes < 0)) or bool(xp.any(classes >= params.num_classes)):
        raise ValueError(f"{name} must lie in [0, {params.num_classes - 1}] (K = {params.num_classes} classes)")
    return xp


def _check_latents(params: RMMParams, latents: Any, shape: tuple, xp: Any) -> None:
    if not isinstance(latents, Latents):
        raise TypeError(f"latents must be a Latents, got {type(latents).__name__}")
    hg, wg = params.grid_shape
    for name, arr, hi in (("latents.subtemplates", latents.subtemplates, params.num_subtemplates),
                          ("latents.switches", latents.switches, 2)):
        get_namespace(params.templates, arr, names=("params.templates", name))
        if not xp.isdtype(arr.dtype, "integral"):
            raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
        if tuple(arr.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (that of classes), got {tuple(arr.shape)}")
        if bool(xp.any(arr < 0)) or bool(xp.any(arr >= hi)):
            raise ValueError(f"{name} must lie in [0, {hi - 1}]")
    pos = latents.positions
    get_namespace(params.templates, pos, names=("params.templates", "latents.positions"))
    if not xp.isdtype(pos.dtype, "integral"):
        raise TypeError(f"latents.positions must be an integer array, got dtype {pos.dtype}")
    if tuple(pos.shape) != (*shape, 2):
        raise ValueError(f"latents.positions must have shape {(*shape, 2)}, got {tuple(pos.shape)}")
    rows, cols = pos[..., 0], pos[..., 1]
    if bool(xp.any(rows < 0)) or bool(xp.any(rows >= hg)) or bool(xp.any(cols < 0)) or bool(xp.any(cols >= wg)):
        raise ValueError(f"latents.positions must lie on the grid of positions [0, {hg - 1}] x [0, {wg - 1}]")


def _one_hot(index: Any, size: int, dtype: Any, xp: Any) -> Any:
    """``(B,) -> (B, size)`` one-hot of integer indices, in ``dtype``."""
    slots = xp.arange(size, dtype=index.dtype, device=device_of(index))
    return xp.astype(xp.expand_dims(index, axis=-1) == slots, dtype)


# ---------------------------------------------------------------------------------------------
# rendering, sampling, log joint
# ---------------------------------------------------------------------------------------------
def render(params: RMMParams, classes: Any, latents: Latents) -> Any:
    """The noiseless image ``a T_g mu_{c,m}`` of every configuration (SPEC §1).

    Rendering is :func:`~drmm_ref.primitives.conv2d_transpose` of a one-hot map of the
    configuration: it stamps ``mu_{c,m}`` with its top-left corner at pixel ``g - q`` and clips
    the part that falls outside the image.

    Parameters
    ----------
    params : RMMParams
    classes : int array of shape (B,)
    latents : Latents
        Entries of shape (B,) (positions (B, 2)).

    Returns
    -------
    array of shape (B, C, H, W)
    """
    xp = _check_classes(params, classes, classes.shape[0] if classes.ndim else -1)
    if classes.ndim != 1:
        raise ValueError(f"classes must have shape (B,) to render, got {tuple(classes.shape)}")
    _check_latents(params, latents, tuple(classes.shape), xp)
    K, M, C, k = params.num_classes, params.num_subtemplates, params.channels, params.kernel
    hg, wg = params.grid_shape
    b = classes.shape[0]
    filt = xp.reshape(params.templates, (K * M, C, k, k))
    channel = classes * M + latents.subtemplates
    cell = latents.positions[:, 0] * wg + latents.positions[:, 1]
    on = xp.astype(latents.switches, params.dtype)
    step = max(1, _RENDER_CHUNK // (K * M * hg * wg))
    outs = []
    for s in range(0, b, step):  # chunks of examples bound the one-hot buffer's memory
        e = min(s + step, b)
        hot = (_one_hot(channel[s:e], K * M, params.dtype, xp)[:, :, None]
               * _one_hot(cell[s:e], hg * wg, params.dtype, xp)[:, None, :])
        hot = xp.reshape(hot * on[s:e, None, None], (e - s, K * M, hg, wg))
        outs.append(conv2d_transpose(hot, filt, params.padding))
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)


def _effective_position_prior(params: RMMParams) -> np.ndarray:
    """Host distribution of ``g`` over the whole grid, for :func:`sample`.

    Window form: a uniform window, then ``pi_{g | r}``.
    """
    hg, wg = params.grid_shape
    if params.nuisance_prior is None:
        return np.full(hg * wg, 1.0 / (hg * wg))
    prior = np.asarray(to_numpy(params.nuisance_prior), dtype=np.float64)
    if params.pool is not None:
        p = params.pool
        blocks = prior.reshape(hg // p, p, wg // p, p)
        blocks = blocks / blocks.sum(axis=(1, 3), keepdims=True) / ((hg // p) * (wg // p))
        prior = blocks.reshape(hg, wg)
    prior = prior.reshape(-1)
    return prior / prior.sum()


def sample(params: RMMParams, n: int, seed: Any = None) -> tuple[Any, Any, Latents]:
    """Draw ``n`` images from the RMM (SPEC §1).

    ``c ~ pi_c``, ``m ~ U{0..M-1}``, ``g ~ pi_g`` (window form: a uniform window, then
    ``pi_{g|r}``), ``a ~ Bernoulli(pi_on,c)``, ``I = a T_g mu_{c,m} + sigma eps``. Random numbers come
    from ``numpy.random.default_rng(seed)`` on the host and are moved to the model's namespace and device.

    Parameters
    ----------
    params : RMMParams
    n : int
        Number of images (>= 1).
    seed : int, SeedSequence or Generator, optional

    Returns
    -------
    images : array of shape (n, C, H, W)
    classes : int64 array of shape (n,)
    latents : Latents
        ``subtemplates`` (n,), ``positions`` (n, 2), ``switches`` (n,).
    """
    T.check_params(params)
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    xp, dev = params.xp, device_of(params.templates)
    hg, wg = params.grid_shape
    cp = np.asarray(to_numpy(params.class_prior), dtype=np.float64)
    classes = rng.choice(params.num_classes, size=n, p=cp / cp.sum())
    subs = rng.integers(0, params.num_subtemplates, size=n)
    cells = rng.choice(hg * wg, size=n, p=_effective_position_prior(params))
    on = np.asarray(to_numpy(params.switch_prior), dtype=np.float64)[classes]
    switches = (rng.random(n) < on).astype(np.int64)
    noise = rng.standard_normal((n, params.channels, *params.image_shape)) * math.sqrt(params.sigma2)
    put = lambda a: asarray(a, xp=xp, device=dev)  # noqa: E731
    classes_x = put(classes.astype(np.int64))
    latents = Latents(put(subs.astype(np.int64)), put(np.stack([cells // wg, cells % wg], axis=1).astype(np.int64)),
                      put(switches))
    images = render(params, classes_x, latents) + asarray(noise, xp=xp, dtype=params.dtype, device=dev)
    return images, classes_x, latents


def log_joint(params: RMMParams, images: Any, classes: Any, latents: Latents) -> Any:
    """``ln p(I, c, m, g, a)`` computed from the rendered image (SPEC §1), not from the expanded terms.

    .. math:: -\\frac{\\|I - a T_g \\mu_{c,m}\\|^2}{2\\sigma^2} - \\frac D2 \\ln(2\\pi\\sigma^2)
              + \\ln\\pi_c - \\ln M + \\ln\\pi_g + \\ln\\pi_a

    (window form: ``ln pi_{g | r}`` with ``r`` the window of ``g``).

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    classes : int array of shape (N,) or (N, ...)
        With extra axes (e.g. the window axes of a window-form MAP), every entry is scored
        against its example's image.
    latents : Latents
        Entries shaped like ``classes``.

    Returns
    -------
    array of shape of ``classes``
    """
    xp = T.check_images(params, images)
    n = images.shape[0]
    _check_classes(params, classes, n)
    shape = tuple(classes.shape)
    _check_latents(params, latents, shape, xp)
    b = math.prod(shape)
    extra = b // n
    flat = lambda a: xp.reshape(a, (b,))  # noqa: E731
    flat_latents = Latents(flat(latents.subtemplates), xp.reshape(latents.positions, (b, 2)), flat(latents.switches))
    c = flat(classes)
    mean = render(params, c, flat_latents)
    imgs = xp.reshape(xp.broadcast_to(images[:, None, ...], (n, extra, *images.shape[1:])), (b, *images.shape[1:]))
    resid = imgs - mean
    sq = finite_result(xp.sum(resid * resid, axis=(1, 2, 3)), "log_joint (the squared residual ||I - mu||^2)")
    _, wg = params.grid_shape
    log_pos = xp.take(xp.reshape(T.log_position_prior(params), (-1,)),
                      flat_latents.positions[:, 0] * wg + flat_latents.positions[:, 1])
    pi_on = xp.take(params.switch_prior, c)
    a = xp.astype(flat_latents.switches, params.dtype)
    log_switch = a * xp.log(pi_on) + (1 - a) * xp.log(1 - pi_on)
    out = (-sq / (2 * params.sigma2) - 0.5 * params.num_pixels * math.log(2 * math.pi * params.sigma2)
           + xp.log(xp.take(params.class_prior, c)) - math.log(params.num_subtemplates) + log_pos + log_switch)
    return xp.reshape(out, shape)


# ---------------------------------------------------------------------------------------------
# exact inference
# ---------------------------------------------------------------------------------------------
def _squeeze_windows(x: Any, params: RMMParams, axis: int) -> Any:
    """Drop the two singleton window axes starting at ``axis`` in the global form."""
    if params.pool is not None:
        return x
    xp = get_namespace(x)
    return xp.squeeze(x, axis=(axis, axis + 1))


def _sum_product_messages(params: RMMParams, images: Any, tau: float) -> Any:
    """``tau ln pi_g + softplus(tau u)`` by model: shape (N, K, Rh, Rw, M*S) (the switch summed out)."""
    logpos = T.log_position_prior(params)
    return _by_model(tau * logpos + T.softplus(tau * T.evidence(params, images)), params)


def _by_model(x: Any, params: RMMParams) -> Any:
    """``(N, K, M, Hg, Wg) -> (N, K, Rh, Rw, M*S)`` (a free reshape in the global form with M = 1)."""
    xp = params.xp
    r = T.to_regions(x, params)  # (N, K, M, Rh, Rw, S)
    n, K, M, rh, rw, s = r.shape
    if M == 1 or (rh == 1 and rw == 1):  # moving singleton axes: no data movement
        return xp.reshape(r, (n, K, rh, rw, M * s))
    return xp.reshape(xp.permute_dims(r, (0, 1, 3, 4, 2, 5)), (n, K, rh, rw, M * s))


def _class_offset(params: RMMParams, images: Any) -> Any:
    """``kappa(I) + beta_c`` broadcast to (N, K, 1, 1)."""
    xp = params.xp
    return (T.image_log_constant(params, images)[:, None, None, None]
            + xp.reshape(T.class_log_constant(params), (1, -1, 1, 1)))


def _max_sum(params: RMMParams, images: Any, want_argmax: bool) -> tuple[Any, Any, Any]:
    """Per class and model: ``max_{m,g} [ln pi_g + ReLU(u)]``, its first argmax and whether its switch is on.

    ``max(ln pi_g + u, ln pi_g)`` is maximised in two parts: the switched-on terms
    ``conv + (b + ln pi_g)`` (one pass over the full array, then one reduction) and the switched-off
    terms ``ln pi_g`` (image-independent, on the small grid). The switch is on iff the on-part wins
    strictly (ties go to ``a = 0``, whose position is the first maximum of ``ln pi_g``).

    Returns
    -------
    best : array of shape (N, K, Rh, Rw)
    index : int array of shape (N, K, Rh, Rw) or None
        Flat ``m * S + s`` index of the maximiser within the model (None unless ``want_argmax``).
    on : bool array of shape (N, K, Rh, Rw)
    """
    xp = params.xp
    logpos = T.log_position_prior(params)
    conv, bias = T.evidence_parts(params, images)
    terms_on = _by_model(conv + (bias + logpos), params)  # (N, K, Rh, Rw, M*S)
    off = T.to_regions(logpos, params)  # (Rh, Rw, S)
    best_off = xp.max(off, axis=-1)
    if want_argmax:
        idx_on = xp.argmax(terms_on, axis=-1)
        best_on = xp.squeeze(xp.take_along_axis(terms_on, xp.expand_dims(idx_on, axis=-1), axis=-1), axis=-1)
    else:
        idx_on, best_on = None, xp.max(terms_on, axis=-1)
    on = best_on > best_off
    best = xp.where(on, best_on, best_off)
    index = None
    if want_argmax:
        idx_off = xp.astype(xp.argmax(off, axis=-1), idx_on.dtype)
        index = xp.where(on, idx_on, xp.broadcast_to(idx_off, idx_on.shape))
    return best, index, on


def max_sum_scores(params: RMMParams, images: Any) -> Any:
    """Max-sum class scores ``max_{m,g,a} ln p(I, c, m, g, a)`` (SPEC §1, R1).

    .. math:: \\kappa(I) + \\ln\\pi_c + \\ln\\pi_{\\mathrm{off},c} - \\ln M
              + \\max_{m,g}\\big[\\ln\\pi_g + \\mathrm{ReLU}(u_{c,m,g}(I))\\big]

    Returns
    -------
    array of shape (N, K) (global form) or (N, K, Rh, Rw) (window form)
    """
    T.check_images(params, images)
    best, _, _ = _max_sum(params, images, want_argmax=False)
    return finite_result(_squeeze_windows(best + _class_offset(params, images), params, 2), "max_sum_scores")


def map_estimate(params: RMMParams, images: Any, classes: Optional[Any] = None) -> tuple[Any, Latents, Any]:
    """MAP configuration ``argmax_{c,m,g,a} ln p(I, c, m, g, a)`` by max-sum (SPEC §1).

    The switch is maximised first (``max(0, u)``: ``a = 1`` iff ``u > 0``), then ``(m, g)`` per
    class, then ``c``. Ties (equal scores): the first class; within a class a switched-on
    configuration wins only strictly, else ``a = 0`` at the first maximum of ``ln pi_g``; among
    switched-on ones, the first in (sub-template, row-major position within the window) order.

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    classes : int array of shape (N,), optional
        Clamp ``c`` to these labels and maximise over ``(m, g, a)`` only (supervised hard EM).

    Returns
    -------
    classes : int64 array of shape (N,) or (N, Rh, Rw)
    latents : Latents
        ``positions`` of shape (N, 2) or (N, Rh, Rw, 2), on the grid of positions.
    scores : array of shape (N,) or (N, Rh, Rw)
        ``ln p(I, c, m, g, a)`` at the MAP.
    """
    xp = T.check_images(params, images)
    n = images.shape[0]
    K = params.num_classes
    dev = device_of(images)
    best_msg, idx, on = _max_sum(params, images, want_argmax=True)  # (N, K, Rh, Rw) each
    best = finite_result(best_msg + _class_offset(params, images), "map_estimate (the max-sum scores)")
    if classes is None:
        cls = xp.astype(xp.argmax(best, axis=1), xp.int64)  # (N, Rh, Rw)
    else:
        _check_classes(params, classes, n)
        if classes.ndim != 1:
            raise ValueError(f"classes must have shape (N,), got {tuple(classes.shape)}")
        cls = xp.broadcast_to(xp.astype(classes, xp.int64)[:, None, None], best.shape[:1] + best.shape[2:])
    pick = xp.arange(K, dtype=xp.int64, device=dev)[None, :, None, None] == cls[:, None, ...]
    zero_f = xp.zeros((), dtype=best.dtype, device=dev)
    score = xp.sum(xp.where(pick, best, zero_f), axis=1)
    flat = xp.sum(xp.where(pick, xp.astype(idx, xp.int64), xp.zeros((), dtype=xp.int64, device=dev)), axis=1)
    s = params.positions_per_model
    sub, cell = flat // s, flat % s
    _, wg = params.grid_shape
    if params.pool is None:
        rows, cols = cell // wg, cell % wg
    else:
        p = params.pool
        rh, rw = params.windows_shape
        rows = xp.arange(rh, dtype=xp.int64, device=dev)[None, :, None] * p + cell // p
        cols = xp.arange(rw, dtype=xp.int64, device=dev)[None, None, :] * p + cell % p
    switches = xp.astype(xp.any(pick & on, axis=1), xp.int64)
    latents = Latents(sub, xp.stack([rows, cols], axis=-1), switches)
    if params.pool is None:
        latents = Latents(sub[:, 0, 0], latents.positions[:, 0, 0, :], switches[:, 0, 0])
        return cls[:, 0, 0], latents, score[:, 0, 0]
    return cls, latents, score


def tempered_class_scores(params: RMMParams, images: Any, inverse_temperature: float) -> Any:
    """``(1/tau) lse_{m,g,a} [tau ln p(I, c, m, g, a)]``: sum-product at ``tau = 1``, max-sum as ``tau -> inf``.

    With energies fixed at a reference ``sigma_0`` (SPEC §1, R2), ``sigma_0^2`` times this at
    ``tau = sigma_0^2 / sigma^2`` is the sum-product score ``S_c = sigma^2 lse(E / sigma^2)`` (up to the
    class-independent ``sigma_0^2 kappa(I)``). The switch is summed in closed form,

    .. math:: \\frac1\\tau \\operatorname{lse}_a \\tau(\\ell_0 + a u)
              = \\ell_0 + \\frac1\\tau \\operatorname{softplus}(\\tau u),

    so ``0 <= tempered - max_sum <= ln(2 M |G|) / tau`` (a theorem the R2 claim checks).

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    inverse_temperature : float
        ``tau > 0``.

    Returns
    -------
    array of shape (N, K) or (N, K, Rh, Rw)
    """
    T.check_images(params, images)
    tau = float(inverse_temperature)
    if not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"inverse_temperature must be a finite number > 0, got {inverse_temperature!r}")
    msg = _sum_product_messages(params, images, tau)
    out = _squeeze_windows(logsumexp(msg, axis=-1) / tau + _class_offset(params, images), params, 2)
    return finite_result(out, "tempered_class_scores (ln p(I, c))")


def class_log_marginal(params: RMMParams, images: Any) -> Any:
    """``ln p(I, c)`` by sum-product over ``(m, g, a)`` (SPEC §1); shape (N, K) or (N, K, Rh, Rw)."""
    return tempered_class_scores(params, images, 1.0)


def class_posterior(params: RMMParams, images: Any) -> Any:
    """``p(c | I)``: softmax over classes of :func:`class_log_marginal` (stable in float32)."""
    return softmax(class_log_marginal(params, images), axis=1)


def log_likelihood(params: RMMParams, images: Any) -> Any:
    """``ln p(I)``; shape (N,) or (N, Rh, Rw)."""
    return logsumexp(class_log_marginal(params, images), axis=1)


def posterior(params: RMMParams, images: Any, classes: Optional[Any] = None) -> Posterior:
    """Exact posterior over ``(c, m, g, a)`` by sum-product (SPEC §1, soft E-step).

    .. math::

        p(c, m, g \\mid I) = \\exp\\big(\\beta_c + \\ln\\pi_g + \\operatorname{softplus}(u_{c,m,g})
                                      + \\kappa - \\ln p(I)\\big),
        \\qquad p(a = 1 \\mid c, m, g, I) = \\sigma(u_{c,m,g})

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    classes : int array of shape (N,), optional
        Clamp ``c`` to the labels: the posterior over ``(m, g, a)`` given ``(I, y)``, and
        ``log_evidence = ln p(I, y)`` (supervised EM).

    Returns
    -------
    Posterior
    """
    xp = T.check_images(params, images)
    n = images.shape[0]
    K = params.num_classes
    dev = device_of(images)
    # With prior = beta_c + ln pi_g and w = u + prior (= conv + (bias + prior): one pass), the switch sums to
    #   exp(ell) = exp(prior) + exp(w),   ell = prior + softplus(u),
    # so one full-size exp gives p(c, m, g | I), p(c, m, g, a = 1 | I) and ln p(I).
    conv, bias = T.evidence_parts(params, images)
    prior = xp.reshape(T.class_log_constant(params), (K, 1, 1, 1)) + T.log_position_prior(params)  # (K, 1, Hg, Wg)
    w = conv + (bias + prior)  # (N, K, M, Hg, Wg)
    keep = None
    if classes is not None:
        _check_classes(params, classes, n)
        if classes.ndim != 1:
            raise ValueError(f"classes must have shape (N,), got {tuple(classes.shape)}")
        keep = xp.arange(K, dtype=classes.dtype, device=dev)[None, :] == classes[:, None]  # (N, K)
        zero = xp.zeros((), dtype=w.dtype, device=dev)
        w = w + xp.reshape(xp.where(keep, zero, T.neg_inf(w, xp)), (n, K, 1, 1, 1))
    w_r = T.to_regions(w, params)  # (N, K, M, Rh, Rw, S)
    prior_r = T.to_regions(xp.broadcast_to(prior, (K, params.num_subtemplates, *params.grid_shape)), params)
    prior_top = xp.max(prior_r, axis=(1, 4))  # (K, Rh, Rw): the largest prior term of each class and model
    per_class = prior_top[None, ...] if keep is None else xp.where(
        keep[:, :, None, None], prior_top[None, ...], T.neg_inf(prior_top, xp))
    top = xp.maximum(xp.max(w_r, axis=(1, 2, 5)), xp.max(per_class, axis=1))  # (N, Rh, Rw): >= every exponent
    top6 = top[:, None, None, :, :, None]
    on = xp.exp(w_r - top6)  # exp(w - top) <= 1
    # exp(prior - top) = exp(prior - prior_top) * exp(prior_top - top): a small factor per (n, c, window)
    zero = xp.zeros((), dtype=w.dtype, device=dev)
    scale = xp.exp(xp.minimum(prior_top[None, ...] - top[:, None, ...], zero))  # (N, K, Rh, Rw)
    if keep is not None:
        scale = scale * xp.astype(keep, w.dtype)[:, :, None, None]
    off = xp.exp(prior_r - prior_top[:, None, :, :, None])[None, ...]  # (1, K, M, Rh, Rw, S), small
    e = on + off * scale[:, :, None, :, :, None]  # exp(ell - top)
    total = xp.sum(e, axis=(1, 2, 5), keepdims=True)  # >= 1 (the top term is exp(0))
    inv = 1 / total
    resp = T.from_regions(e * inv, params)
    resp_on = T.from_regions(on * inv, params)  # p(c, m, g, a = 1 | I) = exp(w) / sum exp(ell)
    log_ev = (xp.reshape(xp.log(total), (n, *params.windows_shape)) + top
              + T.image_log_constant(params, images)[:, None, None])
    if params.pool is None:
        log_ev = log_ev[:, 0, 0]
    finite_result(log_ev, "posterior (ln p(I))")
    return Posterior(resp, resp_on, log_ev)
