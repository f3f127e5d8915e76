"""The adapter over ``drmm_ref`` itself: the reference the fixtures are generated from.

``python -m drmm_ref.conformance --adapter drmm_ref.conformance.reference:ADAPTER`` checks the
installed package against the shipped fixtures (after a rewrite of its internals, say). Every
method uses only public functions of :mod:`drmm_ref.primitives`, :mod:`drmm_ref.drmm`,
:mod:`drmm_ref.learning` and :mod:`drmm_ref.rmm`; arguments and outputs follow
:mod:`drmm_ref.conformance.spec`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import drmm as D
from .. import learning as LR
from .. import primitives as P
from .. import rmm as R

__all__ = ["ReferenceAdapter", "ADAPTER", "to_network", "to_params", "to_latents", "from_params", "to_rmm",
           "from_rmm"]


def to_network(net: dict) -> D.Network:
    return D.Network.from_dict(net)


def to_params(net: dict, params: dict) -> D.DRMMParams:
    """A :class:`~drmm_ref.drmm.DRMMParams` from the adapter's ``net`` and ``params`` dicts."""
    network = to_network(net)
    L = network.L
    return D.DRMMParams(network, tuple(np.asarray(params[f"filters_{l}"]) for l in range(1, L + 1)),
                        tuple(np.asarray(params[f"biases_{l}"]) for l in range(1, L + 1)),
                        np.asarray(params["class_templates"]), np.asarray(params["class_biases"]),
                        np.asarray(params["class_prior"]), np.asarray(params["switch_prior"]),
                        float(params["noise_variance"]))


def from_params(p: D.DRMMParams) -> dict[str, np.ndarray]:
    """The adapter's ``params`` dict of a :class:`~drmm_ref.drmm.DRMMParams` (NumPy arrays)."""
    out = {}
    for l in range(1, p.net.L + 1):
        out[f"filters_{l}"] = np.asarray(p.filters[l - 1])
        out[f"biases_{l}"] = np.asarray(p.biases[l - 1])
    for name in ("class_templates", "class_biases", "class_prior", "switch_prior"):
        out[name] = np.asarray(getattr(p, name))
    out["noise_variance"] = np.asarray(p.noise_variance, dtype=np.float64)
    return out


def to_latents(latents: dict, L: int) -> D.Latents:
    return D.Latents(tuple(np.asarray(latents[f"positions_{l}"], dtype=np.int64) for l in range(1, L + 1)),
                     tuple(np.asarray(latents[f"switches_{l}"], dtype=bool) for l in range(1, L + 1)))


def from_latents(lat: D.Latents) -> dict[str, np.ndarray]:
    out = {}
    for l, (t, a) in enumerate(zip(lat.positions, lat.switches), start=1):
        out[f"positions_{l}"] = np.asarray(t, dtype=np.int64)
        out[f"switches_{l}"] = np.asarray(a, dtype=bool)
    return out


def to_rmm(rmm: dict) -> R.RMMParams:
    """An :class:`~drmm_ref.rmm.RMMParams` from the adapter's ``rmm`` dict."""
    nuisance = rmm.get("nuisance_prior")
    return R.RMMParams(templates=np.asarray(rmm["templates"]), class_prior=np.asarray(rmm["class_prior"]),
                       switch_prior=np.asarray(rmm["switch_prior"]), sigma2=float(rmm["sigma2"]),
                       image_shape=tuple(rmm["image_shape"]), padding=int(rmm.get("padding", 0)),
                       nuisance_prior=None if nuisance is None else np.asarray(nuisance), pool=rmm.get("pool"))


def from_rmm(p: R.RMMParams) -> dict[str, Any]:
    return {"templates": np.asarray(p.templates), "class_prior": np.asarray(p.class_prior),
            "switch_prior": np.asarray(p.switch_prior), "sigma2": float(p.sigma2), "image_shape": list(p.image_shape),
            "padding": int(p.padding), "pool": p.pool,
            "nuisance_prior": None if p.nuisance_prior is None else np.asarray(p.nuisance_prior)}


def _rmm_latents(latents: dict) -> R.Latents:
    return R.Latents(*(np.asarray(latents[k], dtype=np.int64) for k in ("subtemplates", "positions", "switches")))


def _optimizer(spec: dict):
    spec = dict(spec)
    name = spec.pop("name")
    return LR.make_optimizer(name, **spec)


