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

    \\mu_{c,m}[p] &= \\frac{\\sum_{n,g} r1[n,c,m,g]\\, (P_g I_n)[p]}
                          {\\sum_{n,g} r1[n,c,m,g]\\, [p \\text{ inside at } g]} \\\\
    \\pi_c &= \\tfrac1N \\textstyle\\sum_n \\sum_{m,g,a} r, \\quad
    \\pi_{\\mathrm{on}} = \\tfrac1N \\sum_n \\sum_{c,m,g} r1, \\quad
    \\sigma^2 = \\tfrac{1}{ND} \\sum r\\,
      \\big[\\|I_n\\|^2 - 2a\\langle P_g I_n, \\mu_{c,m}\\rangle + a\\|T_g\\mu_{c,m}\\|^2\\big]

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
from .stats import EMStats, clipped_norm_map, statistics_from_responsibilities

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
    "m_step_from_stats",
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


def _reseed_templates(params: RMMParams, stats: EMStats, empty: list, mu: np.ndarray) -> np.ndarray:
    """Replace the templates of ``empty`` (c, m) pairs by the highest-energy patches of the worst-explained examples.

    ``mu`` is the host ``(K*M, C, k, k)`` update; the examples are ``stats.worst_images`` (lowest objective first).
    """
    k, M = params.kernel, params.num_subtemplates
    _, wg = params.grid_shape
    q = params.padding
    if stats.worst_images is None or len(stats.worst_images) < len(empty):
        raise ValueError(f"re-seeding {len(empty)} components needs the statistics of at least that many "
                         "worst-explained examples (keep_worst >= K * M)")
    chosen = np.asarray(stats.worst_images[: len(empty)], dtype=np.float64)  # (E, C, H, W)
    energy = conv2d(np.sum(chosen * chosen, axis=1, keepdims=True), np.ones((1, 1, k, k)), q)  # (E, 1, Hg, Wg)
    cells = np.argmax(energy.reshape(len(empty), -1), axis=1)
    out = mu.copy()
    padded = np.pad(chosen, ((0, 0), (0, 0), (q, q), (q, q)))
    for e, ((c, m), cell) in enumerate(zip(empty, cells)):  # only the few empty components
        r, s = divmod(int(cell), wg)
        out[c * M + m] = padded[e, :, r : r + k, s : s + k]
    return out


def _estep_statistics(params: RMMParams, images: Any, estep: EStep, keep_worst: int = 0, offset: int = 0) -> EMStats:
    """The :class:`~drmm_ref.rmm.stats.EMStats` of an E-step on ``images``."""
    return statistics_from_responsibilities(params, images, estep.responsibilities, estep.responsibilities_on,
                                            estep.per_example, hard=estep.hard, keep_worst=keep_worst, offset=offset)


def m_step(params: RMMParams, images: Any, estep: EStep, *, learn_nuisance: bool = False,
           prior_floor: float = 1e-6, variance_floor: Optional[float] = None, empty_tol: float = 1e-12,
           reseed_empty: bool = False) -> tuple[RMMParams, MStepInfo]:
    """Closed-form M-step with the SPEC §1 guards (module docstring).

    The E-step is reduced to its sufficient statistics
    (:func:`~drmm_ref.rmm.stats.statistics_from_responsibilities`) and :func:`m_step_from_stats`
    does the rest: the one M-step of the in-memory, streamed and distributed EM.

    Parameters
    ----------
    params : RMMParams
        The parameters of the E-step (their templates are kept where a component is empty).
    images : array of shape (N, C, H, W)
    estep : EStep
        From :func:`e_step` or :func:`hard_e_step` on the same images.
    learn_nuisance, prior_floor, variance_floor, empty_tol, reseed_empty :
        As in :func:`m_step_from_stats`.

    Returns
    -------
    params : RMMParams
    info : MStepInfo
    """
    _check_em_params(params)
    T.check_images(params, images)
    if not isinstance(estep, EStep):
        raise TypeError(f"estep must be an EStep, got {type(estep).__name__}")
    n = images.shape[0]
    K, M = params.num_classes, params.num_subtemplates
    hg, wg = params.grid_shape
    if tuple(estep.responsibilities.shape) != (n, K, M, hg, wg):
        raise ValueError(f"estep.responsibilities has shape {tuple(estep.responsibilities.shape)}, expected "
                         f"{(n, K, M, hg, wg)} for these images and params")
    stats = _estep_statistics(params, images, estep, keep_worst=K * M if reseed_empty else 0)
    return m_step_from_stats(params, stats, learn_nuisance=learn_nuisance, prior_floor=prior_floor,
                             variance_floor=variance_floor, empty_tol=empty_tol, reseed_empty=reseed_empty,
                             _stacklevel=3)


