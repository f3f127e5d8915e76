"""Claim ``vjp-autodiff`` (SPEC §0, §2 D2, §3): every explicit VJP equals reverse-mode autodiff of the same code.

drmm_ref writes its vector-Jacobian products by hand (the primitives' VJPs, the generic backward
pass, the render VJP, the objective's gradient tree, the block operators' adjoints). Its kernels are
Array API code, so they also run on PyTorch tensors through ``array_api_compat.torch``. This claim
runs drmm_ref's *own forward functions* on float64 tensors that require gradients, takes
``torch.autograd`` of them, and compares with drmm_ref's explicit VJP run on the same tensors:

* primitives: ``conv2d`` (input and weight), ``conv2d_transpose`` (input and weight), ``relu``,
  ``maxpool2d`` (values in x), ``unpool2d`` (values), ``select2d``, ``logsumexp``, ``softmax``;
* the backward pass ``drmm.backward`` vs autograd of ``bottom_up(...).scores`` (images and every parameter);
* ``drmm.render_vjp`` vs autograd of ``render`` (cotangents on several levels), also of a
  ``relu_topdown`` rendering (SPEC §5: the ReLU masks);
* ``drmm.backward_and_render`` (the EG step's fused downward pass) vs autograd of the scores;
* ``learning.objective_and_gradients`` for every term alone and all together vs autograd of the
  objective built from the same E-step and term functions (``cross_entropy``, ``reconstruction``,
  ``nonnegativity``, ``entropy_term`` in both signs, ``balance_term``), unlabelled rows included, and
  ``learning.fused_objective_and_gradients`` (what ``eg_step`` uses) with and without ``relu_topdown``;
* ``learning.block_operator(...).adjoint`` vs autograd of ``.apply`` for every block.

It also runs the public entry points (sampling, inference, EM, EG steps, block steps, closed forms) on
torch tensors and records any that fail. PASS: every relative error ``max|explicit - autograd| /
max|autograd|`` is at most 1e-12 and every entry point ran. Skipped (status ``skipped``) where PyTorch
is not installed. JAX arrays are immutable and drmm_ref assigns into slices (``conv2d_transpose``,
``unpool2d``), so the code does not run on JAX; the JAX port is checked by the conformance runner instead.
"""

from __future__ import annotations

import math
import traceback

import numpy as np

from ._claim import Claim, Result, run_claim

CLAIM = Claim(
    id="vjp-autodiff",
    kind="identity",
    paper_ref="SPEC §0 (VJPs), §2 (D2: the backward pass), §3 (the objective's gradient)",
    statement="Every explicit VJP of drmm_ref (primitives, backward pass, render VJP, every objective gradient, block "
    "adjoints) equals torch.autograd of drmm_ref's own forward code run on PyTorch tensors (array-api-compat), "
    "to relative error 1e-12 in float64; every public entry point runs on torch tensors.",
    assumptions=(
        "float64 CPU tensors; inputs Gaussian (no exact zeros or tied windows: there autograd of the forward code "
        "and the VJP conventions may legitimately differ, e.g. torch.maximum splits the gradient at u = 0)",
        "class templates scaled so that |s_c - b_c| <= 4 (an unsaturated softmax: saturated, the H and balance "
        "gradients are ~1e-38 and both computations are rounding noise)",
        "the VJPs run on the same tensors (torch namespace) as the forward code that autograd differentiates",
        "relative error = max|explicit - autograd| / max|autograd| per compared array",
    ),
)

TOL = 1e-12


def _rel(a, b) -> float:
    a, b = np.asarray(a.detach().cpu().numpy()), np.asarray(b.detach().cpu().numpy())
    if a.shape != b.shape:
        return math.inf
    scale = float(np.abs(b).max()) if b.size else 0.0
    err = float(np.abs(a - b).max()) if b.size else 0.0
    return err / scale if scale > 0 else (0.0 if err == 0 else math.inf)


class _Checker:
    def __init__(self, torch):
        self.torch = torch
        self.worst: dict[str, float] = {}
        self.count = 0
        self.not_torch: list[str] = []

    def check(self, group: str, explicit, autograd) -> None:
        if not isinstance(explicit, self.torch.Tensor) or explicit.dtype != self.torch.float64:
            self.not_torch.append(group)
        self.worst[group] = max(self.worst.get(group, 0.0), _rel(explicit, autograd))
        self.count += 1


