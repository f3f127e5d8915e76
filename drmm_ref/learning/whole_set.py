"""The DRMM's whole-set EM: an E-step over every training image, then an exact M-step over all of them (SPEC §3).

The paper's EM (Patel et al. 2016, §3) alternates an E-step (hard latents of every image) and an
M-step over the *data set* at those fixed latents. The trainer instead applies the exact block
step per mini-batch with damping (:mod:`~drmm_ref.learning.block_step`), because a whole-set CGLS
renders every image twice per iteration. This module runs the whole-set version in ``O(chunk)``
working memory, as sums over chunks of images:

* **E-step** (:func:`whole_set_e_step`): the bottom-up pass and rendering of every chunk
  (:func:`~drmm_ref.learning.e_step`); the closed forms' statistics add over chunks
  (:class:`~drmm_ref.learning.PriorStats`); the latents are kept in one of two forms
  (:class:`WholeSetLatents`):

  - ``"stored"`` (default): compactly on the host, positions as ``uint8`` (only for layers that pool,
    and ``t = 0`` where the switch is off, which does not change the rendering) and switches packed 8 to a
    byte: ``sum_{l: p_l > 1} C_l H_l W_l + sum_l C_l H_l W_l / 8`` bytes per image (conv-small on
    MNIST: 11 kB; 50,000 images: 0.55 GB, against 8.9 GB as ``int64`` + ``bool``);
  - ``"recompute"``: nothing but a copy of the E-step's parameters; every pass recomputes each
    chunk's latents by the bottom-up pass (``O(1)`` memory, one bottom-up pass more per chunk and pass).

* **M-step** (:func:`whole_set_m_step`): the closed forms (:func:`~drmm_ref.learning.apply_closed_forms`)
  from the summed statistics, then one exact CGLS block step per block (:func:`whole_set_block_step`),
  in order, each at the parameters the previous block left. The operator ``A_B theta`` (render the
  chunk with the block set to ``theta``) and its adjoint are the per-batch ones
  (:func:`~drmm_ref.learning.block_operator`, checked against ``drmm.render`` / ``drmm.render_vjp``),
  applied chunk by chunk; CGLS is run with its vectors in *parameter* space:

  .. math::

      g = A^T r,\\quad \\|r - \\alpha q\\|^2 = \\|r\\|^2 - 2\\alpha\\langle g, p\\rangle + \\alpha^2 \\|q\\|^2,\\quad
      A^T(r - \\alpha q) = g - \\alpha \\textstyle\\sum_c A_c^T A_c p

  so one pass per iteration computes ``sum_c ||A_c p||^2`` and ``sum_c A_c^T A_c p`` and no
  image-sized vector outlives its chunk. In exact arithmetic these are the iterates of
  :func:`~drmm_ref.learning.block_step` on the concatenated batch (the tests check it to rounding).
  Cost of a block step with ``k_CG`` iterations: ``k_CG + 2`` passes (the last recomputes RC at the
  returned block, as :func:`~drmm_ref.learning.block_step` does), each one base rendering of
  the chunk (the operator's fixed maps) plus one apply and one adjoint.

The M-step never raises RC at fixed latents (each block step is the exact CGLS minimiser over its
Krylov space, started at the current value); the E-step can (it is the DCN's max-sum, SPEC §3).
Training uses it through ``TrainConfig(m_step="whole-set")`` / ``drmm-ref train --m-step whole-set``: after
each epoch's mini-batch EG pass, :func:`~drmm_ref.learning.fit_loop.whole_set_update` runs
:func:`whole_set_e_step` and :func:`whole_set_m_step` in place of the closed forms (``docs/learning.md``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import numpy as np

from .. import _backend
from ..drmm import DRMMParams, Latents, render
from ..numerics import dtype_name
from .block_step import _NOISE_ULPS, BlockStepInfo, block_names, block_operator
from .closed_forms import PriorStats, apply_closed_forms, prior_stats
from .estep import e_step

__all__ = ["WholeSetLatents", "whole_set_e_step", "whole_set_block_step", "whole_set_m_step", "WholeSetEpoch",
           "whole_set_epoch", "pack_latents", "unpack_latents"]

LATENT_MODES = ("stored", "recompute")


def _chunks(n: int, chunk_size: int):
    b = int(chunk_size)
    if b < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return [(s, min(s + b, n)) for s in range(0, n, b)]


def pack_latents(latents: Latents, pools: tuple[int, ...]) -> tuple[tuple, tuple]:
    """Host compact form: ``(positions, switches)``; ``positions[l]`` uint8 (``None`` where ``p_l = 1``),
    ``switches[l]`` bit-packed ``uint8`` of shape (N, ceil(C_l H_l W_l / 8)). Positions are set to 0 where
    the switch is off (:meth:`~drmm_ref.drmm.Latents.canonical`; the rendering is the same)."""
    canon = latents.canonical()
    positions, switches = [], []
    for t, a, p in zip(canon.positions, canon.switches, pools):
        if p * p > 256:
            raise ValueError(f"pool size {p} has {p * p} positions per window: more than uint8 holds")
        host_a = np.asarray(_backend.to_numpy(a), dtype=bool)
        n = host_a.shape[0]
        switches.append(np.packbits(host_a.reshape(n, -1), axis=1))
        positions.append(None if p == 1 else np.asarray(_backend.to_numpy(t)).astype(np.uint8))
    return tuple(positions), tuple(switches)


def unpack_latents(positions: tuple, switches: tuple, shapes: tuple, xp: Any, device: Any = None) -> Latents:
    """Inverse of :func:`pack_latents` (canonical latents) in namespace ``xp`` on ``device``."""
    ts, as_ = [], []
    for t, a, shape in zip(positions, switches, shapes):
        n = a.shape[0]
        units = math.prod(shape)
        bits = np.unpackbits(a, axis=1, count=units).astype(bool).reshape((n,) + tuple(shape))
        host_t = np.zeros((n,) + tuple(shape), dtype=np.int64) if t is None else t.astype(np.int64)
        ts.append(_backend.asarray(host_t, xp=xp, device=device))
        as_.append(_backend.asarray(bits, xp=xp, device=device))
    return Latents(tuple(ts), tuple(as_))


@dataclasses.dataclass(frozen=True, eq=False)
class WholeSetLatents:
    """The E-step's classes and latents for every image, stored compactly or recomputed (module docstring).

    Attributes
    ----------
    mode : {'stored', 'recompute'}
    classes : int64 array of shape (N,)
        ``c_n`` (host).
    positions, switches : tuples (``'stored'``)
        :func:`pack_latents` of all images, concatenated.
    e_params : DRMMParams (``'recompute'``)
        The parameters of the E-step.
    labels : int array of shape (N,) or None (``'recompute'``)
    stats : PriorStats
        The closed forms' statistics of the E-step (with the squared residual of its rendering).
    """

    mode: str
    classes: np.ndarray
    stats: PriorStats
    positions: tuple = ()
    switches: tuple = ()
    e_params: Optional[DRMMParams] = None
    labels: Any = None

    @property
    def n(self) -> int:
        return int(self.classes.shape[0])

    @property
    def nbytes(self) -> int:
        """Host bytes held (classes, packed positions and switches)."""
        arrays = [self.classes, *self.switches, *(t for t in self.positions if t is not None)]
        return int(sum(a.nbytes for a in arrays))

    def chunk(self, params: DRMMParams, images: Any, start: int, stop: int) -> tuple[Any, Latents]:
        """``(classes, latents)`` of images ``start:stop`` in ``params``' namespace and device."""
        xp, dev = params.xp, params.device
        if self.mode == "recompute":
            labels = None if self.labels is None else self.labels[start:stop]
            est = e_step(self.e_params, images[start:stop, ...], labels, render_=False)
            return est.classes, est.latents
        shapes = tuple(params.net.shapes[1:])
        lat = unpack_latents(tuple(None if t is None else t[start:stop] for t in self.positions),
                             tuple(a[start:stop] for a in self.switches), shapes, xp, dev)
        return _backend.asarray(self.classes[start:stop], xp=xp, device=dev), lat


