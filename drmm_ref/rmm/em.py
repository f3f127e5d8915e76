"""EM for the shallow RMM: soft and hard, supervised and unsupervised (SPEC §1, claim R3).

Pure functions in the style of scikit-learn's ``GaussianMixture`` and dynamax's ``fit_em``:
:func:`e_step` / :func:`hard_e_step` (``params, images -> EStep``), :func:`m_step`
(``params, images, EStep -> params, info``) and :func:`fit` (``-> (params, EMTrace)``).

**Soft E-step**: ``r[n,c,m,g,a] = p(c, m, g, a | I_n)`` (supervised: ``c`` clamped to the label), kept
as ``p(c, m, g | I)`` and its switched-on slice ``r[..., a=1]`` (:class:`~drmm_ref.rmm.model.Posterior`). The
objective is ``sum_n ln p(I_n)`` (unsupervised) or ``sum_n ln p(I_n, y_n)`` (supervised), and it
never decreases (tested to ``1e-10 |objective|`` in float64).

**Hard E-step**: the one-hot MAP ``(c, m, g, a)`` (max-sum, the zero-noise limit). The objective is
the complete-data log-likelihood ``sum_n ln p(I_n, z_n)`` at those latents; both half-steps raise it.

**M-step** (closed form, SPEC §1), with ``r1 = r[..., a = 1]``:

.. math::

    \\mu_{c,m}[p] &= \\frac{\\sum_{n,g} r1[n,c,m,g]\\, (P_g I_n)[p]}{\\sum_{n,g} r1[n,c,m,g]\\, [p \\text{ inside at } g]} \\\\
    \\pi_c &= \\tfrac1N \\textstyle\\sum_n \\sum_{m,g,a} r, \\quad
    \\pi_{\\mathrm{on}} = \\tfrac1N \\sum_n \\sum_{c,m,g} r1, \\quad
    \\sigma^2 = \\tfrac{1}{ND} \\sum r\\,\\big[\\|I_n\\|^2 - 2a\\langle P_g I_n, \\mu_{c,m}\\rangle + a\\|T_g\\mu_{c,m}\\|^2\\big]

(``sigma^2`` with the *updated* templates). At valid positions the per-pixel denominator is the
SPEC's ``sum r1``; with zero padding a template pixel only sees the stamps that keep it inside the
image, and this per-pixel ratio is the exact maximiser (our choice, SPEC is silent). The sub-template
prior stays ``1/M``; the nuisance prior stays fixed unless ``learn_nuisance=True`` (then
``pi_g = mean_n sum_{c,m} r``). One switch prior ``pi_on`` is learned, shared by all classes.

**Guards** (SPEC §1), each the exact maximiser under its constraint, so monotonicity holds:

* a template pixel whose denominator is ``<= empty_tol`` keeps its old value (a component with no mass
  at all is *empty*: an :class:`EmptyComponentWarning` says which);
* ``pi_c >= prior_floor`` (water-filling: the constrained maximiser, not clip-and-renormalise),
  ``prior_floor <= pi_on <= 1 - prior_floor``;
* ``sigma^2 >= variance_floor`` (default ``1e-6`` times the mean squared pixel, at least ``1e-12``);
  hitting it raises a :class:`VarianceFloorWarning`.

Re-seeding an empty component (``reseed_empty=True``) replaces its template by the highest-energy
patch of the worst-explained example; it can lower the objective, so the step is logged in
:attr:`EMTrace.reseeded` and excluded from the monotonicity check. Parameters are checked to be finite
after every M-step (``FloatingPointError`` otherwise): EM never returns NaN parameters.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional

import numpy as np

from .._backend import asarray, device_of, to_numpy
from ..primitives import conv2d, conv2d_vjp_weight
from . import _terms as T
from .init import init_params
from .model import _check_classes, log_joint, map_estimate, posterior
from .params import RMMParams

__all__ = [
    "EStep",
    "MStepInfo",
    "EMTrace",
    "ConvergenceWarning",
    "VarianceFloorWarning",
    "EmptyComponentWarning",
    "e_step",
    "hard_e_step",
    "m_step",
    "objective",
    "fit",
]


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before the relative objective change fell below ``tol``."""


class VarianceFloorWarning(RuntimeWarning):
    """The noise-variance update hit its floor (variance collapsing to zero, e.g. constant images)."""


