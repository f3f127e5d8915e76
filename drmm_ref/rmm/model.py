"""The shallow RMM as a probabilistic model: rendering, sampling, log joint and exact inference.

SPEC §1 (Patel et al. 2016 §2.1). With the terms of :mod:`drmm_ref.rmm._terms`,

.. math::

    \\ln p(I, c, m, g, a) = \\kappa(I) + \\beta_c + \\ln\\pi_g + a\\, u_{c,m,g}(I)

(``kappa`` the image constant, ``beta_c = ln pi_c + ln pi_off,c - ln M``). The switch, then the
position and sub-template, are summed (sum-product) or maximised (max-sum) in closed form:

.. math::

    \\ln p(I, c) &= \\kappa + \\beta_c + \\operatorname{lse}_{m,g}\\big[\\ln\\pi_g + \\operatorname{softplus}(u_{c,m,g})\\big] \\\\
    \\max_{m,g,a} \\ln p(I, c, m, g, a) &= \\kappa + \\beta_c + \\max_{m,g}\\big[\\ln\\pi_g + \\operatorname{ReLU}(u_{c,m,g})\\big]

and :func:`tempered_class_scores` interpolates between them (SPEC §1, R2). Every function is
vectorised over examples, classes, sub-templates and positions (no Python loops over them).

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
    """The exact posterior over ``(c, m, g, a)``, stored factorised (SPEC §1, EM soft E-step).

    Attributes
    ----------
    responsibilities : array of shape (N, K, M, Hg, Wg)
        ``p(c, m, g | I)`` (the switch summed out). Sums to one over ``(c, m, g)`` (global form)
        or over ``c, m`` and the positions of each window (window form).
    switch_on : array of shape (N, K, M, Hg, Wg)
        ``p(a = 1 | c, m, g, I) = sigmoid(u)``; ``r[..., a=1] = responsibilities * switch_on``.
    log_evidence : array of shape (N,) or (N, Rh, Rw)
        ``ln p(I)``, or ``ln p(I, y)`` when the class was clamped to the label ``y``.
    """

    responsibilities: Any
    switch_on: Any
    log_evidence: Any


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
        hot = _one_hot(channel[s:e], K * M, params.dtype, xp)[:, :, None] * _one_hot(cell[s:e], hg * wg, params.dtype, xp)[:, None, :]
        hot = xp.reshape(hot * on[s:e, None, None], (e - s, K * M, hg, wg))
        outs.append(conv2d_transpose(hot, filt, params.padding))
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)


def _effective_position_prior(params: RMMParams) -> np.ndarray:
    """Host distribution of ``g`` over the whole grid used by :func:`sample` (window: uniform window, then ``pi_{g|r}``)."""
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
    sq = xp.sum(resid * resid, axis=(1, 2, 3))
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


def _per_class_messages(params: RMMParams, images: Any, how: str, tau: float = 1.0) -> Any:
    """``ln pi_g + ReLU(u)`` (max-sum) or ``tau ln pi_g + softplus(tau u)`` (sum-product), by region.

    Returns an array of shape (N, K, Rh, Rw, M*S): each model's (sub-template, position) terms on the last axis.
    """
    xp = params.xp
    u = T.evidence(params, images)
    logpos = T.log_position_prior(params)
    if how == "max":
        zero = xp.zeros((), dtype=u.dtype, device=device_of(u))
        msg = logpos + xp.maximum(u, zero)
    else:
        msg = tau * logpos + T.softplus(tau * u)
    r = T.to_regions(msg, params)  # (N, K, M, Rh, Rw, S)
    n, K, M, rh, rw, s = r.shape
    return xp.reshape(xp.permute_dims(r, (0, 1, 3, 4, 2, 5)), (n, K, rh, rw, M * s))


def _class_offset(params: RMMParams, images: Any) -> Any:
    """``kappa(I) + beta_c`` broadcast to (N, K, 1, 1)."""
    xp = params.xp
    return (T.image_log_constant(params, images)[:, None, None, None]
            + xp.reshape(T.class_log_constant(params), (1, -1, 1, 1)))


def max_sum_scores(params: RMMParams, images: Any) -> Any:
    """Max-sum class scores ``max_{m,g,a} ln p(I, c, m, g, a)`` (SPEC §1, R1).

    .. math:: \\kappa(I) + \\ln\\pi_c + \\ln\\pi_{\\mathrm{off},c} - \\ln M
              + \\max_{m,g}\\big[\\ln\\pi_g + \\mathrm{ReLU}(u_{c,m,g}(I))\\big]

    Returns
    -------
    array of shape (N, K) (global form) or (N, K, Rh, Rw) (window form)
    """
    T.check_images(params, images)
    xp = params.xp
    best = xp.max(_per_class_messages(params, images, "max"), axis=-1)
    return _squeeze_windows(best + _class_offset(params, images), params, 2)


def map_estimate(params: RMMParams, images: Any, classes: Optional[Any] = None) -> tuple[Any, Latents, Any]:
    """MAP configuration ``argmax_{c,m,g,a} ln p(I, c, m, g, a)`` by max-sum (SPEC §1).

    The switch is maximised first (``max(0, u)``: ``a = 1`` iff ``u > 0``), then ``(m, g)`` per
    class, then ``c``. Ties go to the first maximum in the order class, sub-template, row-major
    position (within the window), and to ``a = 0``.

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
    K, M = params.num_classes, params.num_subtemplates
    dev = device_of(images)
    msg = _per_class_messages(params, images, "max")  # (N, K, Rh, Rw, M*S)
    best = xp.max(msg, axis=-1) + _class_offset(params, images)  # (N, K, Rh, Rw)
    idx = xp.argmax(msg, axis=-1)  # (N, K, Rh, Rw)
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
    hg, wg = params.grid_shape
    if params.pool is None:
        rows, cols = cell // wg, cell % wg
    else:
        p = params.pool
        rh, rw = params.windows_shape
        rows = xp.arange(rh, dtype=xp.int64, device=dev)[None, :, None] * p + cell // p
        cols = xp.arange(rw, dtype=xp.int64, device=dev)[None, None, :] * p + cell % p
    # the switch: on iff the evidence of the chosen (c, m, g) is positive
    u_r = T.to_regions(T.evidence(params, images), params)  # (N, K, M, Rh, Rw, S)
    u_r = xp.reshape(xp.permute_dims(u_r, (0, 1, 3, 4, 2, 5)), msg.shape)
    u_c = xp.sum(xp.where(pick[..., None], u_r, zero_f), axis=1)  # (N, Rh, Rw, M*S)
    slot = xp.arange(M * s, dtype=xp.int64, device=dev) == flat[..., None]
    u_sel = xp.sum(xp.where(slot, u_c, zero_f), axis=-1)
    switches = xp.astype(u_sel > 0, xp.int64)
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

    .. math:: \\frac1\\tau \\operatorname{lse}_a \\tau(\\ell_0 + a u) = \\ell_0 + \\frac1\\tau \\operatorname{softplus}(\\tau u),

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
    msg = _per_class_messages(params, images, "sum", tau)
    return _squeeze_windows(logsumexp(msg, axis=-1) / tau + _class_offset(params, images), params, 2)


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

        p(c, m, g \\mid I) = \\exp\\big(\\beta_c + \\ln\\pi_g + \\operatorname{softplus}(u_{c,m,g}) + \\kappa - \\ln p(I)\\big),
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
    u = T.evidence(params, images)  # (N, K, M, Hg, Wg)
    ell = (xp.reshape(T.class_log_constant(params), (1, K, 1, 1, 1)) + T.log_position_prior(params)
           + T.softplus(u))
    if classes is not None:
        _check_classes(params, classes, n)
        if classes.ndim != 1:
            raise ValueError(f"classes must have shape (N,), got {tuple(classes.shape)}")
        keep = xp.arange(K, dtype=classes.dtype, device=dev)[None, :] == classes[:, None]
        ell = xp.where(keep[:, :, None, None, None], ell, T.neg_inf(ell, xp))
    r = T.to_regions(ell, params)  # (N, K, M, Rh, Rw, S)
    lse = logsumexp(r, axis=(1, 2, 5), keepdims=True)
    resp = T.from_regions(xp.exp(r - lse), params)
    switch_on = xp.exp(u - T.softplus(u))
    log_ev = xp.reshape(lse, (n, *params.windows_shape)) + T.image_log_constant(params, images)[:, None, None]
    if params.pool is None:
        log_ev = log_ev[:, 0, 0]
    return Posterior(resp, switch_on, log_ev)
