"""Sufficient statistics of the RMM's EM: what one chunk of images hands to the M-step (SPEC §1).

The E-step is a sum over images, so EM is a map-reduce: each chunk of images is reduced to an
:class:`EMStats` (a few arrays of the model's size, independent of the chunk's size), the
statistics of all chunks are added, and the M-step (:func:`drmm_ref.rmm.em.m_step_from_stats`) reads
only the totals. With ``r = p(c, m, g | I_n)`` and ``r1 = p(c, m, g, a = 1 | I_n)`` (soft), or their
one-hot MAP forms (hard):

=====================  ========================  ==================================================
field                  shape                     sum over the chunk's images
=====================  ========================  ==================================================
``count``              int                       ``N``
``objective``          float                     ``ln p(I_n)`` / ``ln p(I_n, y_n)`` (soft), ``ln p(I_n, z_n)`` (hard)
``total_sq``           float                     ``||I_n||^2``
``class_mass``         (K,)                      ``sum_{m,g} r``
``position_mass``      (Hg, Wg)                  ``sum_{c,m} r``
``on_mass``            (K M, Hg, Wg)             ``r1``
``weighted_patches``   (K M, C, k, k)            ``sum_g r1 P_g I_n`` (``conv2d_vjp_weight(r1, I)``)
=====================  ========================  ==================================================

plus, for re-seeding empty components (``keep_worst > 0``), the ``keep_worst`` examples with the
lowest objective term (values, global indices, images). Every array is a host NumPy ``float64``
array (our choice: totals over millions of images keep their digits, and the M-step's arithmetic
is of the model's size, not the data's); a chunk computed on a GPU sends ``K M (Hg Wg + C k^2)``
numbers back, not its posteriors.

Everything the M-step and the hard-EM objective need is a function of these totals, so the streamed
EM equals the in-memory EM up to the order of floating-point sums.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import numpy as np

from .._backend import get_namespace, to_numpy
from ..primitives import conv2d, conv2d_vjp_weight
from . import _terms as T
from .params import RMMParams

__all__ = ["EMStats", "statistics_from_responsibilities", "sum_statistics", "complete_data_objective"]


def _host(x: Any) -> np.ndarray:
    return np.asarray(to_numpy(x), dtype=np.float64)


@dataclasses.dataclass(frozen=True, eq=False)
class EMStats:
    """Sufficient statistics of a set of images for the RMM's M-step (module docstring, SPEC §1).

    Add two with ``+`` (the sets are disjoint); :func:`sum_statistics` adds many. Arrays are host
    NumPy ``float64``.

    Attributes
    ----------
    count : int
    objective : float
    total_sq : float
    class_mass : array of shape (K,)
    position_mass : array of shape (Hg, Wg)
    on_mass : array of shape (K*M, Hg, Wg)
    weighted_patches : array of shape (K*M, C, k, k)
    hard : bool
        From a hard (MAP) E-step: then :func:`complete_data_objective` is defined.
    keep_worst : int
        How many lowest-objective examples are kept.
    worst_values : array of shape (E,)
        Their objective terms, ascending (ties: lower index first), ``E <= keep_worst``.
    worst_index : int64 array of shape (E,)
        Their indices in the whole data set.
    worst_images : array of shape (E, C, H, W)
        Their images.
    """

    count: int
    objective: float
    total_sq: float
    class_mass: np.ndarray
    position_mass: np.ndarray
    on_mass: np.ndarray
    weighted_patches: np.ndarray
    hard: bool = False
    keep_worst: int = 0
    worst_values: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    worst_index: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    worst_images: Any = None

    def __add__(self, other: "EMStats") -> "EMStats":
        if not isinstance(other, EMStats):
            return NotImplemented
        if other.hard != self.hard or other.keep_worst != self.keep_worst:
            raise ValueError("cannot add statistics of different E-steps (hard/soft or keep_worst differ)")
        if other.on_mass.shape != self.on_mass.shape or other.weighted_patches.shape != self.weighted_patches.shape:
            raise ValueError(f"cannot add statistics of different models: on_mass {self.on_mass.shape} vs "
                             f"{other.on_mass.shape}, weighted_patches {self.weighted_patches.shape} vs "
                             f"{other.weighted_patches.shape}")
        values, index, images = self.worst_values, self.worst_index, self.worst_images
        if self.keep_worst:
            values = np.concatenate([self.worst_values, other.worst_values])
            index = np.concatenate([self.worst_index, other.worst_index])
            images = np.concatenate([self.worst_images, other.worst_images])
            order = np.lexsort((index, values))[: self.keep_worst]  # by value, then by index
            values, index, images = values[order], index[order], images[order]
        return EMStats(count=self.count + other.count, objective=self.objective + other.objective,
                       total_sq=self.total_sq + other.total_sq, class_mass=self.class_mass + other.class_mass,
                       position_mass=self.position_mass + other.position_mass, on_mass=self.on_mass + other.on_mass,
                       weighted_patches=self.weighted_patches + other.weighted_patches, hard=self.hard,
                       keep_worst=self.keep_worst, worst_values=values, worst_index=index, worst_images=images)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (what a reduction step sends, less pickling overhead)."""
        arrays = (self.class_mass, self.position_mass, self.on_mass, self.weighted_patches, self.worst_values,
                  self.worst_index) + (() if self.worst_images is None else (self.worst_images,))
        return int(sum(a.nbytes for a in arrays)) + 3 * 8


