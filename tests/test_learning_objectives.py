"""Gradients of every term of the EG objective against central finite differences (SPEC §3).

Float64, on a small network with padding, pooling and biases, with inputs kept away from every
kink (a unit's pre-activation near 0, a tie inside a pooling window), so the latents do not move
under the finite-difference steps and the objective is differentiable there.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from drmm_ref import primitives as P
from drmm_ref.drmm import Layer, Network, bottom_up, init_params
from drmm_ref.learning import (LossWeights, cross_entropy, e_step, entropy_term, nonnegativity,
                               objective_and_gradients, reconstruction, trainable, with_trainable)
from drmm_ref.learning._tree import trainable_names

from ._helpers import assert_fd_close, central_fd_gradient, host

NET = Network((1, 8, 8), (Layer(2, 3, 1, 2), Layer(3, 3, 0, 1)), n_classes=3, name="fd-net")
NET_CONST = Network((1, 8, 8), (Layer(2, 3, 1, 2), Layer(3, 3, 1, 1)), n_classes=3, constant_templates=True,
                    name="fd-net-const")
MARGIN = 1e-4


def _kink_margin(params, images) -> float:
    """Smallest distance of any pre-activation from 0 and of any window's top value from the runner-up."""
    fw = bottom_up(params, images)
    worst = math.inf
    for l, u in enumerate(fw.preactivations, start=1):
        u = host(u)
        worst = min(worst, float(np.min(np.abs(u))))
        p = params.net.layers[l - 1].pool
        if p > 1:
            n, c, h, w = u.shape
            win = np.maximum(u, 0).reshape(n, c, h // p, p, w // p, p).transpose(0, 1, 2, 4, 3, 5).reshape(
                n, c, h // p, w // p, p * p)
            top2 = np.sort(win, axis=-1)[..., -2:]
            active = top2[..., 1] > 0
            if np.any(active):
                worst = min(worst, float(np.min((top2[..., 1] - top2[..., 0])[active])))
    return worst


def _problem(seed: int, net=NET):
    """Parameters with biases, images and labels far from kinks (reseeded until they are)."""
    for s in range(seed, seed + 200):
        rng = np.random.default_rng(s)
        params = init_params(net, s, bias_scale=0.1, class_bias_scale=0.3, weight_gain=1.5)
        images = rng.standard_normal((4,) + net.image_shape)
        if _kink_margin(params, images) > MARGIN:
            return params, images, rng.integers(0, net.n_classes, size=4)
    raise RuntimeError("no kink-free problem found")


def _objective(params, images, labels, weights):
    est = e_step(params, images, labels, render_=weights.generative)
    terms, grads = objective_and_gradients(params, est, labels, weights)
    return terms.objective, grads


TERM_WEIGHTS = {
    "CE": LossWeights(ce=1.0, rc=0.0, nn=0.0, h=0.0),
    "RC": LossWeights(ce=0.0, rc=1.0, nn=0.0, h=0.0),
    "NN": LossWeights(ce=0.0, rc=0.0, nn=1.0, h=0.0),
    "H-entropy": LossWeights(ce=0.0, rc=0.0, nn=0.0, h=1.0, h_sign="entropy"),
    "H-kl_to_prior": LossWeights(ce=0.0, rc=0.0, nn=0.0, h=1.0, h_sign="kl_to_prior"),
    "BAL": LossWeights(ce=0.0, rc=0.0, nn=0.0, h=0.0, balance=1.0),
    "all": LossWeights(ce=1.0, rc=2.0, nn=0.5, h=0.3, balance=0.7),
}


@pytest.mark.parametrize("net", [NET, NET_CONST], ids=["templates", "constant-templates"])
@pytest.mark.parametrize("term", sorted(TERM_WEIGHTS))
def test_term_gradient_matches_finite_differences(term, net):
    weights = TERM_WEIGHTS[term]
    params, images, labels = _problem(3, net)
    images_x = params.xp.asarray(images)
    labels_x = params.xp.asarray(labels)
    value, grads = _objective(params, images_x, labels_x, weights)
    assert math.isfinite(value)
    base = trainable(params)
    for name in trainable_names(net.L):
        def f(theta, name=name):
            p = with_trainable(params, {name: params.xp.asarray(theta)})
            return _objective(p, images_x, labels_x, weights)[0]

        numeric = central_fd_gradient(f, host(base[name]))
        analytic = grads.get(name)
        analytic = np.zeros_like(numeric) if analytic is None else host(analytic)
        assert analytic.shape == numeric.shape
        assert_fd_close(analytic, numeric, err_msg=f"term {term}, parameter {name}")
    # the check is not vacuous: the term moves at least one parameter
    assert max(float(np.max(np.abs(host(g)))) for g in grads.values()) > 1e-6


@pytest.mark.parametrize("net", [NET, NET_CONST], ids=["templates", "constant-templates"])
def test_semi_supervised_objective_gradient_matches_finite_differences(net):
    """Labelled and unlabelled rows in one batch (SPEC §5): CE on the labelled rows, RC / NN / H / BAL on all,
    unlabelled rows rendered from their predicted class (kept away from score ties, where the class would move)."""
    from drmm_ref.learning import UNLABELLED

    weights = LossWeights(ce=1.0, rc=1.0, nn=0.5, h=0.2, balance=0.5)
    for seed in range(3, 60):
        params, images, labels = _problem(seed, net)
        scores = np.sort(host(bottom_up(params, params.xp.asarray(images)).scores), axis=1)
        if np.min(scores[:, -1] - scores[:, -2]) > 1e-3:
            break
    labels = np.where(np.arange(labels.size) % 2 == 1, UNLABELLED, labels)
    xp = params.xp
    value, grads = _objective(params, xp.asarray(images), xp.asarray(labels), weights)
    assert math.isfinite(value)
    base = trainable(params)
    for name in trainable_names(net.L):
        def f(theta, name=name):
            p = with_trainable(params, {name: xp.asarray(theta)})
            return _objective(p, xp.asarray(images), xp.asarray(labels), weights)[0]

        numeric = central_fd_gradient(f, host(base[name]))
        analytic = grads.get(name)
        analytic = np.zeros_like(numeric) if analytic is None else host(analytic)
        assert_fd_close(analytic, numeric, err_msg=f"semi-supervised objective, parameter {name}")


def test_rc_and_nn_do_not_touch_biases():
    """At fixed latents the rendering does not depend on the biases: RC and NN give them no gradient."""
    params, images, labels = _problem(5)
    _, grads = _objective(params, params.xp.asarray(images), params.xp.asarray(labels), LossWeights(0, 1, 1, 0))
    assert not any(k.startswith("biases") or k == "class_biases" for k in grads)


def test_term_values_by_their_definitions(xp):
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, size=5)
    ce, g = cross_entropy(xp.asarray(scores), xp.asarray(labels))
    logq = scores - np.log(np.exp(scores).sum(1, keepdims=True))
    assert float(ce) == pytest.approx(-np.mean(logq[np.arange(5), labels]), rel=1e-12)
    assert host(g).shape == (5, 4)
    h, _ = entropy_term(xp.asarray(scores), "entropy")
    kl, _ = entropy_term(xp.asarray(scores), "kl_to_prior")
    ent = -np.mean(np.sum(np.exp(logq) * logq, axis=1))
    assert float(h) == pytest.approx(ent, rel=1e-12)
    assert float(kl) == pytest.approx(math.log(4) - ent, rel=1e-12)
    imgs, rec = rng.standard_normal((3, 1, 4, 4)), rng.standard_normal((3, 1, 4, 4))
    rc, _ = reconstruction(xp.asarray(imgs), xp.asarray(rec))
    assert float(rc) == pytest.approx(np.sum((imgs - rec) ** 2) / (2 * 3 * 16), rel=1e-12)
    zs = tuple(xp.asarray(rng.standard_normal(s)) for s in [(3, 1, 4, 4), (3, 2, 2, 2), (3, 3, 1, 1)])
    nn, gz = nonnegativity(zs)
    expect = sum(np.mean(np.minimum(host(z), 0) ** 2) for z in zs[1:])
    assert float(nn) == pytest.approx(expect, rel=1e-12)
    assert set(gz) == {1, 2}


