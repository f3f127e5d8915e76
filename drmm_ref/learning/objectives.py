"""The terms of the EG objective and their cotangents (SPEC §3; Patel et al. 2016, §3).

With the latents of the E-step held fixed,

.. math::

    \\mathcal L = a_{CE}\\,\\mathrm{CE} + a_{RC}\\,\\mathrm{RC} + a_{NN}\\,\\mathrm{NN} + a_H\\,\\mathrm H

    \\mathrm{CE} = \\tfrac1N \\textstyle\\sum_n \\big[\\mathrm{lse}(s_n) - s_{n, y_n}\\big],\\qquad
    \\mathrm{RC} = \\tfrac{1}{2ND} \\sum_n \\|I_n - \\hat x_n\\|^2 \\ \\text{(per-pixel mean)}

    \\mathrm{NN} = \\sum_{l=1}^{L} \\operatorname{mean}_{n,\\,\\text{units}} \\mathrm{relu}(-\\hat z^{(l)}_n)^2
    \\quad(\\hat z^{(L)} = \\mu_{c_n};\\ \\text{not } z^{(0)})

    \\mathrm H = \\tfrac1N \\textstyle\\sum_n H(q_n)\\ (\\texttt{entropy}) \\quad\\text{or}\\quad
    \\tfrac1N \\sum_n \\mathrm{KL}(q_n \\,\\|\\, \\mathrm{uniform}) = \\log K - H(q_n)\\ (\\texttt{kl\\_to\\_prior})

    \\mathrm{BAL} = \\log K - H(\\bar q),\\qquad \\bar q = \\tfrac1N \\textstyle\\sum_n q_n

where ``q_n = softmax(s_n)`` (SPEC §5: the two signs are opposite; the term states which it is).
``BAL`` (weight ``a_BAL``, our addition for unsupervised training, docs/ssl.md) is the KL of the
batch-mean prediction to uniform: minimising it spreads the batch over the classes, which
per-example entropy minimisation alone does not (it collapses every example onto one class).

**Semi-supervised batches.** A label equal to :data:`UNLABELLED` (-1) marks an unlabelled example:
CE is the mean over the *labelled* examples only (0 when there are none), while RC, NN, H and BAL
are means over the whole batch (SPEC §5: "on both streams"). The E-step renders an unlabelled
example from its predicted class (:func:`drmm_ref.learning.e_step`).

Every function returns ``(value, cotangent)``: ``value`` a 0-d array of the inputs' dtype, the
cotangent that of the term with respect to its argument(s). The parameter gradients are then
chained through the primitives' VJPs: CE and H through :func:`drmm_ref.drmm.backward` (the
bottom-up pass), RC and NN through :func:`drmm_ref.drmm.render_vjp` (the rendering at fixed
latents) -- see :func:`objective_and_gradients`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .. import _backend
from .. import primitives as P
from ..drmm import DRMMParams, backward, backward_and_render, render, render_vjp
from ._checks import check_labels
from ._tree import add_trees, gradients_tree

__all__ = ["LossWeights", "Terms", "cross_entropy", "reconstruction", "nonnegativity", "entropy_term",
           "balance_term", "objective_and_gradients", "fused_objective_and_gradients", "H_SIGNS", "UNLABELLED"]

H_SIGNS = ("entropy", "kl_to_prior")

#: The label of an unlabelled example in a semi-supervised batch.
UNLABELLED = -1


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Weights of the objective's terms (SPEC §3).

    Defaults (our choice for *supervised* EG training): ``a_CE = 1``, ``a_RC = 1`` and
    ``a_NN = 0.5`` as in SPEC §5; ``a_H = 0`` because the entropy term is the semi-supervised
    papers' term on unlabelled data (SPEC §5 uses 0.2 there). ``h_sign`` names the sign of H.
    The backprop baseline is ``LossWeights(ce=1, rc=0, nn=0, h=0)``. ``balance`` weighs the
    batch-balance term BAL (0 by default; unsupervised clustering needs it).
    """

    ce: float = 1.0
    rc: float = 1.0
    nn: float = 0.5
    h: float = 0.0
    h_sign: str = "entropy"
    balance: float = 0.0

    def __post_init__(self):
        for name in ("ce", "rc", "nn", "h", "balance"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"loss weight {name} must be finite and >= 0, got {v}")
            object.__setattr__(self, name, v)
        if self.h_sign not in H_SIGNS:
            raise ValueError(f"h_sign must be one of {H_SIGNS}, got {self.h_sign!r}")

    @property
    def generative(self) -> bool:
        """True when a rendering is needed (RC or NN has a positive weight)."""
        return self.rc > 0 or self.nn > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Terms:
    """Values of the objective and its terms on one batch (Python floats; None = weight 0, not computed)."""

    objective: float
    ce: float | None
    rc: float | None
    nn: float | None
    h: float | None
    balance: float | None = None

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def cross_entropy(scores: Any, labels: Any) -> tuple[Any, Any]:
    """Mean cross-entropy of softmax(scores) over the labelled examples, and its cotangent in ``scores``.

    .. math:: \\mathrm{CE} = \\tfrac1{N_\\ell} \\sum_{n\\ \\text{labelled}} [\\mathrm{lse}(s_n) - s_{n,y_n}],\\qquad
              \\partial \\mathrm{CE} / \\partial s_n
              = [y_n \\ne -1]\\,(\\mathrm{softmax}(s_n) - \\mathrm{onehot}(y_n)) / N_\\ell

    Parameters
    ----------
    scores : array of shape (N, K)
    labels : int array of shape (N,)
        Class indices; :data:`UNLABELLED` (-1) marks an example that CE ignores. With no labelled
        example the value and the cotangent are 0.
    """
    xp = _backend.get_namespace(scores, labels, names=("scores", "labels"))
    n, k = scores.shape
    check_labels(labels, n, k, check_range=False, xp=xp)  # integer, shape (N,): 0.7 is refused, not read as class 0
    dev = _backend.device_of(labels)
    onehot = xp.astype(xp.expand_dims(labels, axis=1) == xp.arange(k, dtype=labels.dtype, device=dev), scores.dtype)
    labelled = xp.astype(labels != UNLABELLED, scores.dtype)
    n_labelled = xp.maximum(xp.sum(labelled), xp.ones((), dtype=scores.dtype, device=dev))  # on device: no host sync
    lse = P.logsumexp(scores, axis=1, xp=xp)
    value = xp.sum(labelled * (lse - xp.sum(onehot * scores, axis=1))) / n_labelled
    grad = xp.expand_dims(labelled, axis=1) * (P.softmax(scores, axis=1, xp=xp) - onehot) / n_labelled
    return value, grad