class EmptyComponentWarning(RuntimeWarning):
    """A (class, sub-template) component received no responsibility mass; its template was kept (or re-seeded)."""


@dataclasses.dataclass(frozen=True, eq=False)
class EStep:
    """Result of an E-step.

    Attributes
    ----------
    responsibilities : array of shape (N, K, M, Hg, Wg)
        ``p(c, m, g | I_n)`` (soft) or the one-hot MAP ``(c, m, g)`` (hard).
    responsibilities_on : array of shape (N, K, M, Hg, Wg)
        ``p(c, m, g, a = 1 | I_n)`` (soft) or the one-hot MAP times its switch (hard).
    per_example : array of shape (N,)
        The objective's terms: ``ln p(I_n)`` / ``ln p(I_n, y_n)`` (soft) or ``ln p(I_n, z_n)`` (hard).
    objective : float
        ``sum(per_example)``.
    hard : bool
    classes, latents :
        The MAP configuration (hard E-step only), for the complete-data objective after the M-step.
    """

    responsibilities: Any
    responsibilities_on: Any
    per_example: Any
    objective: float
    hard: bool = False
    classes: Any = None
    latents: Any = None


@dataclasses.dataclass(frozen=True)
class MStepInfo:
    """What the M-step's guards did."""

    empty_components: tuple  #: (c, m) pairs with no responsibility mass; their templates were kept (or re-seeded)
    reseeded: tuple  #: (c, m) pairs re-seeded
    variance_floored: bool  #: ``sigma^2`` hit its floor
    class_floored: bool  #: some ``pi_c`` sits at its floor
    switch_floored: bool  #: ``pi_on`` sits at a floor


@dataclasses.dataclass
class EMTrace:
    """The run of :func:`fit` that produced the returned parameters.

    Attributes
    ----------
    objective : list of float
        Soft EM: the objective at the start of every iteration and after the last M-step.
        Hard EM: alternating values after each E-step and each M-step (``step_kinds``).
    step_kinds : list of str
        ``'init'``, ``'E'``, ``'M'`` for each entry of ``objective``.
    reseeded : list of int
        Indices ``i`` of ``objective`` whose step ``objective[i-1] -> objective[i]`` contains a re-seed.
    empty_components, variance_floored : list
        Per M-step guard reports.
    converged : bool
    n_iter : int
    restart_objectives : list of float
        Final objective of every restart (the returned parameters are the best).
    restart_params : list of RMMParams
        Final parameters of every restart.
    restart_traces : list of EMTrace
        The trace of every restart (the best one is this trace's own record).
    best_restart : int
    """

    objective: list = dataclasses.field(default_factory=list)
    step_kinds: list = dataclasses.field(default_factory=list)
    reseeded: list = dataclasses.field(default_factory=list)
    empty_components: list = dataclasses.field(default_factory=list)
    variance_floored: list = dataclasses.field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    restart_objectives: list = dataclasses.field(default_factory=list)
    restart_params: list = dataclasses.field(default_factory=list)
    restart_traces: list = dataclasses.field(default_factory=list)
    best_restart: int = 0

    def steps(self, exclude_reseeded: bool = True) -> np.ndarray:
        """Objective differences between consecutive entries (re-seeded steps dropped by default)."""
        obj = np.asarray(self.objective, dtype=np.float64)
        d = np.diff(obj)
        if exclude_reseeded and self.reseeded:
            keep = np.ones(d.shape, dtype=bool)
            keep[np.asarray(self.reseeded, dtype=np.int64) - 1] = False
            d = d[keep]
        return d

    def most_negative_relative_step(self, exclude_reseeded: bool = True) -> float:
        """``min_i (obj[i] - obj[i-1]) / |obj[i]|`` (0 when every step rises); compare with ``-1e-10``."""
        obj = np.asarray(self.objective, dtype=np.float64)
        if obj.size < 2:
            return 0.0
        rel = np.diff(obj) / np.maximum(np.abs(obj[1:]), 1e-300)
        if exclude_reseeded and self.reseeded:
            keep = np.ones(rel.shape, dtype=bool)
            keep[np.asarray(self.reseeded, dtype=np.int64) - 1] = False
            rel = rel[keep]
        return float(min(0.0, rel.min())) if rel.size else 0.0