def test_entropy_signs_are_opposite():
    """Minimising 'entropy' sharpens q, minimising 'kl_to_prior' flattens it: opposite gradients."""
    scores = np.array([[2.0, 0.0, -1.0]])
    _, g_ent = entropy_term(scores, "entropy")
    _, g_kl = entropy_term(scores, "kl_to_prior")
    np.testing.assert_allclose(g_ent, -g_kl)
    q0 = P.softmax(scores, axis=1)
    sharper = P.softmax(scores - 0.1 * g_ent, axis=1)  # one descent step on entropy
    assert sharper[0, 0] > q0[0, 0]
    with pytest.raises(ValueError, match="sign"):
        entropy_term(scores, "kl")


def test_loss_weights_validate():
    with pytest.raises(ValueError, match="h_sign"):
        LossWeights(h_sign="negentropy")
    with pytest.raises(ValueError, match=">= 0"):
        LossWeights(rc=-1.0)


NET_DEEP = Network((1, 12, 12), (Layer(3, 3, 1, 2), Layer(2, 3, 1, 1), Layer(4, 1, 0, 3)), n_classes=4, name="fd-deep")


@pytest.mark.parametrize("net", [NET, NET_CONST, NET_DEEP], ids=["templates", "constant-templates", "three-layers"])
def test_render_vjp_reuses_the_unpooled_maps_exactly(net, xp):
    """render_vjp with the rendering's kept unpooled maps equals render_vjp that unpools again."""
    import dataclasses

    from drmm_ref.drmm import render, render_vjp

    params = init_params(net, 7, bias_scale=0.1, xp=xp)
    rng = np.random.default_rng(7)
    images = xp.asarray(rng.standard_normal((5,) + net.image_shape))
    labels = xp.asarray(rng.integers(0, net.n_classes, size=5))
    ref = render(params, labels, bottom_up(params, images).latents)
    bare = dataclasses.replace(ref, unpooled=None)
    g0 = xp.asarray(rng.standard_normal(tuple(images.shape)))
    gz = {l: xp.asarray(rng.standard_normal(tuple(ref.renderings[l].shape))) for l in range(1, net.L + 1)}
    want, got = render_vjp(params, bare, g0, gz), render_vjp(params, ref, g0, gz)
    for a, b in zip(want.filters + (want.class_templates,), got.filters + (got.class_templates,)):
        np.testing.assert_array_equal(host(a), host(b))


