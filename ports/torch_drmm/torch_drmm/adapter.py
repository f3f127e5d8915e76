"""The conformance adapter of the PyTorch port: NumPy in, NumPy out (drmm_ref.conformance.spec).

``python -m drmm_ref.conformance --adapter torch_drmm.adapter:ADAPTER``. Every VJP here is
``torch.autograd`` of the forward operation; nothing is hand-derived.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import core as C
from . import learning as LR
from .rmm import RMM

__all__ = ["TorchAdapter", "ADAPTER"]

F64 = torch.float64


def _t(a, dtype=F64):
    return torch.as_tensor(np.asarray(a)).to(dtype)


def _i(a):
    return torch.as_tensor(np.asarray(a, dtype=np.int64))


def _np(x):
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_np(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return x


def _vjp(fn, inputs, grad_out):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    return torch.autograd.grad(fn(*leaves), leaves, grad_out)


def _latents(latents: dict) -> dict:
    return {k: (_i(v) if k.startswith("positions_") else torch.as_tensor(np.asarray(v, dtype=bool)))
            for k, v in latents.items()}


def _model(net: dict, params: dict):
    n = C.Net.from_dict(net)
    return n, C.Params.from_dict(n, params)


def _labels(labels):
    return None if labels is None else _i(labels)


class TorchAdapter:
    """torch_drmm behind drmm_ref's conformance interface."""

    name = "torch_drmm (PyTorch port)"

    # -- primitives -------------------------------------------------------------------------
    def conv2d(self, x, weight, padding):
        return _np(F.conv2d(_t(x), _t(weight), padding=padding))

    def conv2d_transpose(self, y, weight, padding):
        return _np(F.conv_transpose2d(_t(y), _t(weight), padding=padding))

    def conv2d_vjp(self, x, weight, padding, grad_out):
        gx, gw = _vjp(lambda a, w: F.conv2d(a, w, padding=padding), [_t(x), _t(weight)], _t(grad_out))
        return {"grad_x": _np(gx), "grad_weight": _np(gw)}

    def conv2d_transpose_vjp(self, y, weight, padding, grad_out):
        gy, gw = _vjp(lambda a, w: F.conv_transpose2d(a, w, padding=padding), [_t(y), _t(weight)], _t(grad_out))
        return {"grad_y": _np(gy), "grad_weight": _np(gw)}

    def relu(self, u):
        return _np(torch.relu(_t(u)))

    def relu_vjp(self, u, grad_out):
        return _np(_vjp(torch.relu, [_t(u)], _t(grad_out))[0])

    def maxpool2d(self, x, pool):
        values, positions = C.maxpool2d(_t(x), pool)
        return {"values": _np(values), "positions": _np(positions)}

    def maxpool2d_vjp(self, x, pool, grad_out):
        return _np(_vjp(lambda a: F.max_pool2d(a, pool), [_t(x)], _t(grad_out))[0])

    def unpool2d(self, values, positions, pool):
        return _np(C.unpool2d(_t(values), _i(positions), pool))

    def select2d(self, x, positions, pool):
        return _np(C.select2d(_t(x), _i(positions), pool))

    def logsumexp(self, x, axis):
        return _np(torch.logsumexp(_t(x), dim=axis))

    def logsumexp_vjp(self, x, axis, grad_out):
        return _np(_vjp(lambda a: torch.logsumexp(a, dim=axis), [_t(x)], _t(grad_out))[0])

    def softmax(self, x, axis):
        return _np(torch.softmax(_t(x), dim=axis))

    def softmax_vjp(self, x, axis, grad_out):
        return _np(_vjp(lambda a: torch.softmax(a, dim=axis), [_t(x)], _t(grad_out))[0])

    # -- the deep model ---------------------------------------------------------------------
    def bottom_up(self, net, params, images):
        n, p = _model(net, params)
        with torch.no_grad():
            return _np(C.bottom_up(n, p, _t(images)))

    def top_down(self, net, params, images, classes=None):
        n, p = _model(net, params)
        with torch.no_grad():
            fw = C.bottom_up(n, p, _t(images))
            cls = fw["scores"].argmax(dim=1) if classes is None else _i(classes)
            zs = C.render(n, p, cls, {k: v for k, v in fw.items() if k.startswith(("positions_", "switches_"))})
        out = {f"renderings_{l}": z for l, z in enumerate(zs)}
        out["classes"] = cls
        return _np(out)

    def render(self, net, params, classes, latents):
        n, p = _model(net, params)
        with torch.no_grad():
            zs = C.render(n, p, _i(classes), _latents(latents))
        return _np({f"renderings_{l}": z for l, z in enumerate(zs)})

    def sample(self, net, params, classes, latents, noise):
        n, p = _model(net, params)
        with torch.no_grad():
            image = C.render(n, p, _i(classes), _latents(latents))[0]
        return _np(image + _t(noise) * float(np.sqrt(p.noise_variance)))

    def log_joint(self, net, params, images, classes, latents):
        n, p = _model(net, params)
        with torch.no_grad():
            return _np(C.log_joint(n, p, _t(images), _i(classes), _latents(latents)))

    def backward(self, net, params, images, grad_scores):
        n, p = _model(net, params)
        tree = {k: v.requires_grad_(True) for k, v in p.trainable().items()}
        x = _t(images).requires_grad_(True)
        scores = C.bottom_up(n, p.with_trainable(tree), x)["scores"]
        names = list(tree)
        grads = torch.autograd.grad(scores, [x] + [tree[k] for k in names], _t(grad_scores))
        out = {"input": grads[0]}
        out.update(dict(zip(names, grads[1:])))
        return _np(out)

    def render_vjp(self, net, params, classes, latents, grad_renderings):
        n, p = _model(net, params)
        tree = {k: v.requires_grad_(True) for k, v in p.trainable().items() if k.startswith(("filters_", "class_t"))}
        zs = C.render(n, p.with_trainable(tree), _i(classes), _latents(latents))
        total = sum((zs[int(l)] * _t(g)).sum() for l, g in grad_renderings.items())
        names = list(tree)
        grads = torch.autograd.grad(total, [tree[k] for k in names], allow_unused=True)
        return _np({k: (g if g is not None else torch.zeros_like(tree[k])) for k, g in zip(names, grads)})

    # -- learning ---------------------------------------------------------------------------
    def objective(self, net, params, images, labels, weights):
        n, p = _model(net, params)
        terms, grads = LR.objective(n, p, _t(images), _labels(labels), weights)
        return _np({"terms": terms, "gradients": grads})

    def eg_step(self, net, params, images, labels, weights, optimizer):
        n, p = _model(net, params)
        return _np(LR.eg_step(n, p, _t(images), _labels(labels), weights, optimizer))

    def backprop_step(self, net, params, images, labels, optimizer):
        n, p = _model(net, params)
        return _np(LR.backprop_step(n, p, _t(images), _labels(labels), optimizer))

    def block_step(self, net, params, images, classes, latents, block, k_cg, damping):
        n, p = _model(net, params)
        return _np(LR.block_step(n, p, _t(images), _i(classes), _latents(latents), block, k_cg, damping))

    # -- the shallow model ------------------------------------------------------------------
    @staticmethod
    def _rmm_latents(latents):
        return {k: _i(v) for k, v in latents.items()}

    def rmm_render(self, rmm, classes, latents):
        return _np(RMM(rmm).render(_i(classes), self._rmm_latents(latents)))

    def rmm_log_joint(self, rmm, images, classes, latents):
        return _np(RMM(rmm).log_joint(_t(images), _i(classes), self._rmm_latents(latents)))

    def rmm_max_sum_scores(self, rmm, images):
        return _np(RMM(rmm).max_sum_scores(_t(images)))

    def rmm_dcn_scores(self, rmm, images):
        return _np(RMM(rmm).dcn_scores(_t(images)))

    def rmm_map_estimate(self, rmm, images, classes=None):
        cls, sub, pos, a, score = RMM(rmm).map_estimate(_t(images), _labels(classes))
        return _np({"classes": cls, "subtemplates": sub, "positions": pos, "switches": a, "scores": score})

    def rmm_posterior(self, rmm, images, classes=None):
        resp, resp_on, log_ev = RMM(rmm).posterior(_t(images), _labels(classes))
        return _np({"responsibilities": resp, "responsibilities_on": resp_on, "log_evidence": log_ev})

    def rmm_e_step(self, rmm, images, labels=None, hard=False):
        resp, resp_on, per = RMM(rmm).e_step(_t(images), _labels(labels), hard)
        return _np({"responsibilities": resp, "responsibilities_on": resp_on, "per_example": per})

    def rmm_m_step(self, rmm, images, responsibilities, responsibilities_on):
        return _np(RMM(rmm).m_step(_t(images), _t(responsibilities), _t(responsibilities_on)))


#: ``--adapter torch_drmm.adapter:ADAPTER``
ADAPTER = TorchAdapter()