def reconstruction(images: Any, reconstruction_: Any) -> tuple[Any, Any]:
    """Per-pixel mean reconstruction error and its cotangent in the reconstruction ``x_hat``.

    .. math:: \\mathrm{RC} = \\tfrac{1}{2ND} \\sum_n \\|I_n - \\hat x_n\\|^2,\\qquad
              \\partial \\mathrm{RC} / \\partial \\hat x = (\\hat x - I) / (ND)

    Parameters
    ----------
    images, reconstruction_ : arrays of shape (N, C_0, H_0, W_0)
    """
    xp = _backend.get_namespace(images, reconstruction_, names=("images", "reconstruction"))
    size = math.prod(images.shape)  # N * D
    resid = reconstruction_ - images
    return xp.sum(resid * resid) / (2 * size), resid / size


def nonnegativity(renderings: tuple[Any, ...]) -> tuple[Any, dict[int, Any]]:
    """The non-negativity penalty on the partial renderings ``z^(1..L)`` and its cotangents.

    .. math:: \\mathrm{NN} = \\sum_{l=1}^{L} \\operatorname{mean}_{n,j}\\, \\mathrm{relu}(-z^{(l)}_{n,j})^2,\\qquad
              \\partial \\mathrm{NN} / \\partial z^{(l)} = -2\\,\\mathrm{relu}(-z^{(l)}) / (N\\,C_l H_l W_l)

    Parameters
    ----------
    renderings : tuple of L+1 arrays (``Rendering.renderings``; level 0 is not penalised)

    Returns
    -------
    value, {l: cotangent of z^(l)} for l = 1..L
    """
    xp = _backend.get_namespace(*renderings)
    value, grads = None, {}
    for l in range(1, len(renderings)):
        z = renderings[l]
        neg = P.relu(-z, xp=xp)
        size = math.prod(z.shape)
        term = xp.sum(neg * neg) / size
        value = term if value is None else value + term
        grads[l] = (-2.0 / size) * neg
    return value, grads


def entropy_term(scores: Any, sign: str = "entropy") -> tuple[Any, Any]:
    """Mean entropy of ``q = softmax(s)`` (``sign="entropy"``) or mean ``KL(q || uniform)``, and the cotangent.

    .. math:: H(q) = -\\sum_c q_c \\log q_c,\\qquad \\partial H / \\partial s_j = -q_j(\\log q_j + H(q)),
              \\qquad \\mathrm{KL}(q\\|U) = \\log K - H(q)

    Minimising ``entropy`` sharpens the predictions (the follow-up code's term); minimising
    ``kl_to_prior`` flattens them. SPEC §5.
    """
    if sign not in H_SIGNS:
        raise ValueError(f"sign must be one of {H_SIGNS}, got {sign!r}")
    xp = _backend.get_namespace(scores, names=("scores",))
    n, k = scores.shape
    logq = scores - P.logsumexp(scores, axis=1, keepdims=True, xp=xp)
    q = xp.exp(logq)
    h = -xp.sum(q * logq, axis=1, keepdims=True)
    grad = -q * (logq + h) / n
    value = xp.sum(h) / n
    if sign == "kl_to_prior":
        return math.log(k) - value, -grad
    return value, grad