@pytest.mark.parametrize("net", [NET, NET_CONST, NET_DEEP], ids=["templates", "constant-templates", "three-layers"])
def test_fused_downward_pass_equals_backward_then_render(net, xp):
    """SPEC §2 (two facts about cost): the CE cotangent and the templates go down together, exactly."""
    from drmm_ref.drmm import backward, backward_and_render, render

    params = init_params(net, 3, bias_scale=0.1, xp=xp)
    rng = np.random.default_rng(3)
    images = xp.asarray(rng.standard_normal((6,) + net.image_shape))
    classes = xp.asarray(rng.integers(0, net.n_classes, size=6))
    sbar = xp.asarray(rng.standard_normal((6, net.n_classes)))
    fw = bottom_up(params, images)
    grads, rendering = backward_and_render(params, fw, sbar, classes)
    want_g = backward(params, fw, sbar, input_gradient=False)
    want_r = render(params, classes, fw.latents)
    assert grads.input is None and want_g.input is None
    for a, b in zip(rendering.renderings, want_r.renderings):
        np.testing.assert_allclose(host(a), host(b), rtol=0, atol=1e-13)
    pairs = list(zip(grads.filters + grads.biases, want_g.filters + want_g.biases))
    pairs += [(grads.class_templates, want_g.class_templates), (grads.class_biases, want_g.class_biases)]
    for a, b in pairs:
        np.testing.assert_allclose(host(a), host(b), rtol=0, atol=1e-12)


@pytest.mark.parametrize("weights", [LossWeights(), LossWeights(ce=1, rc=0.5, nn=0.3, h=0.2),
                                     LossWeights(ce=0, rc=1, nn=0, h=0), LossWeights(ce=1, rc=0, nn=0, h=0),
                                     LossWeights(ce=0.5, rc=1, nn=1, h=0.3, h_sign="kl_to_prior", balance=0.2)],
                         ids=["default", "all", "rc-only", "ce-only", "kl-balance"])
def test_fused_objective_equals_the_unfused_form(weights, xp):
    """The EG step's fused gradient equals backward + render_vjp of the E-step (unlabelled rows included)."""
    from drmm_ref.learning import fused_objective_and_gradients
    from drmm_ref.learning.estep import rendered_classes

    params = init_params(NET_DEEP, 5, bias_scale=0.1, xp=xp)
    rng = np.random.default_rng(5)
    images = xp.asarray(rng.standard_normal((7,) + NET_DEEP.image_shape))
    labels = xp.asarray(np.array([0, 3, -1, 2, -1, 1, 0]))
    est = e_step(params, images, labels, render_=True)
    want_t, want = objective_and_gradients(params, est, labels, weights)
    fw = bottom_up(params, images)
    got_t, got, _ = fused_objective_and_gradients(params, fw, rendered_classes(fw, labels), labels, weights)
    assert got_t.to_dict() == pytest.approx(want_t.to_dict(), rel=1e-12, abs=1e-14)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(host(got[name]), host(want[name]), rtol=1e-11, atol=1e-13, err_msg=name)


def test_e_step_rejects_bad_labels():
    params, images, _ = _problem(1)
    with pytest.raises(ValueError, match="out of range"):
        e_step(params, params.xp.asarray(images), params.xp.asarray(np.array([0, 1, 2, 3])))
