"""Which case of the discriminative relaxation a network is in (SPEC §4, §2 D1; paper §3).

Generative -> DCN is always exact. DCN -> generative, deep: the DCN runs the DRMM's max-sum with
the same filters and templates only when its biases are zero and every partial rendering
``z^(l)(c, g)``, ``l = 1..L``, is non-negative for every configuration; the checkable sufficient
condition used here is ``mu >= 0`` and ``W^(2..L) >= 0`` (``W^(1)`` and the image may have any
sign). Otherwise the DCN computes the score of the bottom-up configuration, a lower bound on the
max-sum (``<mu_c, h^(L)> <= max_g <mu_{c,g}, I>`` with zero biases; with nonzero biases the DCN
score is not a max-sum of the DRMM at all).

:func:`relaxation_report` also measures how far a (trained) network is from the condition (SPEC §5
asks for it): the fraction and the mass of negative entries in ``W^(2..L)`` and ``mu``, and the
largest bias magnitude. :func:`rendered_negativity` measures it on data: the negative part of the
partial renderings ``z^(1..L)`` along the path the bottom-up pass picks for each image (what the
NN term penalises; D1 asks for non-negativity on *every* path, so this is a necessary view only).
"""

from __future__ import annotations

import dataclasses

from typing import Any

import numpy as np

from .. import _backend
from .params import DRMMParams

__all__ = ["RelaxationReport", "relaxation_report", "rendered_negativity"]


@dataclasses.dataclass(frozen=True)
class RelaxationReport:
    """Outcome of :func:`relaxation_report`.

    Attributes
    ----------
    case : {"exact", "lower-bound", "biased"}
        ``exact``: zero biases and the sufficient non-negativity condition hold, the DCN score is
        ``max_g <mu_{c,g}, I> + b_c``. ``lower-bound``: zero layer biases but some ``W^(2..L)`` or ``mu`` entry
        is negative: the DCN score is ``<mu_{c,g*}, I> + b_c``, at most the max-sum. ``biased``: nonzero
        layer biases: the DCN is the DRMM's bottom-up configuration score plus bias terms, not a max-sum.
    zero_biases : bool
        Every layer bias ``b^(l)`` is zero.
    nonnegative : bool
        ``mu >= 0`` and ``W^(l) >= 0`` for ``l >= 2``.
    negative_fraction : dict
        Fraction of negative entries per constrained array (``"W2"``, ..., ``"mu"``).
    negative_mass : dict
        ``||min(x, 0)||_1 / ||x||_1`` per constrained array.
    max_abs_bias : float
        Largest ``|b^(l)|`` over the layer biases. (Class biases ``b_c`` only add a per-class
        constant to the score, like a log prior, and do not change the case.)
    """

    case: str
    zero_biases: bool
    nonnegative: bool
    negative_fraction: dict
    negative_mass: dict
    max_abs_bias: float

    def describe(self) -> str:
        text = {"exact": "the DCN computes the DRMM's max-sum exactly (SPEC §2, D1)",
                "lower-bound": "the DCN score is the bottom-up configuration's, a lower bound on the max-sum",
                "biased": "nonzero biases: the DCN score is not a max-sum of the DRMM (SPEC §4)"}[self.case]
        worst = max(self.negative_mass.values()) if self.negative_mass else 0.0
        return f"{self.case}: {text}; worst negative mass {worst:.3g}, max |bias| {self.max_abs_bias:.3g}"


def relaxation_report(params: DRMMParams) -> RelaxationReport:
    """Say which case of SPEC §4 applies to ``params`` and how far they are from D1's condition."""
    arrays = {f"W{l}": params.filters[l - 1] for l in range(2, params.net.L + 1)}
    arrays["mu"] = params.class_templates
    frac, mass = {}, {}
    for name, a in arrays.items():
        h = _backend.to_numpy(a).astype(np.float64)
        frac[name] = float(np.mean(h < 0))
        total = float(np.sum(np.abs(h)))
        mass[name] = float(np.sum(np.abs(np.minimum(h, 0.0))) / total) if total > 0 else 0.0
    biases = [_backend.to_numpy(b) for b in params.biases]
    max_bias = float(max(np.max(np.abs(b)) if b.size else 0.0 for b in biases))
    nonneg = all(v == 0.0 for v in frac.values())
    zero = max_bias == 0.0
    case = "biased" if not zero else ("exact" if nonneg else "lower-bound")
    return RelaxationReport(case, zero, nonneg, frac, mass, max_bias)


def rendered_negativity(params: DRMMParams, images: Any, *, batch: int = 500) -> dict[str, Any]:
    """Negative part of the partial renderings on the bottom-up path of each image.

    For every image: bottom-up latents ``g*`` and class ``c* = argmax s``, then the top-down partial
    renderings ``z^(l)(c*, g*)``, ``l = 1..L`` (``z^(L) = mu_{c*}``). Returns, per level ``l``,
    the fraction of negative entries and ``||min(z, 0)||_1 / ||z||_1`` over all images, and the mean
    NN value ``sum_l mean relu(-z^(l))^2`` (SPEC §3's penalty at these latents).

    Parameters
    ----------
    params : DRMMParams
    images : array of shape (N, C_0, H_0, W_0), in ``params``' namespace or a host array
    batch : int, default 500
    """
    from .inference import bottom_up, top_down

    xp = params.xp
    host = np.asarray(_backend.to_numpy(images))
    n, L = int(host.shape[0]), params.net.L
    if n == 0:
        raise ValueError("images is empty")
    neg_count, total_count = np.zeros(L), np.zeros(L)
    neg_mass, abs_mass, nn_sum = np.zeros(L), np.zeros(L), 0.0
    dt = _backend.to_numpy(params.class_templates).dtype
    for s in range(0, n, batch):
        x = _backend.asarray(host[s:s + batch].astype(dt), xp=xp, device=params.device)
        m = int(x.shape[0])
        zs = top_down(params, bottom_up(params, x)).renderings
        nn = 0.0
        for l in range(1, L + 1):
            z = _backend.to_numpy(zs[l]).astype(np.float64)
            neg = np.minimum(z, 0.0)
            neg_count[l - 1] += np.sum(z < 0)
            total_count[l - 1] += z.size
            neg_mass[l - 1] += -np.sum(neg)
            abs_mass[l - 1] += np.sum(np.abs(z))
            nn += float(np.mean(neg * neg))
        nn_sum += nn * m
    levels = [f"z{l}" for l in range(1, L + 1)]
    return {"negative_fraction": dict(zip(levels, (neg_count / total_count).tolist())),
            "negative_mass": dict(zip(levels, np.where(abs_mass > 0, neg_mass / np.maximum(abs_mass, 1e-300),
                                                        0.0).tolist())),
            "mean_nn": nn_sum / n, "n_images": n}