def balance_term(scores: Any) -> tuple[Any, Any]:
    """``KL(q_bar || uniform) = log K - H(q_bar)`` of the batch-mean prediction, and its cotangent.

    .. math:: \\bar q = \\tfrac1N \\textstyle\\sum_n q_n,\\qquad
              \\partial\\,\\mathrm{BAL} / \\partial s_{n}
              = q_n \\odot (\\log \\bar q - \\langle q_n, \\log \\bar q\\rangle) / N

    Zero when the batch's predictions are balanced over the K classes; ``log K`` when they all fall
    on one class. Minimising it is "maximise the entropy of the batch-mean prediction".

    Computed in the log domain, ``log qbar_c = lse_n(log q_{n,c}) - log N`` with
    ``log q = s - lse(s)``, so a class whose mean probability underflows (scores ``[120, 0, 0]`` in
    float32) contributes ``0 * (finite) = 0`` instead of ``0 * log 0 = NaN``.
    """
    xp = _backend.get_namespace(scores, names=("scores",))
    n, k = scores.shape
    logq = scores - P.logsumexp(scores, axis=1, keepdims=True, xp=xp)
    q = xp.exp(logq)
    log_qbar = P.logsumexp(logq, axis=0, keepdims=True, xp=xp) - math.log(n)
    qbar = xp.exp(log_qbar)
    # a class no example gives any probability (log qbar = -inf) contributes nothing: 0 log 0 = 0
    log_qbar = xp.where(xp.isfinite(log_qbar), log_qbar, xp.zeros((), dtype=scores.dtype,
                                                                   device=_backend.device_of(scores)))
    value = math.log(k) + xp.sum(qbar * log_qbar)
    grad = q * (log_qbar - xp.sum(q * log_qbar, axis=1, keepdims=True)) / n
    return value, grad


def _score_terms(scores: Any, labels: Any, weights: LossWeights, xp: Any) -> tuple[dict[str, Any], Any]:
    """The terms on the scores (CE, H, BAL): their values and the weighted cotangent ``sbar`` (None if none)."""
    values, grad = {}, None
    if weights.ce > 0:
        if labels is None:
            raise ValueError("labels are required when the cross-entropy weight is positive")
        values["ce"], g = cross_entropy(scores, labels)
        grad = weights.ce * g
    if weights.h > 0:
        values["h"], g = entropy_term(scores, weights.h_sign)
        grad = weights.h * g if grad is None else grad + weights.h * g
    if weights.balance > 0:
        values["balance"], g = balance_term(scores)
        grad = weights.balance * g if grad is None else grad + weights.balance * g
    return values, grad


def _rendering_terms(images: Any, renderings: tuple[Any, ...],
                     weights: LossWeights) -> tuple[dict[str, Any], Any, dict]:
    """The terms on the rendering (RC, NN): values, the cotangent of ``z^(0)`` and those of ``z^(1..L)``."""
    values, grad_image, grad_z = {}, None, {}
    if weights.rc > 0:
        values["rc"], g = reconstruction(images, renderings[0])
        grad_image = weights.rc * g
    if weights.nn > 0:
        values["nn"], gz = nonnegativity(renderings)
        grad_z = {l: weights.nn * v for l, v in gz.items()}
    return values, grad_image, grad_z


def _terms(values: dict[str, Any], weights: LossWeights, xp: Any) -> Terms:
    """Python floats of the computed terms and the weighted objective, with one host transfer."""
    names = [n for n in ("ce", "rc", "nn", "h", "balance") if n in values]
    host = _backend.to_numpy(xp.stack([xp.astype(values[n], xp.float64) for n in names])) if names else []
    got = {n: float(v) for n, v in zip(names, host)}
    total = sum(getattr(weights, n) * got[n] for n in names)
    return Terms(float(total), got.get("ce"), got.get("rc"), got.get("nn"), got.get("h"), got.get("balance"))