def _leaf(torch, a):
    return torch.as_tensor(np.asarray(a, dtype=np.float64)).clone().requires_grad_(True)


def _primitives(torch, P, chk: _Checker, rng: np.random.Generator, cases: int) -> None:
    grad = torch.autograd.grad
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    for _ in range(cases):
        n, c, o = (int(v) for v in rng.integers(1, [4, 4, 4]))
        k = int(rng.integers(1, 5))
        q = int(rng.integers(0, k + 2))
        p = int(rng.integers(1, 4))
        side = max(1, k - 2 * q)
        h, w = (int(v) for v in rng.integers(side, side + 7, size=2))
        x, wt = _leaf(torch, rng.standard_normal((n, c, h, w))), _leaf(torch, rng.standard_normal((o, c, k, k)))
        y = P.conv2d(x, wt, q)
        g = T(rng.standard_normal(tuple(y.shape)))
        gx, gw = grad(y, (x, wt), g)
        chk.check("conv2d: input", P.conv2d_vjp_input(g, wt.detach(), q), gx)
        chk.check("conv2d: weight", P.conv2d_vjp_weight(g, x.detach(), q), gw)
        yy = _leaf(torch, rng.standard_normal(tuple(y.shape)))
        xt = P.conv2d_transpose(yy, wt, q)
        gt = T(rng.standard_normal(tuple(xt.shape)))
        gy, gw2 = grad(xt, (yy, wt), gt)
        chk.check("conv2d_transpose: input", P.conv2d_transpose_vjp_input(gt, wt.detach(), q), gy)
        chk.check("conv2d_transpose: weight", P.conv2d_transpose_vjp_weight(gt, yy.detach(), q), gw2)
        u = _leaf(torch, rng.standard_normal((n, c, h, w)))
        gu = T(rng.standard_normal((n, c, h, w)))
        chk.check("relu", P.relu_vjp(gu, u.detach()), grad(P.relu(u), u, gu)[0])
        xp_ = _leaf(torch, rng.standard_normal((n, c, h * p, w * p)))
        values, positions = P.maxpool2d(xp_, p)
        gv = T(rng.standard_normal(tuple(values.shape)))
        chk.check("maxpool2d", P.maxpool2d_vjp(gv, positions, p), grad(values, xp_, gv)[0])
        v = _leaf(torch, rng.standard_normal(tuple(values.shape)))
        up = P.unpool2d(v, positions, p)
        gup = T(rng.standard_normal(tuple(up.shape)))
        chk.check("unpool2d", P.unpool2d_vjp_values(gup, positions, p), grad(up, v, gup)[0])
        sel = P.select2d(xp_, positions, p)
        chk.check("select2d", P.select2d_vjp(gv, positions, p), grad(sel, xp_, gv)[0])
        s = _leaf(torch, 3 * rng.standard_normal((n + 1, o + 1)))
        gl = T(rng.standard_normal((n + 1,)))
        chk.check("logsumexp", P.logsumexp_vjp(gl, s.detach(), 1), grad(P.logsumexp(s, 1), s, gl)[0])
        gs = T(rng.standard_normal(tuple(s.shape)))
        chk.check("softmax", P.softmax_vjp(gs, s.detach(), 1), grad(P.softmax(s, 1), s, gs)[0])


def _with_leaves(torch, params):
    """The parameters with every trainable tensor a fresh leaf that requires gradients."""
    from drmm_ref import learning as LR

    tree = {k: v.detach().clone().requires_grad_(True) for k, v in LR.trainable(params).items()}
    return LR.with_trainable(params, tree), tree


WEIGHTS = {
    "ce": dict(ce=1, rc=0, nn=0, h=0), "rc": dict(ce=0, rc=1, nn=0, h=0), "nn": dict(ce=0, rc=0, nn=1, h=0),
    "h-entropy": dict(ce=0, rc=0, nn=0, h=1, h_sign="entropy"),
    "h-kl": dict(ce=0, rc=0, nn=0, h=1, h_sign="kl_to_prior"),
    "balance": dict(ce=0, rc=0, nn=0, h=0, balance=1), "all": dict(ce=1, rc=1, nn=0.5, h=0.2, balance=0.3),
}