def statistics_from_responsibilities(params: RMMParams, images: Any, responsibilities: Any, responsibilities_on: Any,
                                     per_example: Any, *, hard: bool = False, keep_worst: int = 0,
                                     offset: int = 0) -> EMStats:
    """Reduce an E-step over ``images`` to its :class:`EMStats` (module docstring).

    Parameters
    ----------
    params : RMMParams
    images : array of shape (N, C, H, W)
    responsibilities, responsibilities_on : arrays of shape (N, K, M, Hg, Wg)
        ``r`` and ``r1`` of the E-step (:class:`drmm_ref.rmm.em.EStep`).
    per_example : array of shape (N,)
        The objective's terms.
    hard : bool
        A hard (MAP) E-step.
    keep_worst : int, default 0
        Keep this many lowest-objective examples (for re-seeding; ``K M`` covers every empty component).
    offset : int, default 0
        Index of ``images[0]`` in the whole data set (for ``worst_index``).
    """
    xp = get_namespace(images, responsibilities, responsibilities_on, per_example,
                       names=("images", "responsibilities", "responsibilities_on", "per_example"))
    n = images.shape[0]
    K, M = params.num_classes, params.num_subtemplates
    hg, wg = params.grid_shape
    r1 = xp.reshape(responsibilities_on, (n, K * M, hg, wg))
    num = conv2d_vjp_weight(r1, images, params.padding)  # (KM, C, k, k) = sum_{n,g} r1 P_g I_n
    keep = int(keep_worst)
    worst_values = np.zeros(0)
    worst_index = np.zeros(0, dtype=np.int64)
    worst_images = None
    if keep:
        values = _host(per_example)
        order = np.argsort(values, kind="stable")[:keep]
        worst_values, worst_index = values[order], order.astype(np.int64) + int(offset)
        worst_images = np.asarray(to_numpy(images))[order]
    return EMStats(count=int(n), objective=float(xp.sum(per_example)), total_sq=float(xp.sum(images * images)),
                   class_mass=_host(xp.sum(responsibilities, axis=(0, 2, 3, 4))),
                   position_mass=_host(xp.sum(responsibilities, axis=(0, 1, 2))),
                   on_mass=_host(xp.sum(r1, axis=0)), weighted_patches=_host(num), hard=bool(hard),
                   keep_worst=keep, worst_values=worst_values, worst_index=worst_index, worst_images=worst_images)