def _check_em_params(params: RMMParams) -> None:
    T.check_params(params)
    if params.pool is not None:
        raise ValueError("EM supports the global nuisance form only (params.pool must be None); the window form "
                         "is a family of per-window models used for inference")


def _check_labels(params: RMMParams, images: Any, labels: Optional[Any]) -> None:
    if labels is not None:
        _check_classes(params, labels, images.shape[0], name="labels")
        if labels.ndim != 1:
            raise ValueError(f"labels must have shape (N,), got {tuple(labels.shape)}")


def e_step(params: RMMParams, images: Any, labels: Optional[Any] = None) -> EStep:
    """Soft E-step: the exact posterior over ``(c, m, g, a)`` (SPEC §1, EM).

    Parameters
    ----------
    params : RMMParams
        Global nuisance form.
    images : array of shape (N, C, H, W)
    labels : int array of shape (N,), optional
        Supervised EM: clamp ``c`` to the labels.

    Returns
    -------
    EStep
        ``objective = sum_n ln p(I_n)`` (or ``ln p(I_n, y_n)``).
    """
    _check_em_params(params)
    xp = T.check_images(params, images)
    _check_labels(params, images, labels)
    post = posterior(params, images, labels)
    return EStep(post.responsibilities, post.responsibilities_on, post.log_evidence,
                 float(xp.sum(post.log_evidence)))


def hard_e_step(params: RMMParams, images: Any, labels: Optional[Any] = None) -> EStep:
    """Hard E-step: the one-hot MAP ``(c, m, g, a)`` by max-sum (SPEC §1; ``c`` clamped when labelled).

    Returns
    -------
    EStep
        One-hot responsibilities; ``objective = sum_n ln p(I_n, z_n)`` at the MAP latents ``z_n``.
    """
    _check_em_params(params)
    xp = T.check_images(params, images)
    _check_labels(params, images, labels)
    cls, lat, score = map_estimate(params, images, labels)
    n = images.shape[0]
    K, M = params.num_classes, params.num_subtemplates
    hg, wg = params.grid_shape
    dev, dt = device_of(images), params.dtype
    def hot(idx, size):
        return xp.astype(idx[:, None] == xp.arange(size, dtype=idx.dtype, device=dev)[None, :], dt)

    cell = lat.positions[:, 0] * wg + lat.positions[:, 1]
    resp = (hot(cls, K)[:, :, None, None] * hot(lat.subtemplates, M)[:, None, :, None]
            * hot(cell, hg * wg)[:, None, None, :])
    resp = xp.reshape(resp, (n, K, M, hg, wg))
    resp_on = resp * xp.reshape(xp.astype(lat.switches, dt), (n, 1, 1, 1, 1))
    return EStep(resp, resp_on, score, float(xp.sum(score)), hard=True, classes=cls, latents=lat)


def _floored_simplex(counts: np.ndarray, floor: float) -> np.ndarray:
    """``argmax sum_c counts_c ln pi_c`` over the simplex with ``pi_c >= floor`` (water-filling, exact)."""
    K = counts.size
    if floor <= 0:
        return counts / counts.sum()
    if K * floor >= 1:
        raise ValueError(f"prior_floor={floor} is too large for K={K} classes (needs K * floor < 1)")
    clamped = np.zeros(K, dtype=bool)
    for _ in range(K + 1):  # the clamped set only grows; at most K rounds
        free_mass = counts[~clamped].sum()
        if free_mass <= 0:
            pi = np.where(clamped, floor, (1 - floor * clamped.sum()) / max((~clamped).sum(), 1))
            break
        lam = free_mass / (1 - floor * clamped.sum())
        pi = np.where(clamped, floor, counts / lam)
        new = (~clamped) & (pi < floor)
        if not new.any():
            break
        clamped |= new
    return pi / pi.sum()