def _model(torch, D, LR, chk: _Checker, net, seed: int, n: int) -> None:
    grad = torch.autograd.grad
    rng = np.random.default_rng(seed)
    base = D.init_params(net, seed, bias_scale=0.1, class_bias_scale=0.1).to(torch)
    T = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    images = T(rng.standard_normal((n,) + net.image_shape))
    # Scores of order 1: a saturated softmax (conv-small-ladder's initial scores reach 180) makes the H and
    # balance gradients ~1e-38, rounding noise of O(1) intermediates in both computations.
    spread = float((D.bottom_up(base, images).scores - base.class_biases).abs().max())
    if spread > 4.0:
        base = base.replace(class_templates=base.class_templates * (4.0 / spread))
    label = f"{net.name}"
    # the backward pass
    params, tree = _with_leaves(torch, base)
    x = images.clone().requires_grad_(True)
    fw = D.bottom_up(params, x)
    sbar = T(rng.standard_normal((n, net.n_classes)))
    names = list(tree)
    auto = grad(fw.scores, [x] + [tree[k] for k in names], sbar)
    g = D.backward(base, D.bottom_up(base, images), sbar)
    explicit = {"input": g.input, "class_templates": g.class_templates, "class_biases": g.class_biases}
    explicit.update({f"filters_{l}": w for l, w in enumerate(g.filters, start=1)})
    explicit.update({f"biases_{l}": b for l, b in enumerate(g.biases, start=1)})
    for k, a in zip(["input"] + names, auto):
        chk.check(f"backward ({label})", explicit[k], a)
    # the render VJP
    fw0 = D.bottom_up(base, images)
    classes = torch.as_tensor(rng.integers(0, net.n_classes, size=n))
    params, tree = _with_leaves(torch, base)
    r = D.render(params, classes, fw0.latents)
    levels = sorted({0, 1, net.L})
    cot = {l: T(rng.standard_normal(tuple(r.renderings[l].shape))) for l in levels}
    total = sum((r.renderings[l] * cot[l]).sum() for l in levels)
    rv_names = [k for k in tree if k.startswith("filters_")] + ["class_templates"]
    auto = grad(total, [tree[k] for k in rv_names])
    gr = D.render_vjp(base, D.render(base, classes, fw0.latents), None, cot)
    explicit = {"class_templates": gr.class_templates}
    explicit.update({f"filters_{l}": w for l, w in enumerate(gr.filters, start=1)})
    for k, a in zip(rv_names, auto):
        chk.check(f"render_vjp ({label})", explicit[k], a)
    # the objective's gradient tree, term by term and all together
    labels = torch.as_tensor(np.array([(i % net.n_classes) if i % 3 != 2 else -1 for i in range(n)], dtype=np.int64))
    for tag, w in WEIGHTS.items():
        weights = LR.LossWeights(**w)
        est = LR.e_step(base, images, labels, render_=weights.generative)
        _, tree_explicit = LR.objective_and_gradients(base, est, labels, weights)
        params, tree = _with_leaves(torch, base)
        e2 = LR.e_step(params, images, labels, render_=weights.generative)
        value = 0.0
        if weights.ce > 0:
            value = value + weights.ce * LR.cross_entropy(e2.forward.scores, labels)[0]
        if weights.rc > 0:
            value = value + weights.rc * LR.reconstruction(images, e2.rendering.image)[0]
        if weights.nn > 0:
            value = value + weights.nn * LR.nonnegativity(e2.rendering.renderings)[0]
        if weights.h > 0:
            value = value + weights.h * LR.entropy_term(e2.forward.scores, weights.h_sign)[0]
        if weights.balance > 0:
            value = value + weights.balance * LR.balance_term(e2.forward.scores)[0]
        auto = grad(value, [tree[k] for k in names], allow_unused=True)
        for k, a in zip(names, auto):
            a = torch.zeros_like(tree[k]) if a is None else a
            e = tree_explicit.get(k, torch.zeros_like(tree[k]))
            chk.check(f"objective {tag}", e, a)
    # the fused EG pass (backward_and_render, then render_vjp), also with the ReLU top-down form (SPEC §5)
    grads, _ = D.backward_and_render(base, fw0, sbar, classes)
    params, tree = _with_leaves(torch, base)
    auto = grad(D.bottom_up(params, images).scores, [tree[k] for k in names], sbar, allow_unused=True)
    explicit = {"class_templates": grads.class_templates, "class_biases": grads.class_biases}
    explicit.update({f"filters_{l}": w for l, w in enumerate(grads.filters, start=1)})
    explicit.update({f"biases_{l}": b for l, b in enumerate(grads.biases, start=1)})
    for k, a in zip(names, auto):
        chk.check(f"backward_and_render ({label})", explicit[k], torch.zeros_like(tree[k]) if a is None else a)
    params, tree = _with_leaves(torch, base)
    r = D.render(params, classes, fw0.latents, relu_topdown=True)
    total = sum((r.renderings[l] * cot[l]).sum() for l in levels)
    auto = grad(total, [tree[k] for k in rv_names])
    gr = D.render_vjp(base, D.render(base, classes, fw0.latents, relu_topdown=True), None, cot)
    explicit = {"class_templates": gr.class_templates}
    explicit.update({f"filters_{l}": w for l, w in enumerate(gr.filters, start=1)})
    for k, a in zip(rv_names, auto):
        chk.check(f"render_vjp relu_topdown ({label})", explicit[k], a)
    for relu_topdown in (False, True):
        weights = LR.LossWeights(**WEIGHTS["all"])
        est = LR.e_step(base, images, labels)
        _, tree_explicit, _ = LR.fused_objective_and_gradients(base, est.forward, est.classes, labels, weights,
                                                               relu_topdown=relu_topdown)
        params, tree = _with_leaves(torch, base)
        e2 = LR.e_step(params, images, labels, relu_topdown=relu_topdown)
        value = (weights.ce * LR.cross_entropy(e2.forward.scores, labels)[0]
                 + weights.rc * LR.reconstruction(images, e2.rendering.image)[0]
                 + weights.nn * LR.nonnegativity(e2.rendering.renderings)[0]
                 + weights.h * LR.entropy_term(e2.forward.scores, weights.h_sign)[0]
                 + weights.balance * LR.balance_term(e2.forward.scores)[0])
        auto = grad(value, [tree[k] for k in names], allow_unused=True)
        for k, a in zip(names, auto):
            a = torch.zeros_like(tree[k]) if a is None else a
            chk.check(f"fused objective all{' relu_topdown' if relu_topdown else ''}",
                      tree_explicit.get(k, torch.zeros_like(tree[k])), a)
    # the block operators' adjoints
    rend = D.render(base, classes, fw0.latents)
    for block in LR.block_names(net.L):
        op = LR.block_operator(base, rend, block)
        theta = T(rng.standard_normal(op.shape)).requires_grad_(True)
        gimg = T(rng.standard_normal((n,) + net.image_shape))
        auto = grad((op.apply(theta) * gimg).sum(), theta)[0]
        chk.check("block adjoint", op.adjoint(gimg), auto)