def objective_and_gradients(params: DRMMParams, estep: Any, labels: Any, weights: LossWeights,
                            *, need_gradients: bool = True) -> tuple[Terms, dict[str, Any] | None]:
    """The EG objective of one batch at the E-step's latents, and its gradient tree.

    The unfused form: the score terms' cotangent goes down :func:`drmm_ref.drmm.backward`, the
    rendering terms' up :func:`drmm_ref.drmm.render_vjp` of the E-step's rendering. The EG step
    itself uses :func:`fused_objective_and_gradients`, which the tests hold equal to this.

    Parameters
    ----------
    params : DRMMParams
        The parameters the E-step was computed with.
    estep : EStep
        Output of :func:`drmm_ref.learning.e_step` on the batch (bottom-up pass; rendering when
        ``weights.generative``).
    labels : int array of shape (N,)
        Needed when ``weights.ce > 0``; :data:`UNLABELLED` entries are ignored by CE.
    weights : LossWeights

    Returns
    -------
    Terms
        Objective and every term (unweighted), as floats.
    dict or None
        Gradient of the weighted objective for every trainable array (see :mod:`._tree`).
    """
    xp, L = params.xp, params.net.L
    fw = estep.forward
    values, grad_scores = _score_terms(fw.scores, labels, weights, xp)
    grad_image, grad_z = None, {}
    if weights.generative:
        if estep.rendering is None:
            raise ValueError("the E-step has no rendering; call e_step(..., render_=True) for RC / NN terms")
        more, grad_image, grad_z = _rendering_terms(fw.images, estep.rendering.renderings, weights)
        values.update(more)
    terms = _terms(values, weights, xp)
    if not need_gradients:
        return terms, None
    tree: dict[str, Any] = {}
    if grad_scores is not None:
        tree = gradients_tree(backward(params, fw, grad_scores, input_gradient=False), L)
    if grad_image is not None or grad_z:
        tree = add_trees(tree, gradients_tree(render_vjp(params, estep.rendering, grad_image, grad_z), L))
    return terms, tree


def fused_objective_and_gradients(params: DRMMParams, forward: Any, classes: Any, labels: Any,
                                  weights: LossWeights, *,
                                  relu_topdown: bool = False) -> tuple[Terms, dict[str, Any], Any]:
    """The EG objective and its gradient tree with one fused downward pass (SPEC §2, §3).

    ``forward = bottom_up(params, I)``; ``classes`` (int64, shape (N,)) are the classes to render
    (the E-step's ``c_n``). When a rendering term is weighted, the score terms' cotangent and the
    class templates go down together (:func:`drmm_ref.drmm.backward_and_render`), then the
    rendering terms' cotangents go up the rendering (:func:`drmm_ref.drmm.render_vjp`, reusing the
    unpooled maps of the way down). Equal to :func:`objective_and_gradients` on
    ``e_step(params, I, labels)`` (tested); the image cotangent is never computed. ``relu_topdown``
    renders with a ReLU on the partial renderings of levels 1..L-1 (SPEC §5's second form of
    non-negativity; RC and NN are then taken on that rendering, and the gradient carries its masks).

    Returns
    -------
    Terms, dict, Rendering or None
        The terms, the gradient tree, and the rendering (None without RC / NN).
    """
    xp = params.xp
    values, grad_scores = _score_terms(forward.scores, labels, weights, xp)
    tree, more, rendering = _gradient_passes(params, forward, grad_scores, classes, weights, relu_topdown)
    values.update(more)
    return _terms(values, weights, xp), tree, rendering


def _gradient_passes(params: DRMMParams, forward: Any, grad_scores: Any, classes: Any, weights: LossWeights,
                     relu_topdown: bool, share: float = 1.0) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The passes after the score terms: the gradient tree, the rendering terms' values, the rendering (or None).

    Down: the score cotangent (and, for RC / NN, the class templates with it); up: the rendering terms' cotangents.
    ``share`` scales the rendering terms' values and cotangents: a shard of ``N_s`` rows of an ``N``-row batch takes
    ``N_s / N`` of its own batch means (:mod:`.parallel`); 1 for a whole batch (no product is made then).
    """
    L = params.net.L
    if not weights.generative:
        if grad_scores is None:
            return {}, {}, None
        return gradients_tree(backward(params, forward, grad_scores, input_gradient=False, check=False), L), {}, None
    if grad_scores is None:  # no score term: the rendering alone goes down
        rendering, tree = render(params, classes, forward.latents, check=False, relu_topdown=relu_topdown), {}
    else:
        grads, rendering = backward_and_render(params, forward, grad_scores, classes, relu_topdown=relu_topdown)
        tree = gradients_tree(grads, L)
    values, grad_image, grad_z = _rendering_terms(forward.images, rendering.renderings, weights)
    if share != 1.0:
        values = {k: v * share for k, v in values.items()}
        grad_image = None if grad_image is None else grad_image * share
        grad_z = {l: g * share for l, g in grad_z.items()}
    tree = add_trees(tree, gradients_tree(render_vjp(params, rendering, grad_image, grad_z), L))
    return tree, values, rendering