def whole_set_e_step(params: DRMMParams, images: Any, labels: Any = None, *, chunk_size: int = 500,
                     latents: str = "stored") -> WholeSetLatents:
    """Hard E-step over every image, a chunk at a time (SPEC §3): classes, latents and the closed forms' statistics.

    Parameters
    ----------
    params : DRMMParams
    images : array of shape (N, C_0, H_0, W_0)
    labels : int array of shape (N,), optional
        Clamp the rendered class (``UNLABELLED`` = -1 entries use the DCN's decision).
    chunk_size : int, default 500
    latents : {'stored', 'recompute'}
        How the M-step gets the latents back (module docstring).

    Returns
    -------
    WholeSetLatents
    """
    if latents not in LATENT_MODES:
        raise ValueError(f"latents must be one of {LATENT_MODES}, got {latents!r}")
    n = int(images.shape[0])
    if n < 1:
        raise ValueError("images must hold at least one image, got N = 0")
    pools = tuple(ly.pool for ly in params.net.layers)
    stats = PriorStats.zeros(params.net.n_classes, params.net.L)
    classes, pos_parts, sw_parts = [], [], []
    for s, e in _chunks(n, chunk_size):
        x = images[s:e, ...]
        est = e_step(params, x, None if labels is None else labels[s:e])
        stats = stats + prior_stats(est, x)
        classes.append(np.asarray(_backend.to_numpy(est.classes), dtype=np.int64))
        if latents == "stored":
            pos, sw = pack_latents(est.latents, pools)
            pos_parts.append(pos)
            sw_parts.append(sw)
    cls = np.concatenate(classes)
    if latents == "recompute":
        return WholeSetLatents("recompute", cls, stats, e_params=params, labels=labels)
    L = params.net.L
    positions = tuple(None if pools[l] == 1 else np.concatenate([p[l] for p in pos_parts]) for l in range(L))
    switches = tuple(np.concatenate([w[l] for w in sw_parts]) for l in range(L))
    return WholeSetLatents("stored", cls, stats, positions=positions, switches=switches)