def _entry_points(torch) -> dict[str, str]:
    """Run the public entry points on torch tensors; ``{name: "ok" | "<error> at <file:line>"}``."""
    import drmm_ref as dr
    from drmm_ref import drmm as D
    from drmm_ref import learning as LR
    from drmm_ref import rmm as R

    out: dict[str, str] = {}

    def attempt(name, fn):
        try:
            fn()
            out[name] = "ok"
        except Exception as exc:  # recorded, and fails the claim
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            out[name] = f"{type(exc).__name__}: {exc} at {frame.filename.split('drmm_ref/')[-1]}:{frame.lineno}"

    p = D.init_params(dr.preset("tiny"), 0, bias_scale=0.1).to(torch)
    s = D.sample(p, 3, 0)
    labels = torch.tensor([0, 1, -1])
    est = LR.e_step(p, s.images, labels)
    attempt("drmm.sample", lambda: D.sample(p, 3, 1))
    attempt("drmm.bottom_up/top_down", lambda: D.top_down(p, D.bottom_up(p, s.images)))
    attempt("drmm.log_joint", lambda: D.log_joint(p, s.images, s.classes, s.latents))
    attempt("drmm.expected_rendering", lambda: D.expected_rendering(p, s.rendering.renderings[1], 1))
    attempt("drmm.relaxation_report", lambda: D.relaxation_report(p))
    attempt("drmm.rendered_negativity", lambda: D.rendered_negativity(p, s.images))
    attempt("learning.eg_step (Adam, block steps)", lambda: LR.eg_step(
        p, LR.Adam(), LR.Adam().init(LR.trainable(p)), s.images, labels,
        LR.EGConfig(cg_blocks=("filters_1", "class_templates"))))
    attempt("learning.backprop_step (SGD)", lambda: LR.backprop_step(p, LR.SGD(), LR.SGD().init(LR.trainable(p)),
                                                                      s.images, labels))
    attempt("learning.apply_closed_forms", lambda: LR.apply_closed_forms(p, LR.prior_stats(est, s.images)))
    rng = np.random.default_rng(0)
    rmm = R.RMMParams(templates=torch.as_tensor(rng.standard_normal((2, 1, 1, 3, 3))),
                      class_prior=torch.tensor([0.4, 0.6], dtype=torch.float64), switch_prior=0.7, sigma2=0.5,
                      image_shape=(6, 6), padding=1)
    images = R.sample(rmm, 6, 0)[0]
    attempt("rmm.sample/max_sum_scores/map_estimate",
            lambda: (R.map_estimate(rmm, images), R.max_sum_scores(rmm, images)))
    attempt("rmm.posterior/e_step/m_step", lambda: R.m_step(rmm, images, R.e_step(rmm, images)))
    attempt("rmm.hard_e_step/m_step", lambda: R.m_step(rmm, images, R.hard_e_step(rmm, images)))
    attempt("rmm.to_dcn/dcn_scores/from_dcn",
            lambda: (R.from_dcn(R.to_dcn(rmm), 0.5), R.dcn_scores(R.to_dcn(rmm), images)))
    attempt("rmm.tempered_class_scores", lambda: R.tempered_class_scores(rmm, images, 2.0))
    attempt("rmm.fit (k-means++ init, soft EM)", lambda: R.fit(images, 2, kernel=3, padding=1, max_iter=2, seed=0))
    return out