def m_step_from_stats(params: RMMParams, stats: EMStats, *, learn_nuisance: bool = False, prior_floor: float = 1e-6,
                      variance_floor: Optional[float] = None, empty_tol: float = 1e-12, reseed_empty: bool = False,
                      _stacklevel: int = 2) -> tuple[RMMParams, MStepInfo]:
    """The closed-form M-step from the summed sufficient statistics of every image (SPEC §1; module docstring).

    Reads only the totals (:class:`~drmm_ref.rmm.stats.EMStats`): the arithmetic is of the model's
    size, on the host in ``float64``; the new parameters come back in ``params``' namespace, device
    and dtype.

    Parameters
    ----------
    params : RMMParams
        The parameters of the E-step (their templates are kept where a component is empty).
    stats : EMStats
        The sum of the statistics of every chunk of the data set.
    learn_nuisance : bool, default False
        Update ``pi_g`` (``mean_n sum_{c,m} r``); fixed otherwise.
    prior_floor : float, default 1e-6
        Floor on ``pi_c`` and on ``pi_on``, ``1 - pi_on``.
    variance_floor : float, optional
        Floor on ``sigma^2``; default ``max(1e-6 * mean(I^2), 1e-12)``.
    empty_tol : float, default 1e-12
        A template pixel whose responsibility mass is ``<= empty_tol * N`` keeps its old value.
    reseed_empty : bool, default False
        Re-seed empty components (breaks monotonicity for that step; :func:`fit` logs it). Needs
        ``stats.keep_worst >= K * M``.

    Returns
    -------
    params : RMMParams
    info : MStepInfo

    Raises
    ------
    FloatingPointError
        If an updated parameter is not finite.
    """
    _check_em_params(params)
    if not isinstance(stats, EMStats):
        raise TypeError(f"stats must be an EMStats, got {type(stats).__name__}")
    n = stats.count
    if n < 1:
        raise ValueError("stats.count is 0: the M-step needs the statistics of at least one image")
    K, M, C, k = params.num_classes, params.num_subtemplates, params.channels, params.kernel
    H, W = params.image_shape
    hg, wg = params.grid_shape
    q = params.padding
    if stats.on_mass.shape != (K * M, hg, wg) or stats.weighted_patches.shape != (K * M, C, k, k):
        raise ValueError(f"stats do not belong to this model: on_mass {stats.on_mass.shape} (expected "
                         f"{(K * M, hg, wg)}), weighted_patches {stats.weighted_patches.shape} (expected "
                         f"{(K * M, C, k, k)})")
    xp, dev, dt = params.xp, device_of(params.templates), params.dtype
    num, mass_map = stats.weighted_patches, stats.on_mass
    # templates: per-pixel weighted means of the extracted patches
    den = conv2d_vjp_weight(mass_map[None], np.ones((1, C, H, W)), q)  # (KM, C, k, k): mass keeping each pixel inside
    old = np.asarray(to_numpy(params.templates), dtype=np.float64).reshape(K * M, C, k, k)
    ok = den > empty_tol * n
    mu = np.where(ok, num / np.where(ok, den, 1.0), old)
    comp_mass = mass_map.sum(axis=(1, 2))
    empty = [divmod(int(i), M) for i in np.nonzero(comp_mass <= empty_tol * n)[0]]
    if empty:
        action = "re-seeded from the worst-explained example" if reseed_empty else "kept unchanged"
        warnings.warn(f"components (class, sub-template) {empty} received no responsibility mass; their templates "
                      f"were {action}", EmptyComponentWarning, stacklevel=_stacklevel)
    reseeded = []
    if reseed_empty and empty:
        mu = _reseed_templates(params, stats, empty, mu)
        reseeded = list(empty)
    # noise variance with the updated templates
    sse = stats.total_sq - 2 * float(np.sum(mu * num)) + float(np.sum(mass_map * clipped_norm_map(mu, params)))
    sigma2 = sse / (n * params.num_pixels)
    floor = variance_floor
    if floor is None:
        floor = max(1e-6 * stats.total_sq / (n * params.num_pixels), 1e-12)
    var_floored = not sigma2 > floor
    if var_floored:
        warnings.warn(f"the noise variance update {sigma2:.3e} fell to the floor {floor:.3e} (variance collapsing "
                      "to zero: constant images or a perfect fit); sigma2 is held at the floor",
                      VarianceFloorWarning, stacklevel=_stacklevel)
        sigma2 = floor
    if not (np.all(np.isfinite(mu)) and np.isfinite(sigma2)):
        raise FloatingPointError("the M-step produced non-finite templates or sigma2 (overflow in the "
                                 "statistics?); check the images' scale")
    # priors
    class_prior = _floored_simplex(stats.class_mass, prior_floor)
    on = float(comp_mass.sum()) / n
    pi_on = min(max(on, prior_floor), 1 - prior_floor)
    nuisance = params.nuisance_prior
    put = lambda a: asarray(a, xp=xp, dtype=dt, device=dev)  # noqa: E731
    if learn_nuisance:
        pos = stats.position_mass / n
        nuisance = put(pos / pos.sum())
    new = RMMParams(templates=put(mu.reshape(K, M, C, k, k)), class_prior=put(class_prior),
                    switch_prior=pi_on, sigma2=float(sigma2), image_shape=params.image_shape, padding=q,
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


class _InMemoryPass:
    """One E-step over the whole data set at once: holds every posterior (``N K M |G|`` numbers)."""

    def __init__(self, images: Any, labels: Optional[Any], hard: bool, keep_worst: int):
        self.images, self.labels, self.hard, self.keep_worst = images, labels, hard, keep_worst
        self._est = None

    def __call__(self, params: RMMParams) -> EMStats:
        self._est = (hard_e_step if self.hard else e_step)(params, self.images, self.labels)
        return _estep_statistics(params, self.images, self._est, self.keep_worst)

    def complete_objective(self, params: RMMParams, stats: EMStats) -> float:
        """The complete-data objective at the last hard E-step's latents, from the rendered images."""
        return objective(params, self.images, classes=self._est.classes, latents=self._est.latents)


def _fit_once(params, data_pass, hard, max_iter, tol, m_kwargs):
    """One EM run from ``params``; ``data_pass(params) -> EMStats`` is one E-step over every image."""
    trace = EMTrace()
    stats = data_pass(params)
    trace.objective.append(stats.objective)
    trace.step_kinds.append("E" if hard else "init")
    for it in range(max_iter):
        params, info = m_step_from_stats(params, stats, **m_kwargs, _stacklevel=4)
        trace.empty_components.append(info.empty_components)
        trace.variance_floored.append(info.variance_floored)
        if hard:  # the complete-data objective at the E-step's latents, new parameters
            trace.objective.append(data_pass.complete_objective(params, stats))
            trace.step_kinds.append("M")
            if info.reseeded:
                trace.reseeded.append(len(trace.objective) - 1)
        stats = data_pass(params)
        trace.objective.append(stats.objective)
        trace.step_kinds.append("E")
        if info.reseeded and not hard:
            trace.reseeded.append(len(trace.objective) - 1)
        trace.n_iter = it + 1
        value, prev = trace.objective[-1], trace.objective[-3 if hard else -2]
        if not info.reseeded and abs(value - prev) <= tol * max(abs(value), 1e-300):
            trace.converged = True
            break
    return params, trace


def _num_images(images: Any) -> int:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4:
        raise ValueError(f"images must be an array of shape (N, C, H, W), got {type(images).__name__} of shape "
                         f"{None if shape is None else tuple(shape)}")
    n = shape[0]
    if n is None or n != n:  # a dask array of unknown length
        raise ValueError("images has an unknown number of rows (a dask array with unknown chunk sizes); "
                         "call images.compute_chunk_sizes() first")
    if int(n) < 1:
        raise ValueError(f"images must hold at least one image, got N = {int(n)} (shape {tuple(shape)}); "
                         "EM has nothing to fit")
    return int(n)


def fit(images: Any, num_classes: Optional[int] = None, *, labels: Optional[Any] = None, num_subtemplates: int = 1,
        kernel: Optional[int] = None, padding: int = 0, method: str = "soft", init: Optional[RMMParams] = None,
        max_iter: int = 100, tol: float = 1e-8, restarts: int = 1, seed: Any = None, learn_nuisance: bool = False,
        prior_floor: float = 1e-6, variance_floor: Optional[float] = None, reseed_empty: bool = False,
        candidates: str = "max_energy", warn: bool = True, chunk_size: Optional[int] = None,
        client: Any = None, init_sample: Optional[int] = None) -> tuple[RMMParams, EMTrace]:
    """Fit an RMM by EM (SPEC §1): soft or hard, supervised (``labels``) or unsupervised.

    Three ways to run the same EM (``docs/scaling.md``): in memory (the default: every posterior at
    once), streamed (``chunk_size``: one chunk's posteriors at a time, memory ``O(chunk_size)``), or
    on a Dask cluster (``client``: the chunks live on the workers, each iteration maps the E-step
    over them and tree-sums their :class:`~drmm_ref.rmm.stats.EMStats`). All three give the same
    parameters and trace up to the order of floating-point sums.

    Parameters
    ----------
    images : array of shape (N, C, H, W)
        NumPy, CuPy or ``array_api_strict``; with ``chunk_size`` also any array that slices into
        such chunks (e.g. ``numpy.memmap``); with ``client`` also a ``dask.array.Array``.
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
        Passed to :func:`m_step_from_stats`.
    candidates : {'max_energy', 'all'}
        Patches the k-means++ initialisation draws from (:func:`~drmm_ref.rmm.init.kmeans_pp_templates`).
    warn : bool, default True
        Emit :class:`ConvergenceWarning` when a restart stops at ``max_iter``.
    chunk_size : int, optional
        Stream the E-step over chunks of this many images (:mod:`drmm_ref.rmm.stream`). With
        ``client``: the size of the chunks scattered to the workers (a dask array keeps its own
        chunks unless this is given).
    client : distributed.Client or str, optional
        Run the E-step on a Dask cluster (a client, or a scheduler address); needs the optional
        extra ``pip install "drmm-ref[scale]"``. The returned parameters are NumPy arrays.
    init_sample : int, optional
        Draw the k-means++ initialisation from a random subset of this many images (chosen with
        ``seed``) instead of all of them; it holds ``|G| C k^2`` numbers per image of the subset.

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
    if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if init_sample is not None and (not isinstance(init_sample, (int, np.integer)) or init_sample < 1):
        raise ValueError(f"init_sample must be a positive integer, got {init_sample!r}")
    n = _num_images(images)
    m_kwargs = dict(learn_nuisance=learn_nuisance, prior_floor=prior_floor, variance_floor=variance_floor,
                    reseed_empty=reseed_empty)
    hard = method == "hard"
    seeds = np.random.SeedSequence(seed).spawn(restarts)
    first = init if init is not None else None
    streamed = chunk_size is not None or client is not None
    if streamed:
        from . import stream  # the streamed and distributed passes build on this module

        if client is not None:
            data_pass = stream.DaskPass(client, images, labels, hard=hard, chunk_size=chunk_size,
                                        reseed_empty=reseed_empty)
        else:
            data_pass = stream.ChunkedPass(images, labels, hard=hard, chunk_size=int(chunk_size),
                                           reseed_empty=reseed_empty)
    best = None
    all_obj, all_params, all_traces = [], [], []
    try:
        for r in range(restarts):
            if first is not None:
                start = first
            else:
                rng = np.random.default_rng(seeds[r])
                sub_images, sub_labels = images, labels
                if init_sample is not None and init_sample < n:
                    from .stream import take_rows

                    idx = np.sort(rng.choice(n, size=int(init_sample), replace=False))
                    sub_images, sub_labels = take_rows(images, idx), None if labels is None else take_rows(labels, idx)
                elif client is not None and stream.is_dask_array(images):
                    raise ValueError("images is a dask array: pass init= or init_sample= (the k-means++ "
                                     "initialisation needs its images in the client's memory)")
                start = init_params(sub_images, num_classes, kernel, labels=sub_labels,
                                    num_subtemplates=num_subtemplates, padding=padding, candidates=candidates,
                                    seed=rng)
            if streamed:
                start = data_pass.prepare(start)
            else:
                T.check_images(start, images)
                _check_labels(start, images, labels)
                data_pass = _InMemoryPass(images, labels, hard,
                                          start.num_classes * start.num_subtemplates if reseed_empty else 0)
            params, trace = _fit_once(start, data_pass, hard, max_iter, tol, m_kwargs)
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
    finally:
        if streamed:
            data_pass.close()
    _, r, params, trace = best
    trace.restart_objectives, trace.restart_params, trace.best_restart = all_obj, all_params, r
    trace.restart_traces = all_traces
    return params, trace
