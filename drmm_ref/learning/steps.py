"""One training step: EG (E-step, G-step, optional exact block steps) and the backprop baseline.

SPEC §3 (Patel et al. 2016, §3).

**EG step** on a mini-batch ``(I, y)``:

1. E-step (:func:`~drmm_ref.learning.e_step`): latents by the bottom-up pass, rendering of the label;
2. objective ``L = a_CE CE + a_RC RC + a_NN NN + a_H H`` at those latents and its gradient (the
   primitives' VJPs through the bottom-up pass and the rendering);
3. G-step: one optimiser step (SGD or Adam) on every trainable array;
4. optional exact block steps on RC (:func:`~drmm_ref.learning.block_step`), one per block in
   ``EGConfig.cg_blocks``, at the same latents, each damped by ``cg_eta``;
5. trace: the objective and its terms after the E-step, RC after the E-step and (when
   ``trace_m_step``) RC after the M-step at the same latents. RC after the M-step costs one extra
   rendering; it is timed apart (``StepTrace.trace_seconds``) so training times exclude it.

**Backprop step** (the discriminative relaxation, SPEC §3): the same bottom-up pass, CE alone, its
gradient by the same VJPs, the same optimiser. In the paper's reading the forward pass is the
E-step (it fixes the switches) and the gradient step the G-step.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ..drmm import DRMMParams, bottom_up, render
from ._tree import trainable, with_trainable
from .block_step import BlockStepInfo, block_names, block_step
from .closed_forms import PriorStats, prior_stats
from ._checks import check_batch
from .estep import EStep, rendered_classes
from .objectives import LossWeights, Terms, fused_objective_and_gradients, reconstruction
from .parallel import sharded_objective_and_gradients

__all__ = ["EGConfig", "StepTrace", "eg_step", "backprop_step", "BACKPROP_WEIGHTS"]

#: The backprop baseline's objective: cross-entropy alone.
BACKPROP_WEIGHTS = LossWeights(ce=1.0, rc=0.0, nn=0.0, h=0.0)


@dataclasses.dataclass(frozen=True)
class EGConfig:
    """Settings of an EG step.

    Parameters
    ----------
    weights : LossWeights
        Term weights (default: CE 1, RC 1, NN 0.5, H 0).
    cg_blocks : tuple of str, default ()
        Blocks that also get an exact RC step after the G-step (``"filters_<l>"``,
        ``"class_templates"``); empty means the M-step is the G-step alone (what the anchor codes do).
    k_cg : int, default 10
        CGLS iterations per block step.
    cg_damping : float, default 0
        Proximal weight ``lambda`` of the block problem.
    cg_eta : float in (0, 1], default 0.5
        Mini-batch damping ``theta <- theta_old + eta (theta* - theta_old)``.
    relu_topdown : bool, default False
        Non-negativity as the NIPS paper states it (SPEC §5): the rendering passes each partial
        rendering of levels 1..L-1 through a ReLU; RC, NN and the gradient are taken on that
        rendering. Block steps hold its ReLU masks fixed, like the latents.
    trace_m_step : bool, default False
        Record RC after the M-step (one extra rendering per step, timed apart). Off in training:
        the trainer measures RC after the M-step on its monitoring subset once an epoch instead.
    """

    weights: LossWeights = LossWeights()
    cg_blocks: tuple[str, ...] = ()
    k_cg: int = 10
    cg_damping: float = 0.0
    cg_eta: float = 0.5
    relu_topdown: bool = False
    trace_m_step: bool = False

    def __post_init__(self):
        object.__setattr__(self, "cg_blocks", tuple(self.cg_blocks))
        if not 0 < self.cg_eta <= 1:
            raise ValueError(f"cg_eta must be in (0, 1], got {self.cg_eta}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["weights"] = self.weights.to_dict()
        d["cg_blocks"] = list(self.cg_blocks)
        return d


@dataclasses.dataclass(frozen=True)
class StepTrace:
    """What one step measured.

    Attributes
    ----------
    terms : Terms
        Objective and terms at the E-step's latents, before the update.
    rc_after_e : float or None
        RC after the E-step (= ``terms.rc`` when rendered; None for backprop).
    rc_after_m : float or None
        RC at the same latents after the M-step (G-step and block steps); None when not traced.
    seconds : float
        Wall-clock seconds of the step itself (E-step, gradients, updates, statistics).
    cpu_seconds : float
        CPU seconds of the process over the same span (``time.process_time``, all threads): less
        sensitive than wall-clock time to other jobs on a shared machine.
    trace_seconds : float
        Seconds spent only on tracing (RC after the M-step), excluded from ``seconds``.
    blocks : tuple of BlockStepInfo
    stats : PriorStats or None
        Closed-form statistics of the batch (EG only).
    """

    terms: Terms
    rc_after_e: float | None
    rc_after_m: float | None
    seconds: float
    trace_seconds: float = 0.0
    cpu_seconds: float = 0.0
    blocks: tuple[BlockStepInfo, ...] = ()
    stats: PriorStats | None = None


def _rc_at(params: DRMMParams, images: Any, classes: Any, latents: Any, relu_topdown: bool = False) -> float:
    value, _ = reconstruction(images, render(params, classes, latents, check=False, relu_topdown=relu_topdown).image)
    return float(value)


def _sharded(threads: int, images: Any, config: EGConfig) -> bool:
    """Whether a step runs in shards: more than one thread, two rows per shard, no block steps or trace.

    Block steps and the RC-after-M trace need the whole batch's rendering: those steps run unsharded.
    """
    return threads > 1 and int(images.shape[0]) >= 2 * threads and not config.cg_blocks and not config.trace_m_step


def _checked_batch(params: DRMMParams, images: Any, labels: Any) -> Any:
    """Public-boundary checks of a batch (shape, dtype, namespace, finiteness; labels' range): int64 labels or None."""
    xp = check_batch(params, images, labels)
    return None if labels is None else xp.astype(labels, xp.int64)


def eg_step(params: DRMMParams, optimizer: Any, opt_state: Any, images: Any, labels: Any,
            config: EGConfig = EGConfig(), *, check: bool = True,
            threads: int = 1) -> tuple[DRMMParams, Any, StepTrace]:
    r"""One EG step on a mini-batch (SPEC §3; the module docstring lists its parts).

    .. math::

        \text{E:}\quad (t, a) = \text{bottom-up max-sum of } I,\quad
        c_n = y_n \text{ (or } \arg\max_c s_c \text{ when unlabelled)},\quad
        \hat z^{(L)} = \mu_{c_n},\ \hat z^{(l-1)} = \Lambda^{(l)}_{t,a} \hat z^{(l)}

        \text{G:}\quad \theta \leftarrow \mathrm{opt}\big(\theta, \nabla_\theta
        [a_{CE} \mathrm{CE}(s) + a_H \mathrm H(s) + a_{BAL} \mathrm{BAL}(s)
        + a_{RC} \mathrm{RC}(I, \hat z^{(0)}) + a_{NN} \textstyle\sum_{l \ge 1} \mathrm{NN}(\hat z^{(l)})]\big)

    at fixed latents ``(t, a)`` and classes ``c``. The gradient is one fused pass
    (:func:`~drmm_ref.learning.fused_objective_and_gradients`): down, the score cotangent
    ``sbar = dL/ds`` and the templates ``mu_c`` through the same per-layer operator
    ``conv2d_transpose(unpool(a *, t), W)``, collecting ``Wbar^(l) += conv2d_vjp_weight(ubar^(l), h^(l-1))``;
    up, the rendering cotangents ``zbar^(0) = a_RC (x_hat - I)/(ND)``,
    ``zbar^(l) = a * select_t(conv2d(zbar^(l-1), W^(l))) + a_NN dNN/dz^(l)``, collecting
    ``Wbar^(l) += conv2d_vjp_weight(v^(l), zbar^(l-1))`` and ``mubar_c += sum_{n: c_n = c} zbar^(L)_n``.
    Then the optional exact block steps on RC (``config.cg_blocks``) at the same latents.

    Parameters
    ----------
    params : DRMMParams
    optimizer : SGD or Adam
    opt_state : its state (``optimizer.init(trainable(params))``)
    images : array of shape (N, C_0, H_0, W_0)
    labels : int array of shape (N,), or None (unsupervised: render the DCN's decision)
    config : EGConfig
    check : bool, default True
        Check the batch at the boundary. The trainer checks its data set once and passes False,
        so that a step makes no host synchronisation besides reading the objective's value.
    threads : int, default 1
        Host threads: with more than one, the batch is cut into that many shards computed in
        parallel (:mod:`~drmm_ref.learning.parallel`; equal to the one-shard step to rounding).

    Returns
    -------
    params, opt_state, StepTrace
    """
    start, cpu0 = time.perf_counter(), time.process_time()
    names = block_names(params.net.L)
    for b in config.cg_blocks:
        if b not in names:
            raise ValueError(f"cg_blocks entry {b!r} is not a block; choose from {names}")
    if check:
        labels = _checked_batch(params, images, labels)
    if _sharded(threads, images, config):
        terms, grads, stats, _ = sharded_objective_and_gradients(params, images, labels, config.weights, threads,
                                                                 relu_topdown=config.relu_topdown)
        tree, opt_state = optimizer.update(trainable(params), grads, opt_state)
        params = with_trainable(params, tree)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
        return params, opt_state, StepTrace(terms, terms.rc, None, seconds, cpu_seconds=cpu, stats=stats)
    fw = bottom_up(params, images, check=False)
    classes = rendered_classes(fw, labels)
    terms, grads, rendering = fused_objective_and_gradients(params, fw, classes, labels, config.weights,
                                                            relu_topdown=config.relu_topdown)
    if rendering is None and config.cg_blocks:
        rendering = render(params, classes, fw.latents, check=False, relu_topdown=config.relu_topdown)
    est = EStep(fw, classes, None, rendering)
    tree, opt_state = optimizer.update(trainable(params), grads, opt_state)
    params = with_trainable(params, tree)
    infos = []
    for b in config.cg_blocks:
        rendering = render(params, est.classes, est.latents, check=False, relu_topdown=config.relu_topdown)
        theta, info = block_step(params, images, rendering, b, k_cg=config.k_cg, damping=config.cg_damping)
        old = trainable(params)[b]
        params = with_trainable(params, {b: old + config.cg_eta * (theta - old)})
        infos.append(info)
    stats = prior_stats(est)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    rc_m, trace_s = None, 0.0
    if config.trace_m_step:
        t0 = time.perf_counter()
        rc_m = _rc_at(params, images, est.classes, est.latents, config.relu_topdown)
        trace_s = time.perf_counter() - t0
    rc_e = terms.rc
    if rc_e is None and est.rendering is not None:
        rc_e = float(reconstruction(images, est.rendering.image)[0])
    return params, opt_state, StepTrace(terms, rc_e, rc_m, seconds, trace_seconds=trace_s, cpu_seconds=cpu,
                                        blocks=tuple(infos), stats=stats)


def backprop_step(params: DRMMParams, optimizer: Any, opt_state: Any, images: Any,
                  labels: Any, *, check: bool = True, threads: int = 1) -> tuple[DRMMParams, Any, StepTrace]:
    """One backprop step of the baseline DCN: bottom-up pass, CE, its gradient, one optimiser step.

    ``check=False`` skips the boundary checks of the batch and ``threads`` shards it (see :func:`eg_step`).
    """
    start, cpu0 = time.perf_counter(), time.process_time()
    if check:
        labels = _checked_batch(params, images, labels)
    if _sharded(threads, images, EGConfig()):
        terms, grads, _, _ = sharded_objective_and_gradients(params, images, labels, BACKPROP_WEIGHTS, threads,
                                                             stats=False)
    else:
        fw = bottom_up(params, images, check=False)
        terms, grads, _ = fused_objective_and_gradients(params, fw, None, labels, BACKPROP_WEIGHTS)
    tree, opt_state = optimizer.update(trainable(params), grads, opt_state)
    params = with_trainable(params, tree)
    return params, opt_state, StepTrace(terms, None, None, time.perf_counter() - start,
                                        cpu_seconds=time.process_time() - cpu0)