def run(args) -> Result:
    try:
        import torch
    except ImportError:
        return Result("skipped", {"reason": "PyTorch is not installed"}, TOL,
                      "skipped: PyTorch is not installed (pip install torch==2.13.0, CPU wheel)")
    import warnings

    from drmm_ref import drmm as D
    from drmm_ref import learning as LR
    from drmm_ref import primitives as P

    quick = args.mode == "quick"
    chk = _Checker(torch)
    rng = np.random.default_rng(args.seed)
    _primitives(torch, P, chk, rng, 20 if quick else 300)
    from drmm_ref.drmm.enumerate import random_tiny_network

    nets = [D.preset("tiny")] + [random_tiny_network(args.seed + i) for i in range(2 if quick else 10)]
    if not quick:
        nets += [D.preset("small2"), D.preset("conv-small"), D.preset("conv-small-ladder")]
    for i, net in enumerate(nets):
        _model(torch, D, LR, chk, net, args.seed + 100 + i, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entry = _entry_points(torch)
    worst = max(chk.worst.values())
    failed_entry = {k: v for k, v in entry.items() if v != "ok"}
    passed = worst <= TOL and not failed_entry and not chk.not_torch
    measured = {"worst_relative_error": worst, "by_vjp": chk.worst, "comparisons": chk.count,
                "networks": [n.name for n in nets], "entry_points": entry,
                "outputs_not_torch_float64": sorted(set(chk.not_torch)), "torch": torch.__version__}
    summary = (f"{chk.count} explicit VJPs vs torch.autograd of the same code on torch tensors: worst rel. error "
               f"{worst:.1e} (tol {TOL:g}); {sum(v == 'ok' for v in entry.values())}/{len(entry)} entry points ran on "
               "torch"
               + (f"; FAILED: {', '.join(failed_entry)}" if failed_entry else ""))
    return Result("pass" if passed else "fail", measured, TOL, summary, dtype="float64",
                  data_source="synthetic (seeded)")


def main(argv=None):
    return run_claim(CLAIM, run, argv)


if __name__ == "__main__":  # pragma: no cover
    main()
