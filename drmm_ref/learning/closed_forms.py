"""Closed-form M-step updates with hard latents: class prior, switch priors, noise variance (SPEC §3).

.. math::

    \\pi_c = \\tfrac1N \\textstyle\\sum_n [c_n = c],\\qquad
    \\pi^{(l)}_{on} = \\frac{\\#\\{\\text{layer-}l \\text{ units with } a = 1\\}}{N\\, C_l H_l W_l},\\qquad
    \\sigma^2 = \\tfrac{1}{ND} \\sum_n \\|I_n - \\hat x_n\\|^2

``c_n`` are the E-step's classes (labels when labelled, predictions otherwise). The sufficient
statistics add over mini-batches (:class:`PriorStats`), so an epoch's updates are the whole-set
closed forms at the latents each batch had when it was visited. Floors (our choice) keep the
parameters valid: ``pi_c >= 1e-6`` (then renormalised), ``1e-6 <= pi_on <= 1 - 1e-6``,
``sigma^2 >= 1e-12``. ``sigma^2`` is reported with the log-likelihood; it enters training only if
RC were divided by it, which is off (SPEC §3).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend
from ..drmm import DRMMParams
from ..numerics import dtype_name

__all__ = ["PriorStats", "prior_stats", "apply_closed_forms", "PRIOR_FLOOR", "VARIANCE_FLOOR"]

PRIOR_FLOOR = 1e-6
VARIANCE_FLOOR = 1e-12


@dataclasses.dataclass(frozen=True)
class PriorStats:
    """Additive sufficient statistics of the closed forms (host float64 / int).

    Attributes
    ----------
    class_counts : ndarray of shape (K,)
    on_counts : ndarray of shape (L,)
        Units with ``a = 1`` per layer.
    unit_counts : ndarray of shape (L,)
        ``N C_l H_l W_l`` per layer.
    squared_residual : float
        ``sum_n ||I_n - x_hat_n||^2``.
    pixels : int
        ``N D``.
    """

    class_counts: np.ndarray
    on_counts: np.ndarray
    unit_counts: np.ndarray
    squared_residual: float
    pixels: int

    def __add__(self, other: PriorStats) -> PriorStats:
        return PriorStats(self.class_counts + other.class_counts, self.on_counts + other.on_counts,
                          self.unit_counts + other.unit_counts, self.squared_residual + other.squared_residual,
                          self.pixels + other.pixels)

    @classmethod
    def zeros(cls, n_classes: int, L: int) -> PriorStats:
        return cls(np.zeros(n_classes), np.zeros(L), np.zeros(L), 0.0, 0)

    @property
    def class_prior(self) -> np.ndarray:
        """Floored, normalised class frequencies."""
        p = self.class_counts / max(self.class_counts.sum(), 1.0)
        p = np.maximum(p, PRIOR_FLOOR)
        return p / p.sum()

    @property
    def switch_prior(self) -> np.ndarray:
        return np.clip(self.on_counts / np.maximum(self.unit_counts, 1.0), PRIOR_FLOOR, 1.0 - PRIOR_FLOOR)

    @property
    def noise_variance(self) -> float:
        return max(self.squared_residual / max(self.pixels, 1), VARIANCE_FLOOR)


def prior_stats(estep: Any, images: Any = None) -> PriorStats:
    """Sufficient statistics of one E-step (its classes, switches and, if rendered, its residual).

    Parameters
    ----------
    estep : EStep
    images : array of shape (N, C_0, H_0, W_0), optional
        Defaults to the E-step's own images.
    """
    fw = estep.forward
    xp = _backend.get_namespace(fw.scores)
    n, k = fw.scores.shape
    dev = _backend.device_of(fw.scores)
    # every statistic reduced on the device and read with one transfer (no host synchronisation per layer)
    onehot = xp.astype(xp.expand_dims(estep.classes, axis=1) == xp.arange(k, dtype=estep.classes.dtype, device=dev),
                       xp.float64)
    parts = [xp.sum(onehot, axis=0)]
    switches = estep.latents.switches
    parts += [xp.reshape(xp.sum(xp.astype(a, xp.float64)), (1,)) for a in switches]
    units = np.array([float(math.prod(a.shape)) for a in switches])
    pixels = 0
    if estep.rendering is not None:
        img = fw.images if images is None else images
        resid = img - estep.rendering.image
        parts.append(xp.reshape(xp.sum(xp.astype(resid * resid, xp.float64)), (1,)))
        pixels = math.prod(img.shape)
    host = _backend.to_numpy(xp.concat(parts, axis=0)).astype(np.float64)
    counts, on = host[:k], host[k:k + len(switches)]
    sq = float(host[k + len(switches)]) if pixels else 0.0
    return PriorStats(counts, on, units, sq, pixels)


def apply_closed_forms(params: DRMMParams, stats: PriorStats) -> DRMMParams:
    """``params`` with ``pi_c``, ``pi_on^(l)`` and (when residuals were counted) ``sigma^2`` replaced."""
    xp = params.xp

    def put(a):
        return _backend.asarray(np.asarray(a).astype(dtype_name(params.dtype)), xp=xp, device=params.device)

    changes = {"class_prior": put(stats.class_prior), "switch_prior": put(stats.switch_prior)}
    if stats.pixels:
        changes["noise_variance"] = stats.noise_variance
    return params.replace(**changes)