def _reseed_templates(params: RMMParams, images: Any, estep: EStep, empty: list, templates: Any) -> Any:
    """Replace the templates of ``empty`` (c, m) pairs by the highest-energy patches of the worst-explained examples."""
    xp = params.xp
    C, k = params.channels, params.kernel
    hg, wg = params.grid_shape
    worst = np.argsort(np.asarray(to_numpy(estep.per_example), dtype=np.float64))[: len(empty)]
    idx = asarray(worst.astype(np.int64), xp=xp, device=device_of(images))
    chosen = xp.take(images, idx, axis=0)  # (E, C, H, W)
    ones = xp.ones((1, C, k, k), dtype=params.dtype, device=device_of(images))
    energy = conv2d(xp.sum(chosen * chosen, axis=1, keepdims=True), ones[:, :1, ...], params.padding)  # (E, 1, Hg, Wg)
    cells = np.asarray(to_numpy(xp.argmax(xp.reshape(energy, (len(empty), hg * wg)), axis=1)))
    host_t = np.array(to_numpy(templates), dtype=np.float64, copy=True)
    host_i = np.asarray(to_numpy(chosen), dtype=np.float64)
    q = params.padding
    H, W = params.image_shape
    padded = np.pad(host_i, ((0, 0), (0, 0), (q, q), (q, q)))
    for e, ((c, m), cell) in enumerate(zip(empty, cells)):  # only the few empty components
        r, s = divmod(int(cell), wg)
        host_t[c, m] = padded[e, :, r : r + k, s : s + k]
    return xp.asarray(host_t, dtype=params.dtype, device=device_of(templates))


def m_step(params: RMMParams, images: Any, estep: EStep, *, learn_nuisance: bool = False,
           prior_floor: float = 1e-6, variance_floor: Optional[float] = None, empty_tol: float = 1e-12,
           reseed_empty: bool = False) -> tuple[RMMParams, MStepInfo]:
    """Closed-form M-step with the SPEC §1 guards (module docstring).

    Parameters
    ----------
    params : RMMParams
        The parameters of the E-step (their templates are kept where a component is empty).
    images : array of shape (N, C, H, W)
    estep : EStep
        From :func:`e_step` or :func:`hard_e_step` on the same images.
    learn_nuisance : bool, default False
        Update ``pi_g`` (``mean_n sum_{c,m} r``); fixed otherwise.
    prior_floor : float, default 1e-6
        Floor on ``pi_c`` and on ``pi_on``, ``1 - pi_on``.
    variance_floor : float, optional
        Floor on ``sigma^2``; default ``max(1e-6 * mean(I^2), 1e-12)``.
    empty_tol : float, default 1e-12
        A template pixel whose responsibility mass is ``<= empty_tol * N`` keeps its old value.
    reseed_empty : bool, default False
        Re-seed empty components (breaks monotonicity for that step; :func:`fit` logs it).

    Returns
    -------
    params : RMMParams
    info : MStepInfo
    """
    _check_em_params(params)
    xp = T.check_images(params, images)
    if not isinstance(estep, EStep):
        raise TypeError(f"estep must be an EStep, got {type(estep).__name__}")
    n = images.shape[0]
    K, M, C, k = params.num_classes, params.num_subtemplates, params.channels, params.kernel
    H, W = params.image_shape
    hg, wg = params.grid_shape
    q = params.padding
    dev, dt = device_of(images), params.dtype
    if tuple(estep.responsibilities.shape) != (n, K, M, hg, wg):
        raise ValueError(f"estep.responsibilities has shape {tuple(estep.responsibilities.shape)}, expected "
                         f"{(n, K, M, hg, wg)} for these images and params")
    resp = estep.responsibilities
    r1 = xp.reshape(estep.responsibilities_on, (n, K * M, hg, wg))
    # templates: per-pixel weighted means of the extracted patches
    num = conv2d_vjp_weight(r1, images, q)  # (KM, C, k, k) = sum_{n,g} r1 P_g I_n
    mass_map = xp.sum(r1, axis=0, keepdims=True)  # (1, KM, Hg, Wg)
    ones_img = xp.ones((1, C, H, W), dtype=dt, device=dev)
    den = conv2d_vjp_weight(mass_map, ones_img, q)  # (KM, C, k, k): mass that keeps each pixel inside
    old = xp.reshape(params.templates, (K * M, C, k, k))
    ok = den > empty_tol * n
    one = xp.ones((), dtype=dt, device=dev)
    mu = xp.where(ok, num / xp.where(ok, den, one), old)
    comp_mass = np.asarray(to_numpy(xp.sum(mass_map, axis=(0, 2, 3))), dtype=np.float64)
    empty = [divmod(int(i), M) for i in np.nonzero(comp_mass <= empty_tol * n)[0]]
    templates = xp.reshape(mu, (K, M, C, k, k))
    if empty:
        action = "re-seeded from the worst-explained example" if reseed_empty else "kept unchanged"
        warnings.warn(f"components (class, sub-template) {empty} received no responsibility mass; their templates "
                      f"were {action}", EmptyComponentWarning, stacklevel=2)
    reseeded = []
    if reseed_empty and empty:
        templates = _reseed_templates(params, images, estep, empty, templates)
        reseeded = list(empty)
        mu = xp.reshape(templates, (K * M, C, k, k))
    # noise variance with the updated templates
    total_sq = xp.sum(images * images)
    cross = xp.sum(mu * num)
    norm_map = conv2d(ones_img, mu * mu, q)  # (1, KM, Hg, Wg): clipped squared norms
    sse = total_sq - 2 * cross + xp.sum(mass_map * norm_map)
    sigma2 = float(sse) / (n * params.num_pixels)
    floor = variance_floor
    if floor is None:
        floor = max(1e-6 * float(total_sq) / (n * params.num_pixels), 1e-12)
    var_floored = not sigma2 > floor
    if var_floored:
        warnings.warn(f"the noise variance update {sigma2:.3e} fell to the floor {floor:.3e} (variance collapsing "
                      "to zero: constant images or a perfect fit); sigma2 is held at the floor",
                      VarianceFloorWarning, stacklevel=2)
        sigma2 = floor
    # priors
    counts = np.asarray(to_numpy(xp.sum(resp, axis=(0, 2, 3, 4))), dtype=np.float64)
    class_prior = _floored_simplex(counts, prior_floor)
    on = float(xp.sum(r1)) / n
    pi_on = min(max(on, prior_floor), 1 - prior_floor)
    nuisance = params.nuisance_prior
    if learn_nuisance:
        pos = np.asarray(to_numpy(xp.sum(resp, axis=(0, 1, 2))), dtype=np.float64) / n
        nuisance = xp.asarray(pos / pos.sum(), dtype=dt, device=dev)
    new = RMMParams(templates=templates, class_prior=xp.asarray(class_prior, dtype=dt, device=dev),
                    switch_prior=pi_on, sigma2=sigma2, image_shape=params.image_shape, padding=q,
                    nuisance_prior=nuisance, pool=None)
    info = MStepInfo(empty_components=tuple(empty), reseeded=tuple(reseeded), variance_floored=var_floored,
                     class_floored=bool(np.any(class_prior <= prior_floor * (1 + 1e-12))),
                     switch_floored=pi_on != on)
    return new, info


