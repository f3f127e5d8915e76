"""Non-negativity as the NIPS paper states it: a ReLU in the top-down reconstruction (SPEC §5, ``relu_topdown``).

The rendering ``z^(l-1) = relu(Lambda^(l) z^(l))`` for l = L..2 (the image level not clipped) is
checked against a loop over the public one-layer operator, and the objective's gradient (RC and
NN on that rendering, through its ReLU masks) against central finite differences, with inputs kept
away from every kink of the bottom-up pass and of the rendering's ReLUs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from drmm_ref.drmm import Layer, Network, backward, backward_and_render, bottom_up, init_params, render, render_layer
from drmm_ref.learning import (EGConfig, LossWeights, SGD, e_step, eg_step, fused_objective_and_gradients,
                               objective_and_gradients, trainable, with_trainable)
from drmm_ref.learning._tree import trainable_names
from drmm_ref.learning.block_step import block_step
from drmm_ref.learning.estep import rendered_classes

from ._helpers import assert_fd_close, central_fd_gradient, host
from .test_learning_objectives import MARGIN, _kink_margin

NET = Network((1, 12, 12), (Layer(3, 3, 1, 2), Layer(2, 3, 1, 1), Layer(4, 1, 0, 3)), n_classes=4, name="relu-net")


def _reference(params, classes, latents, pre=None):
    """z^(L) = mu_c; z^(l-1) = relu(render_layer(z^(l))) for l >= 2; the image level unclipped.

    ``pre`` (a list) collects the ReLUs' inputs.
    """
    net = params.net
    z = np.asarray(host(params.class_templates))[np.asarray(host(classes))]
    if net.constant_templates:
        z = np.broadcast_to(z, (z.shape[0],) + net.shapes[net.L]).copy()
    out = [z]
    for l in range(net.L, 0, -1):
        ly = net.layers[l - 1]
        z = host(render_layer(params.xp.asarray(z), latents.positions[l - 1], latents.switches[l - 1],
                              params.filters[l - 1], ly.padding, ly.pool))
        if l > 1:
            if pre is not None:
                pre.append(z)
            z = np.maximum(z, 0)
        out.append(z)
    return out[::-1]


def _problem(seed, n=5):
    """Parameters and images with no kink within MARGIN in the bottom-up pass or in the rendering's ReLUs."""
    for s in range(seed, seed + 300):
        rng = np.random.default_rng(s)
        params = init_params(NET, s, bias_scale=0.1, class_bias_scale=0.3, weight_gain=1.5)
        images = rng.standard_normal((n,) + NET.image_shape)
        labels = rng.integers(0, NET.n_classes, size=n)
        if _kink_margin(params, images) <= MARGIN:
            continue
        fw = bottom_up(params, images)
        pre = []
        _reference(params, labels, fw.latents, pre)
        # the ReLUs' inputs away from 0, except exact zeros no active stamp reaches (they stay 0 under any
        # perturbation of the parameters, where relu'(0) = 0 is the derivative from both sides)
        if all(np.min(np.abs(r[r != 0]), initial=np.inf) > MARGIN for r in pre):
            return params, images, labels
    raise RuntimeError("no kink-free problem found")


def test_relu_topdown_rendering_matches_a_loop_over_the_layer_operator(xp):
    p, x, y = _problem(4, n=6)
    params = p.to(xp) if hasattr(p, "to") else p
    images, classes = xp.asarray(x), xp.asarray(y)
    lat = bottom_up(params, images).latents
    assert np.any(host(render(params, classes, lat).image) != 0)  # not a vacuous (all-off) rendering
    got = render(params, classes, lat, relu_topdown=True)
    want = _reference(params, classes, lat)
    for l, (a, b) in enumerate(zip(got.renderings, want)):
        np.testing.assert_allclose(host(a), b, rtol=1e-12, atol=1e-12, err_msg=f"level {l}")
    assert all(np.min(host(got.renderings[l])) >= 0 for l in range(1, NET.L))  # levels 1..L-1 non-negative
    assert np.min(host(got.image)) < 0  # the image level is not clipped
    plain = render(params, classes, lat)
    assert not np.allclose(host(plain.image), host(got.image))  # the variant changes the rendering here


@pytest.mark.parametrize("weights", [LossWeights(ce=0, rc=1, nn=0, h=0), LossWeights(ce=1, rc=1, nn=0.5, h=0.2)],
                         ids=["RC", "CE+RC+NN+H"])
def test_relu_topdown_gradient_matches_finite_differences(weights):
    params, images, labels = _problem(11)

    def objective(p):
        est = e_step(p, images, labels, relu_topdown=True)
        return objective_and_gradients(p, est, labels, weights)

    terms, grads = objective(params)
    assert math.isfinite(terms.objective)
    base = trainable(params)
    for name in trainable_names(NET.L):
        def f(theta, name=name):
            return objective(with_trainable(params, {name: theta}))[0].objective

        numeric = central_fd_gradient(f, host(base[name]))
        analytic = grads.get(name)
        analytic = np.zeros_like(numeric) if analytic is None else host(analytic)
        assert_fd_close(analytic, numeric, err_msg=f"relu_topdown, parameter {name}")


def test_fused_relu_topdown_equals_the_unfused_form_and_the_masks_matter():
    params, images, labels = _problem(3, n=7)
    weights = LossWeights(ce=1, rc=1, nn=0.5, h=0.2)
    fw = bottom_up(params, images)
    got_t, got, rendering = fused_objective_and_gradients(params, fw, rendered_classes(fw, labels), labels, weights,
                                                          relu_topdown=True)
    want_t, want = objective_and_gradients(params, e_step(params, images, labels, relu_topdown=True), labels, weights)
    assert rendering.relu_topdown
    assert got_t.to_dict() == pytest.approx(want_t.to_dict(), rel=1e-12)
    for name in want:
        np.testing.assert_allclose(host(got[name]), host(want[name]), rtol=1e-11, atol=1e-14, err_msg=name)
    _, plain = objective_and_gradients(params, e_step(params, images, labels), labels, weights)
    assert not np.allclose(host(plain["filters_1"]), host(want["filters_1"]))
    g, r = backward_and_render(params, fw, fw.scores * 0 + 1, labels, relu_topdown=True)  # the CE half is not clipped
    ref = backward(params, fw, fw.scores * 0 + 1, input_gradient=False)
    np.testing.assert_allclose(host(g.filters[1]), host(ref.filters[1]), rtol=1e-12, atol=1e-14)


def test_relu_topdown_steps_train_and_block_steps_keep_their_promise():
    params, images, labels = _problem(5, n=12)
    opt = SGD(lr=0.05)
    state = opt.init(trainable(params))
    cfg = EGConfig(LossWeights(ce=1, rc=1, nn=0, h=0), relu_topdown=True)
    first = None
    for _ in range(15):
        params, state, tr = eg_step(params, opt, state, images, labels, cfg)
        first = tr.terms.objective if first is None else first
    assert tr.terms.objective < first
    est = e_step(params, images, labels, relu_topdown=True)
    for block in ("filters_1", "filters_2", "class_templates"):
        _, info = block_step(params, images, est.rendering, block, k_cg=8)
        assert info.rc_final <= info.rc_before  # RC at the fixed latents and ReLU masks never rises
        assert info.rc_before == pytest.approx(float(objective_and_gradients(
            params, est, labels, LossWeights(ce=0, rc=1, nn=0, h=0), need_gradients=False)[0].rc), rel=1e-9)
