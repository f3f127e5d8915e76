"""Learning the DRMM in PyTorch: the EG objective by autograd, EG / backprop steps, the CGLS block step (SPEC §3, §5).

The objective at the E-step's latents (held fixed):

    L = w_ce CE + w_rc RC + w_nn NN + w_h H + w_balance BAL
    CE  = mean over the LABELLED rows (label -1 = unlabelled) of logsumexp(s) - s_y
    RC  = sum ||I - x_hat||^2 / (2 N D)                (not divided by sigma^2)
    NN  = sum over levels l = 1..L of mean over (n, units) of relu(-z^(l))^2   (templates in, image out)
    H   = mean_n entropy(q_n) ("entropy") or log K - mean_n entropy(q_n) ("kl_to_prior"),  q = softmax(s)
    BAL = log K - entropy(mean_n q_n)

The E-step renders each row from its label, or from the argmax class when unlabelled. Autograd sums the
parameter gradients over the batch, as drmm_ref does; the terms themselves are batch means.
"""

from __future__ import annotations

import math

import torch

from .core import Net, Params, bottom_up, render

__all__ = ["e_step", "objective", "eg_step", "backprop_step", "block_step"]

TERMS = ("ce", "rc", "nn", "h", "balance")


def e_step(net: Net, p: Params, images: torch.Tensor, labels: torch.Tensor | None):
    """Bottom-up latents and the classes to render (label, or argmax where the label is -1), without gradients."""
    with torch.no_grad():
        fw = bottom_up(net, p, images)
        classes = fw["scores"].argmax(dim=1)
        if labels is not None:
            classes = torch.where(labels >= 0, labels, classes)
    latents = {k: v for k, v in fw.items() if k.startswith(("positions_", "switches_"))}
    return fw, classes, latents


def _terms(net: Net, p: Params, images, labels, weights: dict, classes, latents) -> dict:
    k = net.n_classes
    out = {}
    if any(weights[t] > 0 for t in ("ce", "h", "balance")):
        s = bottom_up(net, p, images)["scores"]  # autograd routes through relu and the max-pool indices
        logq = torch.log_softmax(s, dim=1)
        if weights["ce"] > 0:
            mask = labels >= 0
            nl = int(mask.sum())
            picked = -logq[mask].gather(1, labels[mask].view(-1, 1)).sum()
            out["ce"] = picked / nl if nl else s.sum() * 0.0
        q = logq.exp()
        if weights["h"] > 0:
            ent = -(q * logq).sum(dim=1).mean()
            out["h"] = ent if weights["h_sign"] == "entropy" else math.log(k) - ent
        if weights["balance"] > 0:
            qbar = q.mean(dim=0)
            out["balance"] = math.log(k) + (qbar * torch.log(qbar)).sum()
    if weights["rc"] > 0 or weights["nn"] > 0:
        zs = render(net, p, classes, latents)
        if weights["rc"] > 0:
            out["rc"] = ((images - zs[0]) ** 2).sum() / (2 * images.numel())
        if weights["nn"] > 0:
            out["nn"] = sum((torch.relu(-z) ** 2).mean() for z in zs[1:])
    out["objective"] = sum(weights[t] * out[t] for t in TERMS if t in out)
    return out


def objective(net: Net, p: Params, images, labels, weights: dict):
    """Terms (tensors) and the gradient tree (name -> tensor) of the weighted objective at the E-step's latents."""
    _, classes, latents = e_step(net, p, images, labels)
    tree = {k: v.detach().clone().requires_grad_(True) for k, v in p.trainable().items()}
    q = p.with_trainable(tree)
    terms = _terms(net, q, images, labels, weights, classes, latents)
    names = list(tree)
    grads = torch.autograd.grad(terms["objective"], [tree[k] for k in names], allow_unused=True)
    gradients = {k: g for k, g in zip(names, grads) if g is not None}
    return {k: v.detach() for k, v in terms.items()}, gradients


def _optimizer(params: list, spec: dict):
    if spec["name"] == "sgd":
        return torch.optim.SGD(params, lr=spec["lr"], momentum=spec["momentum"])
    if spec["name"] == "adam":
        return torch.optim.Adam(params, lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"])
    raise ValueError(f"unknown optimizer {spec['name']!r}")


def _step(p: Params, gradients: dict, spec: dict) -> dict:
    tree = {k: v.detach().clone() for k, v in p.trainable().items()}
    for k, v in tree.items():
        v.grad = gradients.get(k, torch.zeros_like(v)).detach().clone()
    opt = _optimizer(list(tree.values()), spec)
    opt.step()
    return tree


def eg_step(net: Net, p: Params, images, labels, weights: dict, optimizer: dict) -> dict:
    """E-step, objective gradient, one optimiser step from a fresh state: the new trainable tensors."""
    _, grads = objective(net, p, images, labels, weights)
    return _step(p, grads, optimizer)


def backprop_step(net: Net, p: Params, images, labels, optimizer: dict) -> dict:
    """The DCN baseline: CE alone, one optimiser step."""
    weights = {"ce": 1.0, "rc": 0.0, "nn": 0.0, "h": 0.0, "h_sign": "entropy", "balance": 0.0}
    _, grads = objective(net, p, images, labels, weights)
    return _step(p, grads, optimizer)


def block_step(net: Net, p: Params, images, classes, latents, block: str, k_cg: int, damping: float) -> dict:
    """CGLS on ``RC_B(theta) + (damping / 2) ||theta - theta_old||^2`` at fixed latents (SPEC §3).

    ``x_hat`` is linear in the block, ``A theta = render(params with the block = theta)``; its adjoint is
    the autograd VJP of that linear map. Returns the new block, RC before, and RC after each iterate.
    """
    old = p.trainable()[block].detach()
    nd = images.numel()
    lam = damping * nd

    def apply(theta):
        return render(net, p.with_trainable({block: theta}), classes, latents)[0]

    def adjoint(g):
        theta = torch.zeros_like(old, requires_grad=True)
        (grad,) = torch.autograd.grad((apply(theta) * g).sum(), theta)
        return grad

    with torch.no_grad():
        r = images - apply(old)
    rc_before = float((r * r).sum()) / (2 * nd)
    x = torch.zeros_like(old)
    s = adjoint(r)
    d = s
    gamma = float((s * s).sum())
    iterates = []
    for _ in range(int(k_cg)):
        if gamma == 0.0:
            break
        with torch.no_grad():
            q = apply(d)
        denom = float((q * q).sum()) + lam * float((d * d).sum())
        if denom == 0.0:
            break
        alpha = gamma / denom
        x = x + alpha * d
        r = r - alpha * q
        iterates.append(float((r * r).sum()) / (2 * nd))
        s = adjoint(r) - lam * x
        gamma_new = float((s * s).sum())
        d = s + (gamma_new / gamma) * d
        gamma = gamma_new
    return {"theta": old + x, "rc_before": torch.tensor(rc_before, dtype=torch.float64),
            "rc_iterates": torch.tensor(iterates, dtype=torch.float64)}