def objective(params: RMMParams, images: Any, labels: Optional[Any] = None, *, classes: Optional[Any] = None,
              latents: Optional[Any] = None) -> float:
    """The EM objective: ``sum_n ln p(I_n)`` / ``sum_n ln p(I_n, y_n)`` (soft), or, given hard latents
    ``(classes, latents)``, the complete-data ``sum_n ln p(I_n, c_n, m_n, g_n, a_n)``."""
    xp = T.check_images(params, images)
    if classes is not None or latents is not None:
        if classes is None or latents is None:
            raise ValueError("pass both classes and latents for the complete-data objective")
        return float(xp.sum(log_joint(params, images, classes, latents)))
    return float(xp.sum(posterior(params, images, labels).log_evidence))


def _fit_once(params, images, labels, hard, max_iter, tol, m_kwargs):
    """One EM run from ``params``; returns the final parameters and the trace."""
    trace = EMTrace()
    estimate = hard_e_step if hard else e_step
    est = estimate(params, images, labels)
    trace.objective.append(est.objective)
    trace.step_kinds.append("E" if hard else "init")
    for it in range(max_iter):
        params, info = m_step(params, images, est, **m_kwargs)
        trace.empty_components.append(info.empty_components)
        trace.variance_floored.append(info.variance_floored)
        if hard:  # the complete-data objective at the E-step's latents, new parameters
            trace.objective.append(objective(params, images, classes=est.classes, latents=est.latents))
            trace.step_kinds.append("M")
            if info.reseeded:
                trace.reseeded.append(len(trace.objective) - 1)
        est = estimate(params, images, labels)
        trace.objective.append(est.objective)
        trace.step_kinds.append("E")
        if info.reseeded and not hard:
            trace.reseeded.append(len(trace.objective) - 1)
        trace.n_iter = it + 1
        value, prev = trace.objective[-1], trace.objective[-3 if hard else -2]
        if not info.reseeded and abs(value - prev) <= tol * max(abs(value), 1e-300):
            trace.converged = True
            break
    return params, trace


