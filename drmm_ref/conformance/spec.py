"""The adapter interface of the conformance runner: one method per operation, NumPy in and out.

A port of the DRMM is checked by wrapping it in an *adapter*: any Python object whose methods
take and return plain NumPy arrays (float64 values, int64 positions, bool switches). The runner
calls ``getattr(adapter, op)(**arguments)`` for every fixture case of operation ``op``; a method
that is missing is skipped (the case is reported as SKIP, never as a failure), so a port can be
checked one operation at a time.

Conventions (docs/porting.md has them as one table; SPEC §0, §1, §2, §3 the mathematics):

* arrays are NCHW, filters OIHW, ``conv2d`` is cross-correlation (no flip), stride 1, zero padding ``q``
  (also ``q >= k``);
* max-pooling windows are ``p x p`` with stride ``p``; a *position* is the row-major index
  ``i * p + j`` inside the window of the **first** maximum (not PyTorch's flat index into the plane);
* ``net`` is the dict of :meth:`drmm_ref.Network.to_dict` (``image_shape``, ``n_classes``,
  ``constant_templates``, ``layers``: a list of ``{channels, kernel, padding, pool}``);
* ``params`` is a dict of arrays named as in parameter files (:mod:`drmm_ref.io`): ``filters_<l>``
  (``C_l x C_{l-1} x k_l x k_l``), ``biases_<l>`` (``C_l``), ``class_templates`` (``K x C_L x H_L x W_L``,
  or ``K x C_L x 1 x 1`` when ``net["constant_templates"]``: broadcast over the grid, the score sums
  over it), ``class_biases`` (K), ``class_prior`` (K), ``switch_prior`` (L), ``noise_variance`` (0-d);
* ``latents`` is a dict ``positions_<l>`` (int64, ``N x C_l x H_l x W_l``), ``switches_<l>`` (bool);
  positions are 0 wherever the switch is off;
* ``weights`` is a dict ``ce, rc, nn, h, h_sign ("entropy" or "kl_to_prior"), balance``; labels are
  int64 with ``-1`` for an unlabelled row;
* ``optimizer`` is ``{"name": "sgd", "lr", "momentum"}`` or ``{"name": "adam", "lr", "beta1",
  "beta2", "eps"}``; a step starts from a fresh optimiser state;
* ``rmm`` is a dict: ``templates`` (``K x M x C x k x k``), ``class_prior`` (K), ``switch_prior``
  (K), ``sigma2`` (float), ``image_shape`` ([H, W]), ``padding`` (int), ``pool`` (None = global
  translation, or the window side), ``nuisance_prior`` (``Hg x Wg`` array or None); RMM positions are
  ``(row, col)`` on the grid of positions, and the stamp's top-left corner sits at pixel
  ``(row - q, col - q)``.

A method returns one array (operations with the single output ``out``) or a dict of outputs by
name (nested dicts are flattened with dots: ``{"terms": {"ce": ...}}`` is ``terms.ce``). Entries of
``gradients`` (and of the parameter dicts the steps return) that are missing count as zeros.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Operation", "OPERATIONS", "operation", "AdapterSpec", "flatten_outputs"]


@dataclasses.dataclass(frozen=True)
class Operation:
    """One adapter method: its arguments, its outputs and what it computes."""

    name: str
    arguments: tuple[str, ...]
    outputs: str
    summary: str
    group: str


def _op(group, name, arguments, outputs, summary):
    return Operation(name, tuple(arguments.split()), outputs, summary, group)


#: Every operation the fixtures exercise, in the order the runner reports them.
OPERATIONS: tuple[Operation, ...] = (
    # primitives (SPEC §0)
    _op("primitives", "conv2d", "x weight padding", "out", "cross-correlation, stride 1, zero padding"),
    _op("primitives", "conv2d_transpose", "y weight padding", "out", "the exact adjoint of conv2d in x"),
    _op("primitives", "conv2d_vjp", "x weight padding grad_out", "grad_x grad_weight",
        "VJP of conv2d(x, weight, padding) with cotangent grad_out (grad_weight summed over the batch)"),
    _op("primitives", "conv2d_transpose_vjp", "y weight padding grad_out", "grad_y grad_weight",
        "VJP of conv2d_transpose(y, weight, padding)"),
    _op("primitives", "relu", "u", "out", "max(u, 0)"),
    _op("primitives", "relu_vjp", "u grad_out", "out", "grad_out where u > 0, else 0 (relu'(0) = 0)"),
    _op("primitives", "maxpool2d", "x pool", "values positions",
        "window maxima and the row-major in-window position of the first maximum"),
    _op("primitives", "maxpool2d_vjp", "x pool grad_out", "out",
        "VJP of the pooled values in x: each window's cotangent goes to its first maximum"),
    _op("primitives", "unpool2d", "values positions pool", "out", "each value at its position, zeros elsewhere"),
    _op("primitives", "select2d", "x positions pool", "out", "the entry at each window's position"),
    _op("primitives", "logsumexp", "x axis", "out", "stable log-sum-exp over axis"),
    _op("primitives", "logsumexp_vjp", "x axis grad_out", "out", "VJP of logsumexp in x"),
    _op("primitives", "softmax", "x axis", "out", "softmax over axis"),
    _op("primitives", "softmax_vjp", "x axis grad_out", "out", "VJP of softmax in x"),
    # the deep model (SPEC §2)
    _op("drmm", "bottom_up", "net params images", "scores preactivations_<l> features_<l> positions_<l> switches_<l>",
        "the DCN forward and its latents: u^(l), h^(l) (l = 1..L), t^(l), a^(l), scores s (N, K)"),
    _op("drmm", "top_down", "net params images classes", "classes renderings_<l>",
        "render through the bottom-up latents from classes (None: the argmax class); z^(0..L)"),
    _op("drmm", "render", "net params classes latents", "renderings_<l>", "every partial rendering z^(0..L)"),
    _op("drmm", "sample", "net params classes latents noise", "out",
        "an ancestral sample at given class and latents: render(...) + sqrt(noise_variance) * noise"),
    _op("drmm", "log_joint", "net params images classes latents", "out", "ln p(I, c, g) per example"),
    _op("drmm", "backward", "net params images grad_scores",
        "input filters_<l> biases_<l> class_templates class_biases",
        "VJP of the bottom-up scores in the images and the parameters (parameter cotangents summed over the batch)"),
    _op("drmm", "render_vjp", "net params classes latents grad_renderings", "filters_<l> class_templates",
        "VJP of the rendering in the filters and templates at fixed latents (grad_renderings: {level: cotangent})"),
    # learning (SPEC §3, §5)
    _op("learning", "objective", "net params images labels weights", "terms.<term> gradients.<name>",
        "E-step, then the EG objective's terms (objective, ce, rc, nn, h, balance) and its gradient tree"),
    _op("learning", "eg_step", "net params images labels weights optimizer", "<trainable name>",
        "one EG step (E-step, objective gradient, one optimiser step from a fresh state): the new trainable arrays"),
    _op("learning", "backprop_step", "net params images labels optimizer", "<trainable name>",
        "one backprop step on CE alone: the new trainable arrays"),
    _op("learning", "block_step", "net params images classes latents block k_cg damping", "theta rc_before rc_iterates",
        "the exact CGLS block step on RC at fixed latents (SPEC §3): new block value, RC before and after each "
        "iterate"),
    # the shallow model (SPEC §1)
    _op("rmm", "rmm_render", "rmm classes latents", "out", "a T_g mu_{c,m} for each configuration"),
    _op("rmm", "rmm_log_joint", "rmm images classes latents", "out", "ln p(I, c, m, g, a)"),
    _op("rmm", "rmm_max_sum_scores", "rmm images", "out",
        "max_{m,g,a} ln p(I, c, m, g, a): (N, K), or (N, K, Rh, Rw) in the window form"),
    _op("rmm", "rmm_dcn_scores", "rmm images", "out",
        "the DCN of the generative -> DCN map (SPEC §4): max-sum scores minus the pinned constant kappa(I)"),
    _op("rmm", "rmm_map_estimate", "rmm images classes", "classes subtemplates positions switches scores",
        "the max-sum MAP configuration (classes None: over c too)"),
    _op("rmm", "rmm_posterior", "rmm images classes", "responsibilities responsibilities_on log_evidence",
        "p(c, m, g | I), p(c, m, g, a=1 | I), ln p(I) (or clamped to classes)"),
    _op("rmm", "rmm_e_step", "rmm images labels hard", "responsibilities responsibilities_on per_example",
        "soft (posterior) or hard (one-hot MAP) E-step and the objective's per-example terms"),
    _op("rmm", "rmm_m_step", "rmm images responsibilities responsibilities_on",
        "templates class_prior switch_prior sigma2", "the closed-form M-step with SPEC §1's guards"),
)

_BY_NAME = {op.name: op for op in OPERATIONS}


def operation(name: str) -> Operation:
    """The :class:`Operation` called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in _BY_NAME:
        raise ValueError(f"unknown operation {name!r}; the adapter interface has {sorted(_BY_NAME)}")
    return _BY_NAME[name]