def _block_value(params: DRMMParams, block: str) -> Any:
    return params.class_templates if block == "class_templates" else params.filters[int(block.split("_")[1]) - 1]


def _with_block(params: DRMMParams, block: str, theta: Any) -> DRMMParams:
    if block == "class_templates":
        return params.replace(class_templates=theta)
    l = int(block.split("_")[1])
    filters = list(params.filters)
    filters[l - 1] = theta
    return params.replace(filters=tuple(filters))


def whole_set_block_step(params: DRMMParams, images: Any, latents: WholeSetLatents, block: str, *, k_cg: int = 10,
                         damping: float = 0.0, tol: float = 0.0, chunk_size: int = 500) -> tuple[Any, BlockStepInfo]:
    """Minimise ``RC_B + (damping/2) ||theta - theta_old||^2`` over the whole set by CGLS at fixed latents.

    The whole-set counterpart of :func:`~drmm_ref.learning.block_step` (same arguments, same
    result on the concatenated batch up to rounding), with the operator applied chunk by chunk and
    CGLS's vectors in parameter space (module docstring). RC is the per-pixel mean over all ``N D``
    pixels.

    Returns
    -------
    theta : array shaped like the block, in the parameters' dtype
    BlockStepInfo
        ``rc_iterates`` from the recurrence ``||r - alpha q||^2``; ``rc_final`` recomputed from the
        returned block (one more pass). The guards of :func:`~drmm_ref.learning.block_step` apply: stop
        at the operator's rounding level, reject an iterate that raises the objective, return the old
        block if the recomputed RC is above ``rc_before``.
    """
    xp = params.xp
    if block not in block_names(params.net.L):
        raise ValueError(f"block must be one of {block_names(params.net.L)}, got {block!r}")
    if int(k_cg) < 1:
        raise ValueError(f"k_cg must be >= 1, got {k_cg}")
    if not (damping >= 0 and math.isfinite(damping)):
        raise ValueError(f"damping must be finite and >= 0, got {damping}")
    n = int(images.shape[0])
    if latents.n != n:
        raise ValueError(f"latents hold {latents.n} images but images has {n}; run whole_set_e_step on these images")
    f64, work = xp.float64, params.dtype
    eps = float(np.finfo(dtype_name(work)).eps)
    old = _block_value(params, block)
    size = n * math.prod(images.shape[1:])  # N D
    lam = float(damping) * size
    bounds = _chunks(n, chunk_size)

    def sq(a):
        return float(xp.sum(a * a))

    def operators():
        for s, e in bounds:
            classes, lat = latents.chunk(params, images, s, e)
            yield s, e, block_operator(params, render(params, classes, lat), block)

    # r0 = I - A theta_old: ||r0||^2 and g = A^T r0 (one pass)
    rr, g = 0.0, None
    for s, e, op in operators():
        r = xp.astype(images[s:e, ...], f64) - xp.astype(op.apply(old), f64)
        rr += sq(r)
        part = xp.astype(op.adjoint(xp.astype(r, work)), f64)
        g = part if g is None else g + part
    rc_before = rr / (2 * size)
    x = xp.zeros(tuple(old.shape), dtype=f64, device=params.device)
    s_vec = g
    p = s_vec
    gamma = gamma0 = sq(s_vec)
    objective = rr  # ||r||^2 + lam ||x||^2 at x = 0
    norm_a2 = 0.0  # largest Rayleigh quotient ||A p||^2 / ||p||^2: a lower estimate of ||A||^2
    iterates, stopped = [], "k_cg"
    if not math.isfinite(gamma0):
        raise ValueError(f"whole_set_block_step: the gradient of RC in {block} is not finite (inf or NaN); the "
                         "images or the parameters are too large for the working dtype")
    for _ in range(int(k_cg)):
        # the guards of block_step: stop at the rounding level of the operator
        if gamma == 0.0 or (tol > 0 and gamma <= tol * gamma0) or \
                gamma <= (_NOISE_ULPS * eps) ** 2 * max(norm_a2, 0.0) * rr:
            stopped = "converged"
            break
        pp = sq(p)
        qq, atq = 0.0, None
        p_work = xp.astype(p, work)
        for s, e, op in operators():  # one pass: ||A p||^2 and A^T A p
            q = op.apply(p_work)
            qq += sq(xp.astype(q, f64))
            part = xp.astype(op.adjoint(q), f64)
            atq = part if atq is None else atq + part
        norm_a2 = max(norm_a2, qq / pp) if pp > 0 else norm_a2
        denom = qq + lam * pp
        alpha = gamma / denom if denom > 0 else math.inf
        if not math.isfinite(alpha):
            stopped = "converged"
            break
        x_new = x + alpha * p
        rr_new = rr - 2 * alpha * float(xp.sum(g * p)) + alpha * alpha * qq  # ||r - alpha q||^2, <r, q> = <g, p>
        objective_new = rr_new + lam * sq(x_new)
        if not (objective_new <= objective and rr_new <= rr):  # rounding noise (or NaN): reject, stop
            stopped = "no_descent"
            break
        x, rr, objective = x_new, rr_new, objective_new
        g = g - alpha * atq
        iterates.append(max(rr, 0.0) / (2 * size))
        s_vec = g - lam * x
        gamma_new = sq(s_vec)
        p = s_vec + (gamma_new / gamma) * p
        gamma = gamma_new
    theta = xp.astype(xp.astype(old, f64) + x, work)
    rc_final = rc_before
    if iterates:  # RC recomputed from the returned block (one more pass), as block_step does
        total = 0.0
        for s, e, op in operators():
            total += sq(xp.astype(images[s:e, ...], f64) - xp.astype(op.apply(theta), f64))
        rc_final = total / (2 * size)
        if not rc_final <= rc_before:
            theta, rc_final, stopped = old, rc_before, "rejected"
    return theta, BlockStepInfo(block, rc_before, tuple(iterates), len(iterates), rc_final, stopped)


