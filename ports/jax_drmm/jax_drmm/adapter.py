"""The conformance adapter of the JAX port: NumPy in, NumPy out (drmm_ref.conformance.spec).

``python -m drmm_ref.conformance --adapter jax_drmm.adapter:ADAPTER``. Every VJP is ``jax.vjp`` of the
forward operation.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import core as C
from . import learning as LR
from .rmm import RMM

__all__ = ["JaxAdapter", "ADAPTER"]


def _t(a):
    return jnp.asarray(np.asarray(a, dtype=np.float64))


def _i(a):
    return jnp.asarray(np.asarray(a, dtype=np.int64))


def _np(x):
    if isinstance(x, dict):
        return {k: _np(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_np(v) for v in x]
    return np.asarray(x)


def _vjp(fn, inputs, grad_out):
    _, pullback = jax.vjp(fn, *inputs)
    return pullback(grad_out)


def _params(params: dict) -> dict:
    return {k: (_t(v) if k != "noise_variance" else float(v)) for k, v in params.items()}


def _latents(latents: dict) -> dict:
    return {k: (_i(v) if k.startswith("positions_") else jnp.asarray(np.asarray(v, dtype=bool)))
            for k, v in latents.items()}


def _labels(labels):
    return None if labels is None else _i(labels)


_CACHE: dict = {}


def _jit(key: str, static: Any, build):
    """One ``jax.jit`` function per (operation, static arguments): cases with the same net and shapes reuse its
    compilation (XLA compiles once per shape; op-by-op dispatch would compile every small op separately)."""
    k = (key, json.dumps(static, sort_keys=True, default=str))
    if k not in _CACHE:
        _CACHE[k] = jax.jit(build())
    return _CACHE[k]


def _arrays(params: dict) -> dict:
    return {k: v for k, v in params.items() if k != "noise_variance"}


class JaxAdapter:
    """jax_drmm behind drmm_ref's conformance interface."""

    name = "jax_drmm (JAX port)"

    def conv2d(self, x, weight, padding):
        return _np(C.conv2d(_t(x), _t(weight), padding))

    def conv2d_transpose(self, y, weight, padding):
        return _np(C.conv2d_transpose(_t(y), _t(weight), padding))

    def conv2d_vjp(self, x, weight, padding, grad_out):
        gx, gw = _vjp(lambda a, w: C.conv2d(a, w, padding), [_t(x), _t(weight)], _t(grad_out))
        return _np({"grad_x": gx, "grad_weight": gw})

    def conv2d_transpose_vjp(self, y, weight, padding, grad_out):
        gy, gw = _vjp(lambda a, w: C.conv2d_transpose(a, w, padding), [_t(y), _t(weight)], _t(grad_out))
        return _np({"grad_y": gy, "grad_weight": gw})

    def relu(self, u):
        return _np(jax.nn.relu(_t(u)))

    def relu_vjp(self, u, grad_out):
        return _np(_vjp(jax.nn.relu, [_t(u)], _t(grad_out))[0])

    def maxpool2d(self, x, pool):
        v, t = C.maxpool2d(_t(x), pool)
        return _np({"values": v, "positions": t})

    def maxpool2d_vjp(self, x, pool, grad_out):
        return _np(_vjp(lambda a: C.maxpool2d(a, pool)[0], [_t(x)], _t(grad_out))[0])

    def unpool2d(self, values, positions, pool):
        return _np(C.unpool2d(_t(values), _i(positions), pool))

    def select2d(self, x, positions, pool):
        return _np(C.select2d(_t(x), _i(positions), pool))

    def logsumexp(self, x, axis):
        return _np(logsumexp(_t(x), axis=axis))

    def logsumexp_vjp(self, x, axis, grad_out):
        return _np(_vjp(lambda a: logsumexp(a, axis=axis), [_t(x)], _t(grad_out))[0])

    def softmax(self, x, axis):
        return _np(jax.nn.softmax(_t(x), axis=axis))

    def softmax_vjp(self, x, axis, grad_out):
        return _np(_vjp(lambda a: jax.nn.softmax(a, axis=axis), [_t(x)], _t(grad_out))[0])

    def bottom_up(self, net, params, images):
        f = _jit("bottom_up", net, lambda: lambda p, x: C.bottom_up(net, p, x))
        return _np(f(_arrays(_params(params)), _t(images)))

    def top_down(self, net, params, images, classes=None):
        def build():
            def top_down(p, x, cls):
                fw = C.bottom_up(net, p, x)
                cls = jnp.argmax(fw["scores"], axis=1) if cls is None else cls
                zs = C.render(net, p, cls, {k: v for k, v in fw.items() if k.startswith(("positions_", "switches_"))})
                out = {f"renderings_{l}": z for l, z in enumerate(zs)}
                out["classes"] = cls
                return out
            return top_down

        f = _jit("top_down", net, build)
        return _np(f(_arrays(_params(params)), _t(images), None if classes is None else _i(classes)))

    def _render(self, net):
        return _jit("render", net, lambda: lambda p, cls, lat: C.render(net, p, cls, lat))

    def render(self, net, params, classes, latents):
        zs = self._render(net)(_arrays(_params(params)), _i(classes), _latents(latents))
        return _np({f"renderings_{l}": z for l, z in enumerate(zs)})

    def sample(self, net, params, classes, latents, noise):
        p = _params(params)
        image = self._render(net)(_arrays(p), _i(classes), _latents(latents))[0]
        return _np(image + _t(noise) * float(np.sqrt(p["noise_variance"])))

    def log_joint(self, net, params, images, classes, latents):
        p = _params(params)
        s2 = p["noise_variance"]
        f = _jit("log_joint", [net, s2],
                 lambda: lambda q, x, c, lat: C.log_joint(net, {**q, "noise_variance": s2}, x, c, lat))
        return _np(f(_arrays(p), _t(images), _i(classes), _latents(latents)))

    def backward(self, net, params, images, grad_scores):
        def build():
            def backward(p, x, g):
                gx, gt = _vjp(lambda a, t: C.bottom_up(net, {**p, **t}, a)["scores"], [x, LR.trainable(net, p)], g)
                return {"input": gx, **gt}
            return backward

        return _np(_jit("backward", net, build)(_arrays(_params(params)), _t(images), _t(grad_scores)))

    def render_vjp(self, net, params, classes, latents, grad_renderings):
        levels = sorted(int(l) for l in grad_renderings)

        def build():
            def render_vjp(p, cls, lat, gs):
                tree = {k: v for k, v in LR.trainable(net, p).items() if k.startswith(("filters_", "class_t"))}

                def total(t):
                    zs = C.render(net, {**p, **t}, cls, lat)
                    return sum(jnp.sum(zs[l] * g) for l, g in zip(levels, gs))

                return jax.grad(total)(tree)
            return render_vjp

        f = _jit("render_vjp", [net, levels], build)
        gs = [_t(grad_renderings[l] if l in grad_renderings else grad_renderings[str(l)]) for l in levels]
        return _np(f(_arrays(_params(params)), _i(classes), _latents(latents), gs))

    def _objective(self, net, weights, with_labels):
        return _jit("objective", [net, weights, with_labels],
                    lambda: lambda p, x, y: LR.objective(net, p, x, y, weights))

    def objective(self, net, params, images, labels, weights):
        f = self._objective(net, weights, labels is not None)
        terms, grads = f(_arrays(_params(params)), _t(images), _labels(labels))
        return _np({"terms": terms, "gradients": grads})

    def eg_step(self, net, params, images, labels, weights, optimizer):
        p = _arrays(_params(params))
        _, grads = self._objective(net, weights, labels is not None)(p, _t(images), _labels(labels))
        return _np(LR.update(LR.trainable(net, p), grads, optimizer))

    def backprop_step(self, net, params, images, labels, optimizer):
        return self.eg_step(net, params, images, labels, LR.CE_ONLY, optimizer)

    def block_step(self, net, params, images, classes, latents, block, k_cg, damping):
        out = LR.block_step(net, _params(params), _t(images), _i(classes), _latents(latents), block, k_cg, damping)
        return _np(out)

    @staticmethod
    def _rmm(method: str, rmm: dict, *args, extra=None):
        """``RMM(rmm).method(*args)`` under one jit per (method, geometry): arrays traced, the rest static."""
        arrays = {k: _t(rmm[k]) for k in ("templates", "class_prior", "switch_prior")}
        if rmm.get("nuisance_prior") is not None:
            arrays["nuisance_prior"] = _t(rmm["nuisance_prior"])
        static = {k: rmm.get(k) for k in ("sigma2", "image_shape", "padding", "pool")}
        static["sigma2"] = float(static["sigma2"])
        f = _jit("rmm." + method, [static, sorted(arrays), extra],
                 lambda: lambda arrs, *a: getattr(RMM({**static, **arrs}), method)(*a))
        return f(arrays, *args)

    @staticmethod
    def _rmm_latents(latents):
        return {k: _i(v) for k, v in latents.items()}

    def rmm_render(self, rmm, classes, latents):
        return _np(self._rmm("render", rmm, _i(classes), self._rmm_latents(latents)))

    def rmm_log_joint(self, rmm, images, classes, latents):
        return _np(self._rmm("log_joint", rmm, _t(images), _i(classes), self._rmm_latents(latents)))

    def rmm_max_sum_scores(self, rmm, images):
        return _np(self._rmm("max_sum_scores", rmm, _t(images)))

    def rmm_dcn_scores(self, rmm, images):
        return _np(self._rmm("dcn_scores", rmm, _t(images)))

    def rmm_map_estimate(self, rmm, images, classes=None):
        cls, sub, pos, a, score = self._rmm("map_estimate", rmm, _t(images), _labels(classes))
        return _np({"classes": cls, "subtemplates": sub, "positions": pos, "switches": a, "scores": score})

    def rmm_posterior(self, rmm, images, classes=None):
        resp, resp_on, log_ev = self._rmm("posterior", rmm, _t(images), _labels(classes))
        return _np({"responsibilities": resp, "responsibilities_on": resp_on, "log_evidence": log_ev})

    def rmm_e_step(self, rmm, images, labels=None, hard=False):
        if hard:
            resp, resp_on, per = self._rmm("map_estimate_one_hot", rmm, _t(images), _labels(labels))
        else:
            resp, resp_on, per = self._rmm("posterior", rmm, _t(images), _labels(labels))
        return _np({"responsibilities": resp, "responsibilities_on": resp_on, "per_example": per})

    def rmm_m_step(self, rmm, images, responsibilities, responsibilities_on):
        return _np(RMM(rmm).m_step(_t(images), _t(responsibilities), _t(responsibilities_on)))


#: ``--adapter jax_drmm.adapter:ADAPTER``
ADAPTER = JaxAdapter()