def flatten_outputs(out: Any, prefix: str = "") -> dict[str, Any]:
    """An adapter's return value as ``{output name: array}`` (one array is ``out``; nested dicts join with dots).

    ``None`` entries are dropped (an adapter may return ``None`` for a term it does not compute).
    """
    if isinstance(out, dict):
        flat: dict[str, Any] = {}
        for k, v in out.items():
            if v is not None:
                flat.update(flatten_outputs(v, f"{prefix}{k}."))
        return flat
    if isinstance(out, (tuple, list)):
        raise TypeError("an adapter method returns one array or a dict of outputs by name, not a tuple; "
                        "see drmm_ref.conformance.spec.OPERATIONS for the output names")
    return {prefix[:-1] if prefix else "out": np.asarray(out)}


class AdapterSpec:
    """Documentation of the adapter interface (an adapter need not inherit from it).

    Every method below may be left out: the runner then skips its cases. Arguments are passed by
    keyword with exactly these names. See the module docstring for the array conventions and
    :data:`OPERATIONS` for each method's outputs.
    """

    name = "my-port"  #: shown in the report

    def conv2d(self, x, weight, padding): ...
    def conv2d_transpose(self, y, weight, padding): ...
    def conv2d_vjp(self, x, weight, padding, grad_out): ...
    def conv2d_transpose_vjp(self, y, weight, padding, grad_out): ...
    def relu(self, u): ...
    def relu_vjp(self, u, grad_out): ...
    def maxpool2d(self, x, pool): ...
    def maxpool2d_vjp(self, x, pool, grad_out): ...
    def unpool2d(self, values, positions, pool): ...
    def select2d(self, x, positions, pool): ...
    def logsumexp(self, x, axis): ...
    def logsumexp_vjp(self, x, axis, grad_out): ...
    def softmax(self, x, axis): ...
    def softmax_vjp(self, x, axis, grad_out): ...
    def bottom_up(self, net, params, images): ...
    def top_down(self, net, params, images, classes=None): ...
    def render(self, net, params, classes, latents): ...
    def sample(self, net, params, classes, latents, noise): ...
    def log_joint(self, net, params, images, classes, latents): ...
    def backward(self, net, params, images, grad_scores): ...
    def render_vjp(self, net, params, classes, latents, grad_renderings): ...
    def objective(self, net, params, images, labels, weights): ...
    def eg_step(self, net, params, images, labels, weights, optimizer): ...
    def backprop_step(self, net, params, images, labels, optimizer): ...
    def block_step(self, net, params, images, classes, latents, block, k_cg, damping): ...
    def rmm_render(self, rmm, classes, latents): ...
    def rmm_log_joint(self, rmm, images, classes, latents): ...
    def rmm_max_sum_scores(self, rmm, images): ...
    def rmm_dcn_scores(self, rmm, images): ...
    def rmm_map_estimate(self, rmm, images, classes=None): ...
    def rmm_posterior(self, rmm, images, classes=None): ...
    def rmm_e_step(self, rmm, images, labels=None, hard=False): ...
    def rmm_m_step(self, rmm, images, responsibilities, responsibilities_on): ...