def fit(images: Any, num_classes: Optional[int] = None, *, labels: Optional[Any] = None, num_subtemplates: int = 1,
        kernel: Optional[int] = None, padding: int = 0, method: str = "soft", init: Optional[RMMParams] = None,
        max_iter: int = 100, tol: float = 1e-8, restarts: int = 1, seed: Any = None, learn_nuisance: bool = False,
        prior_floor: float = 1e-6, variance_floor: Optional[float] = None, reseed_empty: bool = False,
        candidates: str = "max_energy", warn: bool = True) -> tuple[RMMParams, EMTrace]:
    """Fit an RMM by EM (SPEC §1): soft or hard, supervised (``labels``) or unsupervised.

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    num_classes : int, optional
        ``K``; needed unless ``init`` is given.
    labels : int array of shape (N,), optional
        Supervised EM (class clamped); objective ``sum_n ln p(I_n, y_n)``.
    num_subtemplates, kernel, padding :
        ``M``, ``k``, ``q`` of the model built by :func:`~drmm_ref.rmm.init.init_params` (k-means++ on patches).
    method : {'soft', 'hard'}
    init : RMMParams, optional
        Starting parameters (then ``restarts`` must be 1).
    max_iter : int, default 100
    tol : float, default 1e-8
        Stop when an iteration changes the objective by at most ``tol * |objective|``.
    restarts : int, default 1
        Independent k-means++ initialisations; the best final objective wins.
    seed : int, optional
        Seeds the initialisations (restart ``i`` uses ``SeedSequence(seed).spawn``).
    learn_nuisance, prior_floor, variance_floor, reseed_empty :
        Passed to :func:`m_step`.
    candidates : {'max_energy', 'all'}
        Patches the k-means++ initialisation draws from (:func:`~drmm_ref.rmm.init.kmeans_pp_templates`).
    warn : bool, default True
        Emit :class:`ConvergenceWarning` when a restart stops at ``max_iter``.

    Returns
    -------
    params : RMMParams
    trace : EMTrace
        The best restart's trace, with every restart's final objective and parameters.
    """
    if method not in ("soft", "hard"):
        raise ValueError(f"method must be 'soft' or 'hard', got {method!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive integer, got {restarts!r}")
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if init is not None and restarts != 1:
        raise ValueError("init fixes the starting point: restarts must be 1")
    if init is None and (num_classes is None or kernel is None):
        raise ValueError("pass num_classes and kernel (or init=RMMParams)")
    m_kwargs = dict(learn_nuisance=learn_nuisance, prior_floor=prior_floor, variance_floor=variance_floor,
                    reseed_empty=reseed_empty)
    seeds = np.random.SeedSequence(seed).spawn(restarts)
    best = None
    all_obj, all_params, all_traces = [], [], []
    for r in range(restarts):
        start = init if init is not None else init_params(
            images, num_classes, kernel, labels=labels, num_subtemplates=num_subtemplates, padding=padding,
            candidates=candidates, seed=np.random.default_rng(seeds[r]))
        T.check_images(start, images)
        _check_labels(start, images, labels)
        params, trace = _fit_once(start, images, labels, method == "hard", max_iter, tol, m_kwargs)
        if warn and not trace.converged:
            warnings.warn(f"EM ({method}) restart {r} did not converge in {max_iter} iterations "
                          f"(last relative change above tol={tol:g}); raise max_iter or tol", ConvergenceWarning,
                          stacklevel=2)
        final = trace.objective[-1]
        all_obj.append(final)
        all_params.append(params)
        all_traces.append(trace)
        if best is None or final > best[0]:
            best = (final, r, params, trace)
    _, r, params, trace = best
    trace.restart_objectives, trace.restart_params, trace.best_restart = all_obj, all_params, r
    trace.restart_traces = all_traces
    return params, trace
