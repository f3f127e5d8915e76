"""Closed forms, optimisers and the EG / backprop steps (SPEC §3)."""

from __future__ import annotations

import numpy as np
import pytest

from drmm_ref.drmm import Layer, Network, init_params, log_joint, sample
from drmm_ref.learning import (SGD, Adam, EGConfig, LossWeights, apply_closed_forms, backprop_step, e_step,
                               eg_step, prior_stats, trainable)
from drmm_ref.learning.closed_forms import PriorStats

from ._helpers import host

NET = Network((1, 10, 10), (Layer(3, 3, 1, 2), Layer(4, 3, 0, 1)), n_classes=3, name="step-net")


def _batch(seed=0, n=12, dtype="float64", xp="numpy"):
    truth = init_params(NET, seed + 100, d1_condition=True, noise_variance=0.01, dtype=dtype, xp=xp)
    s = sample(truth, n, seed)
    params = init_params(NET, seed, bias_scale=0.05, dtype=dtype, xp=xp)
    return params, s.images, s.classes


def test_closed_forms_are_the_counts_and_maximise_the_log_joint(xp):
    params, images, labels = _batch(1, xp=xp)
    est = e_step(params, images, labels)
    stats = prior_stats(est)
    y = host(labels)
    np.testing.assert_array_equal(stats.class_counts, np.bincount(y, minlength=3))
    for l, a in enumerate(est.latents.switches):
        assert stats.on_counts[l] == host(a).sum() and stats.unit_counts[l] == host(a).size
    resid = host(images) - host(est.rendering.image)
    assert stats.noise_variance == pytest.approx(np.mean(resid ** 2), rel=1e-12)
    new = apply_closed_forms(params, stats)
    np.testing.assert_allclose(host(new.class_prior), np.maximum(np.bincount(y, minlength=3) / len(y), 1e-6)
                               / np.maximum(np.bincount(y, minlength=3) / len(y), 1e-6).sum(), rtol=1e-12)
    # the updates maximise the average log joint at these latents: perturbing any of them lowers it
    def lj(p):
        return float(np.sum(host(log_joint(p, images, labels, est.latents))))

    best = lj(new)
    assert lj(new.replace(noise_variance=new.noise_variance * 1.05)) < best
    assert lj(new.replace(noise_variance=new.noise_variance * 0.95)) < best
    pc = host(new.class_prior)
    moved = pc.copy()
    moved[0] += 0.01
    moved[1] -= 0.01
    assert lj(new.replace(class_prior=xp.asarray(moved / moved.sum()))) < best
    on = host(new.switch_prior)
    for l in range(NET.L):
        for d in (-0.01, 0.01):
            moved = on.copy()
            moved[l] = np.clip(moved[l] + d, 1e-3, 1 - 1e-3)
            assert lj(new.replace(switch_prior=xp.asarray(moved))) < best + 1e-9


def test_prior_stats_add_over_batches():
    params, images, labels = _batch(2)
    whole = prior_stats(e_step(params, images, labels))
    parts = [prior_stats(e_step(params, images[i:i + 4], labels[i:i + 4])) for i in range(0, 12, 4)]
    total = PriorStats.zeros(3, NET.L)
    for p in parts:
        total = total + p
    np.testing.assert_allclose(total.class_counts, whole.class_counts)
    np.testing.assert_allclose(total.on_counts, whole.on_counts)
    assert total.noise_variance == pytest.approx(whole.noise_variance, rel=1e-12)


def _reference_adam(theta, grads, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        theta = theta - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return theta


def test_optimisers_match_textbook_updates(xp):
    rng = np.random.default_rng(0)
    theta = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) for _ in range(5)]
    opt = Adam(lr=1e-2)
    tree = {"w": xp.asarray(theta)}
    state = opt.init(tree)
    for g in grads:
        tree, state = opt.update(tree, {"w": xp.asarray(g)}, state)
    assert state.step == 5
    np.testing.assert_allclose(host(tree["w"]), _reference_adam(theta, grads, lr=1e-2), rtol=1e-10, atol=1e-13)
    sgd = SGD(lr=0.1, momentum=0.5)
    tree, state = {"w": xp.asarray(theta)}, None
    state = sgd.init(tree)
    v, ref = np.zeros_like(theta), theta.copy()
    for g in grads:
        tree, state = sgd.update(tree, {"w": xp.asarray(g)}, state)
        v = 0.5 * v + g
        ref = ref - 0.1 * v
    np.testing.assert_allclose(host(tree["w"]), ref, rtol=1e-12)
    # a parameter without a gradient does not move under SGD
    tree2, _ = sgd.update({"w": xp.asarray(theta)}, {}, sgd.init({"w": xp.asarray(theta)}))
    np.testing.assert_array_equal(host(tree2["w"]), theta)


@pytest.mark.parametrize("cg_blocks", [(), ("filters_1", "class_templates")], ids=["G-step", "G-step+CGLS"])
def test_eg_objective_falls_on_a_tiny_problem(cg_blocks):
    params, images, labels = _batch(3, n=24)
    opt = Adam(lr=1e-2)
    state = opt.init(trainable(params))
    cfg = EGConfig(LossWeights(ce=1.0, rc=1.0, nn=0.5, h=0.0), cg_blocks=cg_blocks, k_cg=3, trace_m_step=True)
    first = first_rc = None
    rc_m = []
    for _ in range(60):
        params, state, tr = eg_step(params, opt, state, images, labels, cfg)
        first = tr.terms.objective if first is None else first
        first_rc = tr.terms.rc if first_rc is None else first_rc
        rc_m.append((tr.rc_after_e, tr.rc_after_m))
        for info in tr.blocks:
            assert info.rc_after <= info.rc_before * (1 + 1e-12)
    last = tr.terms.objective
    if not cg_blocks:
        assert last < 0.5 * first, (first, last)  # the G-step alone mostly lowers CE (RC may rise)
    else:
        # the exact block steps pull RC down hard, and CE (G-step) more slowly
        assert last < 0.9 * first and tr.terms.rc < 0.5 * first_rc, (first, last, first_rc, tr.terms.rc)
    assert all(e is not None and m is not None for e, m in rc_m)
    assert tr.stats is not None and tr.seconds > 0


def test_backprop_step_lowers_cross_entropy_and_ignores_rendering():
    params, images, labels = _batch(4, n=24)
    opt = SGD(lr=0.5, momentum=0.9)
    state = opt.init(trainable(params))
    ces = []
    for _ in range(20):
        params, state, tr = backprop_step(params, opt, state, images, labels)
        ces.append(tr.terms.ce)
        assert tr.terms.rc is None and tr.rc_after_e is None
    assert ces[-1] < 0.7 * ces[0]