def whole_set_m_step(params: DRMMParams, images: Any, latents: WholeSetLatents, *, blocks: Optional[tuple] = None,
                     k_cg: int = 10, damping: float = 0.0, chunk_size: int = 500
                     ) -> tuple[DRMMParams, tuple[BlockStepInfo, ...]]:
    """Closed forms from the E-step's statistics, then one whole-set block step per block, in order (SPEC §3)."""
    names = block_names(params.net.L)
    blocks = names if blocks is None else tuple(blocks)
    for b in blocks:
        if b not in names:
            raise ValueError(f"blocks entry {b!r} is not a block; choose from {names}")
    params = apply_closed_forms(params, latents.stats)
    infos = []
    for b in blocks:
        theta, info = whole_set_block_step(params, images, latents, b, k_cg=k_cg, damping=damping,
                                           chunk_size=chunk_size)
        params = _with_block(params, b, theta)
        infos.append(info)
    return params, tuple(infos)


@dataclasses.dataclass(frozen=True)
class WholeSetEpoch:
    """One whole-set EM epoch: RC at the E-step (per-pixel mean) and each block step's trace."""

    rc_e_step: float
    blocks: tuple
    latent_bytes: int

    @property
    def rc_m_step(self) -> float:
        return self.blocks[-1].rc_after if self.blocks else self.rc_e_step


def whole_set_epoch(params: DRMMParams, images: Any, labels: Any = None, *, chunk_size: int = 500,
                    latents: str = "stored", blocks: Optional[tuple] = None, k_cg: int = 10,
                    damping: float = 0.0) -> tuple[DRMMParams, WholeSetEpoch]:
    """One epoch of the DRMM's EM over the whole set: :func:`whole_set_e_step`, then :func:`whole_set_m_step`."""
    lat = whole_set_e_step(params, images, labels, chunk_size=chunk_size, latents=latents)
    params, infos = whole_set_m_step(params, images, lat, blocks=blocks, k_cg=k_cg, damping=damping,
                                     chunk_size=chunk_size)
    return params, WholeSetEpoch(lat.stats.squared_residual / (2 * max(lat.stats.pixels, 1)), infos, lat.nbytes)