def sum_statistics(parts: Iterable[EMStats]) -> EMStats:
    """The statistics of the union of disjoint sets: ``parts[0] + parts[1] + ...``.

    Adds as a balanced binary tree while consuming ``parts`` lazily (a binary counter: at most
    ``log2(len(parts)) + 1`` partial sums are held), so a generator of chunk statistics is summed in
    ``O(log N)`` memory with rounding that grows like ``log(chunks)``.

    Raises
    ------
    ValueError
        If ``parts`` is empty (there is nothing to fit).
    """
    stack: list = []  # (level, partial sum): a partial sum of 2**level consecutive parts
    for part in parts:
        item = (0, part)
        while stack and stack[-1][0] == item[0]:
            level, left = stack.pop()
            item = (level + 1, left + item[1])
        stack.append(item)
    if not stack:
        raise ValueError("parts is empty: there are no statistics to add (no images)")
    total = stack.pop()[1]
    while stack:  # the leftover partial sums, smallest (latest) first
        total = stack.pop()[1] + total
    return total


def _host_params(params: RMMParams) -> dict:
    """The parameters as host ``float64`` arrays for the M-step and the objective."""
    K, M, C, k = params.num_classes, params.num_subtemplates, params.channels, params.kernel
    return {"mu": _host(params.templates).reshape(K * M, C, k, k), "class_prior": _host(params.class_prior),
            "switch_prior": _host(params.switch_prior), "log_position": _host(T.log_position_prior(params))}


def clipped_norm_map(mu: np.ndarray, params: RMMParams) -> np.ndarray:
    """``conv2d(1, mu^2, q)`` on the host: shape (K*M, Hg, Wg), the squared norm of each stamp inside the image."""
    ones = np.ones((1, params.channels, *params.image_shape))
    return conv2d(ones, mu * mu, params.padding)[0]


def complete_data_objective(params: RMMParams, stats: EMStats) -> float:
    """``sum_n ln p(I_n, z_n; params)`` at the MAP latents ``z_n`` summarised by hard ``stats`` (SPEC §1).

    Expanding the Gaussian term as in :mod:`drmm_ref.rmm._terms`,

    .. math::

        \\sum_n \\ln p(I_n, z_n) = -\\frac{S}{2\\sigma^2} - \\frac{N D}{2}\\ln(2\\pi\\sigma^2)
          + \\sum_c N_c \\ln\\pi_c - N\\ln M + \\sum_g N_g \\ln\\pi_g
          + \\sum_c \\big[N^{on}_c \\ln\\pi_{on,c} + (N_c - N^{on}_c)\\ln(1 - \\pi_{on,c})\\big]

    with ``S = sum ||I||^2 - 2 <mu, weighted_patches> + <on_mass, clipped norms>`` the squared residual.
    Hard EM's trace uses it after each M-step when the latents are not kept (streamed EM).

    Raises
    ------
    ValueError
        If ``stats`` come from a soft E-step (the complete-data objective needs one latent per image).
    """
    if not isinstance(stats, EMStats):
        raise TypeError(f"stats must be an EMStats, got {type(stats).__name__}")
    if not stats.hard:
        raise ValueError("stats come from a soft E-step; the complete-data objective needs hard (MAP) statistics")
    K, M = params.num_classes, params.num_subtemplates
    p = _host_params(params)
    mu = p["mu"]
    sse = stats.total_sq - 2 * float(np.sum(mu * stats.weighted_patches)) + float(
        np.sum(stats.on_mass * clipped_norm_map(mu, params)))
    n, s2 = stats.count, params.sigma2
    on_c = stats.on_mass.reshape(K, M, -1).sum(axis=(1, 2))
    pi_on = p["switch_prior"]
    used = stats.position_mass > 0  # 0 * ln 0 = 0: a position no image sits at
    log_pos = float(np.sum(np.where(used, stats.position_mass, 0.0) * np.where(used, p["log_position"], 0.0)))
    return (-sse / (2 * s2) - 0.5 * n * params.num_pixels * math.log(2 * math.pi * s2)
            + float(np.sum(stats.class_mass * np.log(p["class_prior"]))) - n * math.log(M) + log_pos
            + float(np.sum(on_c * np.log(pi_on) + (stats.class_mass - on_c) * np.log1p(-pi_on))))
