"""Learning the DRMM in JAX: the EG objective by ``jax.grad``, EG / backprop steps, the CGLS block step.

SPEC §3 and §5; the terms (docs/porting.md, "Scale factors"):
CE = mean over labelled rows (label -1 = unlabelled) of ``logsumexp(s) - s_y``;
RC = ``sum ||I - x_hat||^2 / (2 N D)``; NN = ``sum_{l=1..L} mean relu(-z^(l))^2``;
H = mean entropy of ``softmax(s)`` (``"entropy"``) or ``log K`` minus it (``"kl_to_prior"``);
BAL = ``log K - entropy(mean_n softmax(s_n))``. The latents and rendered classes come from an E-step
outside the differentiated function; the gradient of a batch mean is then summed over the rows'
contributions by ``jax.grad`` itself.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from .core import bottom_up, render

__all__ = ["CE_ONLY", "trainable", "e_step", "objective", "update", "eg_step", "backprop_step", "block_step"]

TERMS = ("ce", "rc", "nn", "h", "balance")


def trainable(net: dict, params: dict) -> dict:
    names = [f"filters_{l}" for l in range(1, len(net["layers"]) + 1)]
    names += [f"biases_{l}" for l in range(1, len(net["layers"]) + 1)] + ["class_templates", "class_biases"]
    return {k: params[k] for k in names}



def e_step(net: dict, params: dict, images, labels):
    fw = bottom_up(net, params, images)
    classes = jnp.argmax(fw["scores"], axis=1)
    if labels is not None:
        classes = jnp.where(labels >= 0, labels, classes)
    latents = {k: v for k, v in fw.items() if k.startswith(("positions_", "switches_"))}
    return classes, latents


def _terms(tree: dict, net: dict, params: dict, images, labels, weights: dict, classes, latents) -> dict:
    p = {**params, **tree}
    k = net["n_classes"]
    out = {}
    if any(weights[t] > 0 for t in ("ce", "h", "balance")):
        s = bottom_up(net, p, images)["scores"]
        logq = jax.nn.log_softmax(s, axis=1)
        if weights["ce"] > 0:
            mask = labels >= 0
            picked = jnp.take_along_axis(logq, jnp.where(mask, labels, 0)[:, None], axis=1)[:, 0]
            out["ce"] = -jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
        q = jnp.exp(logq)
        if weights["h"] > 0:
            ent = jnp.mean(-jnp.sum(q * logq, axis=1))
            out["h"] = ent if weights["h_sign"] == "entropy" else math.log(k) - ent
        if weights["balance"] > 0:
            qbar = jnp.mean(q, axis=0)
            out["balance"] = math.log(k) + jnp.sum(qbar * jnp.log(qbar))
    if weights["rc"] > 0 or weights["nn"] > 0:
        zs = render(net, p, classes, latents)
        if weights["rc"] > 0:
            out["rc"] = jnp.sum((images - zs[0]) ** 2) / (2 * images.size)
        if weights["nn"] > 0:
            out["nn"] = sum(jnp.mean(jax.nn.relu(-z) ** 2) for z in zs[1:])
    out["objective"] = sum(weights[t] * out[t] for t in TERMS if t in out)
    return out


def objective(net: dict, params: dict, images, labels, weights: dict):
    """Terms and the gradient tree (every trainable name; zeros where a term does not reach a parameter)."""
    classes, latents = e_step(net, params, images, labels)

    def total(tree):
        terms = _terms(tree, net, params, images, labels, weights, classes, latents)
        return terms["objective"], terms

    (_, terms), grads = jax.value_and_grad(total, has_aux=True)(trainable(net, params))
    return terms, grads


def update(tree: dict, grads: dict, spec: dict) -> dict:
    """One step from a fresh state: SGD with momentum (velocity = g) or Adam (bias-corrected, t = 1)."""
    if spec["name"] == "sgd":
        return {k: v - spec["lr"] * grads[k] for k, v in tree.items()}
    if spec["name"] == "adam":
        b1, b2, eps = spec["beta1"], spec["beta2"], spec["eps"]
        out = {}
        for k, v in tree.items():
            m_hat = (1 - b1) * grads[k] / (1 - b1)
            v_hat = (1 - b2) * grads[k] ** 2 / (1 - b2)
            out[k] = v - spec["lr"] * m_hat / (jnp.sqrt(v_hat) + eps)
        return out
    raise ValueError(f"unknown optimizer {spec['name']!r}")


#: The backprop baseline's weights: CE alone.
CE_ONLY = {"ce": 1.0, "rc": 0.0, "nn": 0.0, "h": 0.0, "h_sign": "entropy", "balance": 0.0}


def eg_step(net, params, images, labels, weights, optimizer) -> dict:
    """E-step, objective gradient, one optimiser step from a fresh state: the new trainable arrays."""
    _, grads = objective(net, params, images, labels, weights)
    return update(trainable(net, params), grads, optimizer)


def backprop_step(net, params, images, labels, optimizer) -> dict:
    """The DCN baseline: CE alone, one optimiser step."""
    return eg_step(net, params, images, labels, CE_ONLY, optimizer)


def block_step(net, params, images, classes, latents, block: str, k_cg: int, damping: float) -> dict:
    """CGLS on ``RC_B + (damping / 2) ||theta - theta_old||^2`` at fixed latents (adjoint: ``jax.linear_transpose``)."""
    old = params[block]
    nd = images.size
    lam = damping * nd

    @jax.jit
    def apply(theta):
        return render(net, {**params, block: theta}, classes, latents)[0]

    transpose = jax.linear_transpose(apply, jax.ShapeDtypeStruct(old.shape, old.dtype))

    @jax.jit
    def adjoint(g):
        return transpose(g)[0]

    sq = lambda a: float(jnp.sum(a * a))  # noqa: E731
    r = images - apply(old)
    rc_before = sq(r) / (2 * nd)
    x = jnp.zeros_like(old)
    s = adjoint(r)
    d = s
    gamma = sq(s)
    iterates = []
    for _ in range(int(k_cg)):
        if gamma == 0.0:
            break
        q = apply(d)
        denom = sq(q) + lam * sq(d)
        if denom == 0.0:
            break
        alpha = gamma / denom
        x = x + alpha * d
        r = r - alpha * q
        iterates.append(sq(r) / (2 * nd))
        s = adjoint(r) - lam * x
        gamma_new = sq(s)
        d = s + (gamma_new / gamma) * d
        gamma = gamma_new
    return {"theta": old + x, "rc_before": jnp.asarray(rc_before),
            "rc_iterates": jnp.asarray(iterates, dtype=jnp.float64)}
