"""Initialisation of RMM templates by k-means++ seeding on image patches (SPEC §1, recovery setup).

Every ``k x k`` patch of every image (at every position of the grid, zero-padded when ``q > 0``)
is a candidate. k-means++ picks ``K M`` of them in sequence, each with probability proportional to
its squared distance to the nearest template already picked. Our choices (SPEC is silent):

* the *first* template of a class is drawn with probability proportional to the patch's squared
  norm, not uniformly: most patches of a rendering model are background noise, and a uniform draw
  would mostly pick one;
* supervised (``labels`` given): the ``M`` templates of class ``c`` are drawn among the patches of
  the images labelled ``c``, with distances to that class's templates only;
* candidates: by default one patch per image, its highest-energy one (with the switch on, the whole
  aligned stamp; shifted partial copies are where shift-invariant mixtures get stuck, SPEC §1);
  ``candidates='all'`` uses every patch;
* a few Lloyd iterations follow the seeding (supervised: within each class).

Random draws use ``numpy.random.default_rng`` on the host (only the probability vector travels);
the patch arithmetic runs in the images' namespace.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .._backend import device_of, get_namespace, to_numpy
from .params import RMMParams

__all__ = ["extract_patches", "kmeans_pp_templates", "init_params"]


def extract_patches(images: Any, kernel: int, padding: int = 0) -> Any:
    """All ``k x k`` patches ``P_g I``: array of shape (N, Hg*Wg, C*k*k), row-major positions.

    Built from ``k^2`` shifted slices of the zero-padded images (no loop over examples or positions).
    """
    xp = get_namespace(images, names=("images",))
    n, c, h, w = images.shape
    k, q = int(kernel), int(padding)
    hg, wg = h + 2 * q - k + 1, w + 2 * q - k + 1
    if hg < 1 or wg < 1:
        raise ValueError(f"kernel {k} with padding {q} does not fit images of side {h}x{w}")
    if q:
        padded = xp.zeros((n, c, h + 2 * q, w + 2 * q), dtype=images.dtype, device=device_of(images))
        padded[:, :, q : q + h, q : q + w] = images
    else:
        padded = images
    views = [padded[:, :, i : i + hg, j : j + wg] for i in range(k) for j in range(k)]  # k^2 kernel offsets
    stacked = xp.stack(views, axis=-1)  # (N, C, Hg, Wg, k*k)
    stacked = xp.permute_dims(stacked, (0, 2, 3, 1, 4))  # (N, Hg, Wg, C, k*k)
    return xp.reshape(stacked, (n, hg * wg, c * k * k))


def kmeans_pp_templates(images: Any, num_templates: int, kernel: int, *, padding: int = 0,
                        labels: Optional[Any] = None, per_class: int = 1, candidates: str = "max_energy",
                        lloyd_iters: int = 5, seed: Any = None) -> Any:
    """k-means++ seeding on patches (module docstring).

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    num_templates : int
        ``K M`` templates to pick (ordered class-major: template ``j`` belongs to class ``j // per_class``).
    kernel : int
        Patch side ``k``.
    padding : int, default 0
    labels : int array of shape (N,), optional
        Supervised: template ``j`` is drawn from the patches of images labelled ``j // per_class``.
    per_class : int, default 1
        ``M`` (used with ``labels``).
    candidates : {'max_energy', 'all'}, default 'max_energy'
        ``'max_energy'``: one candidate per image, its patch of largest squared norm (the stamp, when
        the switch is on; aligned, not a shifted partial copy). ``'all'``: every patch of every image.
    lloyd_iters : int, default 5
        Lloyd (k-means) iterations on the candidates after the seeding (supervised: within each class).
    seed : int or Generator, optional

    Returns
    -------
    array of shape (num_templates, C, k, k)
    """
    xp = get_namespace(images, labels, names=("images", "labels"))
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n, c = images.shape[0], images.shape[1]
    k = int(kernel)
    if candidates not in ("max_energy", "all"):
        raise ValueError(f"candidates must be 'max_energy' or 'all', got {candidates!r}")
    patches = extract_patches(images, k, padding)  # (N, G, P)
    g = patches.shape[1]
    if candidates == "all":
        flat = xp.reshape(patches, (n * g, c * k * k))
        reps = g
    else:
        energy = xp.sum(patches * patches, axis=2)  # (N, G)
        best = xp.argmax(energy, axis=1)
        hot = xp.arange(g, dtype=best.dtype, device=device_of(images))[None, :] == best[:, None]
        zero = xp.zeros((), dtype=images.dtype, device=device_of(images))
        flat = xp.sum(xp.where(hot[:, :, None], patches, zero), axis=1)  # (N, P)
        reps = 1
        g = 1
    sqnorm = xp.sum(flat * flat, axis=1)
    if labels is not None:
        owner = np.repeat(np.asarray(to_numpy(labels), dtype=np.int64), reps)  # class of each candidate
    chosen = []
    dist = None  # squared distance of every patch to the nearest template picked so far (of this class)
    for j in range(num_templates):  # k-means++ is sequential in the templates it picks
        if labels is not None and j % per_class == 0:
            dist = None  # a new class starts afresh
        weights = np.asarray(to_numpy(sqnorm if dist is None else dist), dtype=np.float64)
        if labels is not None:
            mine = owner == j // per_class
            if not np.any(mine):
                raise ValueError(f"labels has no example of class {j // per_class}: cannot initialise its templates")
            weights = np.where(mine, weights, 0.0)
        total = weights.sum()
        if not np.isfinite(total) or total <= 0:  # constant data: fall back to a uniform draw
            candidates = np.nonzero(mine)[0] if labels is not None else np.arange(n * g)
            pick = int(rng.choice(candidates))
        else:
            pick = int(rng.choice(weights.size, p=weights / total))
        center = flat[pick, :]
        chosen.append(center)
        d = xp.sum((flat - center) ** 2, axis=1)
        dist = d if dist is None else xp.minimum(dist, d)
    centers = xp.stack(chosen, axis=0)  # (T, P)
    if lloyd_iters:
        dev = device_of(images)
        own = None
        if labels is not None:  # a candidate may only join a template of its own class
            tmpl_class = np.arange(num_templates) // per_class
            own = xp.asarray(owner[:, None] == tmpl_class[None, :], device=dev)
        for _ in range(lloyd_iters):
            d = (xp.sum(flat * flat, axis=1)[:, None] - 2 * xp.matmul(flat, xp.matrix_transpose(centers))
                 + xp.sum(centers * centers, axis=1)[None, :])
            if own is not None:
                d = xp.where(own, d, xp.asarray(float("inf"), dtype=d.dtype, device=dev))
            assign = xp.argmax(-d, axis=1)
            member = xp.astype(assign[:, None] == xp.arange(num_templates, dtype=assign.dtype, device=dev)[None, :],
                               flat.dtype)  # (Ncand, T)
            count = xp.sum(member, axis=0)
            sums = xp.matmul(xp.matrix_transpose(member), flat)
            one = xp.ones((), dtype=flat.dtype, device=dev)
            centers = xp.where((count > 0)[:, None], sums / xp.where(count > 0, count, one)[:, None], centers)
    return xp.reshape(centers, (num_templates, c, k, k))


def init_params(images: Any, num_classes: int, kernel: int, *, labels: Optional[Any] = None,
                num_subtemplates: int = 1, padding: int = 0, switch_prior: float = 0.5,
                candidates: str = "max_energy", seed: Any = None) -> RMMParams:
    """Starting parameters for EM: k-means++ templates, class prior, ``pi_on``, ``sigma^2`` (SPEC §1).

    ``pi_c`` is uniform (label frequencies, floored at ``1e-3``, when supervised), ``pi_on =
    switch_prior``, the nuisance prior uniform, and ``sigma^2`` the mean squared deviation of the
    pixels from their mean (a broad start: posteriors begin soft and sharpen as EM lowers ``sigma^2``).

    Parameters
    ----------
    images : array of shape (N, C, H, W)
    num_classes : int
    kernel : int
    labels : int array of shape (N,), optional
    num_subtemplates : int, default 1
    padding : int, default 0
    switch_prior : float, default 0.5
    candidates : {'max_energy', 'all'}
        Patches k-means++ draws from (:func:`kmeans_pp_templates`).
    seed : int or Generator, optional

    Returns
    -------
    RMMParams
    """
    xp = get_namespace(images, labels, names=("images", "labels"))
    if not xp.isdtype(images.dtype, "real floating") or images.ndim != 4:
        raise ValueError(f"images must be a real floating array of shape (N, C, H, W), got {tuple(images.shape)}")
    if not bool(xp.all(xp.isfinite(images))):
        raise ValueError("images contains NaN or inf; clean the data first")
    K, M = int(num_classes), int(num_subtemplates)
    if K < 1 or M < 1:
        raise ValueError(f"num_classes and num_subtemplates must be >= 1, got {K}, {M}")
    if labels is not None:
        lab = np.asarray(to_numpy(labels))
        if lab.shape != (images.shape[0],) or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"labels must be an integer array of shape (N,) = ({images.shape[0]},)")
        if lab.min() < 0 or lab.max() >= K:
            raise ValueError(f"labels must lie in [0, {K - 1}]")
    templates = kmeans_pp_templates(images, K * M, kernel, padding=padding, labels=labels, per_class=M,
                                   candidates=candidates, seed=seed)
    c = images.shape[1]
    dt, dev = images.dtype, device_of(images)
    if labels is None:
        cp = np.full(K, 1.0 / K)
    else:
        cp = np.maximum(np.bincount(lab, minlength=K) / lab.size, 1e-3)
        cp = cp / cp.sum()
    var = float(xp.mean((images - xp.mean(images)) ** 2))
    return RMMParams(templates=xp.reshape(templates, (K, M, c, kernel, kernel)),
                     class_prior=xp.asarray(cp, dtype=dt, device=dev), switch_prior=switch_prior,
                     sigma2=max(var, 1e-6), image_shape=tuple(images.shape[2:]), padding=padding)
