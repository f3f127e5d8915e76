"""Brute-force oracle: every latent configuration of a *tiny* DRMM (SPEC §2 D1, D3; SPEC §6).

**An oracle for tiny nets, never used by the library's inference.** It lists every configuration
``g = (t_j, a_j)_j`` of every unit of every layer — ``prod_l (2 p_l^2)^(C_l H_l W_l)`` of them per
class — renders each with :func:`~drmm_ref.drmm.render.render`, and evaluates, for every image
and class, the max-sum ``max_g <mu_{c,g}, I>``, the full MAP ``max_g ln p(I, c, g)`` and the
marginal ``ln p(I, c) = logsumexp_g ln p(I, c, g)``. The claim ``drmm-maxsum-dcn`` and the tests
compare them with the DCN forward; ``drmm-param-count`` counts the pairs it enumerates.

Configuration order: mixed radix over units, layer 1 first, each layer's units in C-order; a
unit's digit ``d in [0, 2 p^2)`` means ``t = d // 2``, ``a = d % 2``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .. import _backend
from .. import primitives as P
from ._common import check_images
from .inference import log_prior_latents
from .latents import Latents
from .network import Layer, Network
from .params import DRMMParams
from .render import render

__all__ = ["MAX_CONFIGURATIONS", "Enumeration", "enumerate_latents", "enumerate_renderings", "brute_force_scores",
           "random_tiny_network"]

#: Largest number of configurations per class the oracle accepts (SPEC §6: 2^16 for random tiny nets).
MAX_CONFIGURATIONS = 1 << 16


def enumerate_latents(net: Any, *, xp: Any = "numpy", device: Any = None,
                      max_configurations: int = MAX_CONFIGURATIONS) -> Latents:
    """Every latent configuration of ``net`` as one :class:`Latents` batch of size ``prod_l |G^(l)|``."""
    if net.log10_latent_configurations() > 18:
        raise ValueError(f"network {net.name!r} has 10^{net.log10_latent_configurations():.0f} latent configurations "
                         f"per class; the brute-force oracle is for tiny nets (<= {max_configurations})")
    total = net.latent_configurations()
    if total > max_configurations:
        raise ValueError(f"network {net.name!r} has {total} latent configurations per class, more than "
                         f"max_configurations={max_configurations}; the brute-force oracle is for tiny nets")
    codes = np.arange(total, dtype=np.int64)
    positions, switches = [], []
    for l in range(1, net.L + 1):
        shape = tuple(net.shapes[l])
        radix = 2 * net.layers[l - 1].pool ** 2
        digits = np.empty((total, math.prod(shape)), dtype=np.int64)
        for j in range(digits.shape[1]):
            digits[:, j] = codes % radix
            codes = codes // radix
        positions.append(_backend.asarray((digits // 2).reshape((total,) + shape), xp=xp, device=device))
        switches.append(_backend.asarray((digits % 2 == 1).reshape((total,) + shape), xp=xp, device=device))
    return Latents(tuple(positions), tuple(switches))


@dataclasses.dataclass(frozen=True, eq=False)
class Enumeration:
    """Every (c, g) of a tiny DRMM rendered.

    Attributes
    ----------
    latents : Latents
        The G configurations (batch G), shared by all classes.
    renderings : array of shape (K, G, D)
        ``mu_{c,g}`` flattened (D = C_0 H_0 W_0).
    sq_norms : array of shape (K, G)
        ``||mu_{c,g}||^2``.
    log_prior : array of shape (G,)
        ``sum_{l,j} [ln pi(a_j) + ln pi(t_j)]``.
    """

    latents: Latents
    renderings: Any
    sq_norms: Any
    log_prior: Any

    @property
    def n_configurations(self) -> int:
        """G, configurations per class."""
        return int(self.renderings.shape[1])

    @property
    def n_pairs(self) -> int:
        """Number of (c, g) pairs enumerated: K G."""
        return int(self.renderings.shape[0]) * self.n_configurations

    def n_canonical(self) -> int:
        """Distinct configurations once ``t`` is set to 0 where ``a = 0`` (SPEC §2: ``prod_l (p_l^2 + 1)^units``)."""
        canon = self.latents.canonical()
        cols = [_backend.to_numpy(t).reshape(self.n_configurations, -1) for t in canon.positions]
        cols += [_backend.to_numpy(a).reshape(self.n_configurations, -1).astype(np.int64) for a in canon.switches]
        return int(np.unique(np.concatenate(cols, axis=1), axis=0).shape[0])


def enumerate_renderings(params: DRMMParams, *, max_configurations: int = MAX_CONFIGURATIONS) -> Enumeration:
    """Render every configuration of every class of a tiny DRMM (see :class:`Enumeration`)."""
    xp, net = params.xp, params.net
    lat = enumerate_latents(net, xp=xp, device=params.device, max_configurations=max_configurations)
    g = lat.n
    rows = []
    for c in range(net.n_classes):
        image = render(params, c, lat).image
        rows.append(xp.reshape(image, (g, net.n_pixels)))
    rend = xp.stack(rows, axis=0)
    return Enumeration(lat, rend, xp.sum(rend * rend, axis=2), log_prior_latents(params, lat))


def brute_force_scores(params: DRMMParams, images: Any, enumeration: Enumeration | None = None) -> dict[str, Any]:
    """Max-sum, full-MAP and marginal class scores of ``images`` by enumeration.

    Parameters
    ----------
    params : DRMMParams
    images : array of shape (N, C_0, H_0, W_0)
    enumeration : Enumeration, optional
        Reuse a precomputed :func:`enumerate_renderings` of the same parameters.

    Returns
    -------
    dict of arrays of shape (N, K)
        ``"maxsum"``: ``max_g <mu_{c,g}, I>`` (D1's right-hand side);
        ``"map"``: ``max_g ln p(I, c, g)`` (the full log joint, SPEC §2);
        ``"marginal"``: ``ln p(I, c) = logsumexp_g ln p(I, c, g)`` (the Bayes class score);
        ``"map_argmax"``: int64 index into ``enumeration.latents`` of a full-MAP configuration.
    """
    xp = check_images(params, images)
    enum = enumeration if enumeration is not None else enumerate_renderings(params)
    net = params.net
    n = images.shape[0]
    flat = xp.reshape(images, (n, net.n_pixels))
    s2 = params.noise_variance
    const = -xp.sum(flat * flat, axis=1) / (2 * s2) - 0.5 * net.n_pixels * math.log(2 * math.pi * s2)
    log_pc = xp.log(params.class_prior)
    maxsum, lmap, marg, amap = [], [], [], []
    for c in range(net.n_classes):
        corr = xp.matmul(flat, xp.matrix_transpose(enum.renderings[c, ...]))  # (N, G)
        maxsum.append(xp.max(corr, axis=1))
        lj = (corr - 0.5 * xp.reshape(enum.sq_norms[c, ...], (1, -1))) / s2 + xp.reshape(enum.log_prior, (1, -1))
        lmap.append(xp.max(lj, axis=1))
        amap.append(xp.astype(xp.argmax(lj, axis=1), xp.int64))
        marg.append(P.logsumexp(lj, axis=1, xp=xp))
    stack = lambda vals: xp.stack(vals, axis=1)  # noqa: E731
    offset = xp.reshape(const, (n, 1)) + xp.reshape(log_pc, (1, net.n_classes))
    return {"maxsum": stack(maxsum), "map": stack(lmap) + offset, "marginal": stack(marg) + offset,
            "map_argmax": stack(amap)}


def random_tiny_network(seed: Any = 0, *, max_configurations: int = MAX_CONFIGURATIONS, max_side: int = 8) -> Network:
    """A random network small enough for the oracle: ``prod_l (2 p_l^2)^units_l <= max_configurations``.

    Draws (by rejection, with ``numpy.random.default_rng(seed)``) 1-3 layers of 1-3 channels,
    kernels 1-3, paddings 0-1, pools 1-2, 1-2 image channels, image sides 2..max_side and K in 2..3.
    """
    rng = np.random.default_rng(seed) if not isinstance(seed, np.random.Generator) else seed
    for _ in range(10_000):
        n_layers = int(rng.integers(1, 4))
        layers = [Layer(channels=int(rng.integers(1, 4)), kernel=int(rng.integers(1, 4)),
                        padding=int(rng.integers(0, 2)), pool=int(rng.integers(1, 3))) for _ in range(n_layers)]
        side = int(rng.integers(2, max_side + 1))
        try:
            net = Network((int(rng.integers(1, 3)), side, side), tuple(layers), int(rng.integers(2, 4)),
                          name="random-tiny")
        except ValueError:
            continue
        if 2 <= net.latent_configurations() <= max_configurations:
            return net
    raise RuntimeError("no random tiny network found; raise max_configurations")  # pragma: no cover