def _weights(weights: dict) -> LR.LossWeights:
    return LR.LossWeights(**weights)


def _labels(labels: Any) -> np.ndarray | None:
    return None if labels is None else np.asarray(labels, dtype=np.int64)


class ReferenceAdapter:
    """``drmm_ref`` behind the adapter interface of :mod:`drmm_ref.conformance.spec`."""

    name = "drmm_ref (reference)"

    # -- primitives -------------------------------------------------------------------------
    def conv2d(self, x, weight, padding):
        return P.conv2d(x, weight, padding)

    def conv2d_transpose(self, y, weight, padding):
        return P.conv2d_transpose(y, weight, padding)

    def conv2d_vjp(self, x, weight, padding, grad_out):
        return {"grad_x": P.conv2d_vjp_input(grad_out, weight, padding),
                "grad_weight": P.conv2d_vjp_weight(grad_out, x, padding)}

    def conv2d_transpose_vjp(self, y, weight, padding, grad_out):
        return {"grad_y": P.conv2d_transpose_vjp_input(grad_out, weight, padding),
                "grad_weight": P.conv2d_transpose_vjp_weight(grad_out, y, padding)}

    def relu(self, u):
        return P.relu(u)

    def relu_vjp(self, u, grad_out):
        return P.relu_vjp(grad_out, u)

    def maxpool2d(self, x, pool):
        values, positions = P.maxpool2d(x, pool)
        return {"values": values, "positions": positions}

    def maxpool2d_vjp(self, x, pool, grad_out):
        _, positions = P.maxpool2d(x, pool)
        return P.maxpool2d_vjp(grad_out, positions, pool)

    def unpool2d(self, values, positions, pool):
        return P.unpool2d(values, positions, pool)

    def select2d(self, x, positions, pool):
        return P.select2d(x, positions, pool)

    def logsumexp(self, x, axis):
        return P.logsumexp(x, axis)

    def logsumexp_vjp(self, x, axis, grad_out):
        return P.logsumexp_vjp(grad_out, x, axis)

    def softmax(self, x, axis):
        return P.softmax(x, axis)

    def softmax_vjp(self, x, axis, grad_out):
        return P.softmax_vjp(grad_out, x, axis)

    # -- the deep model ---------------------------------------------------------------------
    def bottom_up(self, net, params, images):
        p = to_params(net, params)
        fw = D.bottom_up(p, images)
        out = {"scores": fw.scores}
        for l in range(1, p.net.L + 1):
            out[f"preactivations_{l}"] = fw.preactivations[l - 1]
            out[f"features_{l}"] = fw.features[l]
        out.update(from_latents(fw.latents))
        return out

    def top_down(self, net, params, images, classes=None):
        p = to_params(net, params)
        fw = D.bottom_up(p, images)
        r = D.top_down(p, fw) if classes is None else D.top_down(p, fw.latents, np.asarray(classes, dtype=np.int64))
        out = {"classes": np.asarray(r.classes)}
        out.update({f"renderings_{l}": z for l, z in enumerate(r.renderings)})
        return out

    def render(self, net, params, classes, latents):
        p = to_params(net, params)
        r = D.render(p, np.asarray(classes, dtype=np.int64), to_latents(latents, p.net.L))
        return {f"renderings_{l}": z for l, z in enumerate(r.renderings)}

    def sample(self, net, params, classes, latents, noise):
        p = to_params(net, params)
        image = D.render(p, np.asarray(classes, dtype=np.int64), to_latents(latents, p.net.L)).image
        return image + np.asarray(noise) * np.sqrt(p.noise_variance)

    def log_joint(self, net, params, images, classes, latents):
        p = to_params(net, params)
        return D.log_joint(p, images, np.asarray(classes, dtype=np.int64), to_latents(latents, p.net.L))

    def backward(self, net, params, images, grad_scores):
        p = to_params(net, params)
        g = D.backward(p, D.bottom_up(p, images), grad_scores)
        out = {"input": g.input, "class_templates": g.class_templates, "class_biases": g.class_biases}
        for l in range(1, p.net.L + 1):
            out[f"filters_{l}"] = g.filters[l - 1]
            out[f"biases_{l}"] = g.biases[l - 1]
        return out

    def render_vjp(self, net, params, classes, latents, grad_renderings):
        p = to_params(net, params)
        r = D.render(p, np.asarray(classes, dtype=np.int64), to_latents(latents, p.net.L))
        g = D.render_vjp(p, r, None, {int(k): v for k, v in grad_renderings.items()})
        out = {"class_templates": g.class_templates}
        out.update({f"filters_{l}": w for l, w in enumerate(g.filters, start=1)})
        return out

    # -- learning ---------------------------------------------------------------------------
    def objective(self, net, params, images, labels, weights):
        p = to_params(net, params)
        w = _weights(weights)
        est = LR.e_step(p, images, _labels(labels), render_=w.generative)
        terms, grads = LR.objective_and_gradients(p, est, _labels(labels), w)
        values = {k: np.asarray(v, dtype=np.float64) for k, v in terms.to_dict().items() if v is not None}
        return {"terms": values, "gradients": dict(grads)}

    def eg_step(self, net, params, images, labels, weights, optimizer):
        p = to_params(net, params)
        opt = _optimizer(optimizer)
        config = LR.EGConfig(weights=_weights(weights), trace_m_step=False)
        new, _, _ = LR.eg_step(p, opt, opt.init(LR.trainable(p)), images, _labels(labels), config)
        return dict(LR.trainable(new))

    def backprop_step(self, net, params, images, labels, optimizer):
        p = to_params(net, params)
        opt = _optimizer(optimizer)
        new, _, _ = LR.backprop_step(p, opt, opt.init(LR.trainable(p)), images, _labels(labels))
        return dict(LR.trainable(new))

    def block_step(self, net, params, images, classes, latents, block, k_cg, damping):
        p = to_params(net, params)
        r = D.render(p, np.asarray(classes, dtype=np.int64), to_latents(latents, p.net.L))
        theta, info = LR.block_step(p, images, r, block, k_cg=int(k_cg), damping=float(damping))
        return {"theta": theta, "rc_before": np.asarray(info.rc_before),
                "rc_iterates": np.asarray(info.rc_iterates, dtype=np.float64)}

    # -- the shallow model ------------------------------------------------------------------
    def rmm_render(self, rmm, classes, latents):
        return R.render(to_rmm(rmm), np.asarray(classes, dtype=np.int64), _rmm_latents(latents))

    def rmm_log_joint(self, rmm, images, classes, latents):
        return R.log_joint(to_rmm(rmm), images, np.asarray(classes, dtype=np.int64), _rmm_latents(latents))

    def rmm_max_sum_scores(self, rmm, images):
        return R.max_sum_scores(to_rmm(rmm), images)

    def rmm_dcn_scores(self, rmm, images):
        return R.dcn_scores(R.to_dcn(to_rmm(rmm)), images)

    def rmm_map_estimate(self, rmm, images, classes=None):
        cls, lat, score = R.map_estimate(to_rmm(rmm), images, _labels(classes))
        return {"classes": cls, "subtemplates": lat.subtemplates, "positions": lat.positions,
                "switches": lat.switches, "scores": score}

    def rmm_posterior(self, rmm, images, classes=None):
        post = R.posterior(to_rmm(rmm), images, _labels(classes))
        return {"responsibilities": post.responsibilities, "responsibilities_on": post.responsibilities_on,
                "log_evidence": post.log_evidence}

    def rmm_e_step(self, rmm, images, labels=None, hard=False):
        step = (R.hard_e_step if hard else R.e_step)(to_rmm(rmm), images, _labels(labels))
        return {"responsibilities": step.responsibilities, "responsibilities_on": step.responsibilities_on,
                "per_example": step.per_example}

    def rmm_m_step(self, rmm, images, responsibilities, responsibilities_on):
        n = images.shape[0]
        estep = R.EStep(np.asarray(responsibilities), np.asarray(responsibilities_on), np.zeros(n), 0.0)
        new, _ = R.m_step(to_rmm(rmm), images, estep)
        return {"templates": new.templates, "class_prior": new.class_prior, "switch_prior": new.switch_prior,
                "sigma2": np.asarray(new.sigma2, dtype=np.float64)}


def rmm_grid(rmm: dict) -> tuple[int, int]:
    """``(Hg, Wg)``: the grid of positions of an RMM dict (``H + 2q - k + 1``)."""
    k = np.asarray(rmm["templates"]).shape[3]
    h, w = rmm["image_shape"]
    q = int(rmm.get("padding", 0))
    return h + 2 * q - k + 1, w + 2 * q - k + 1


#: The instance the command line names: ``--adapter drmm_ref.conformance.reference:ADAPTER``.
ADAPTER = ReferenceAdapter()

