"""Rendering, sampling, log joint, prior-expected renderings and the backward passes (SPEC §2, §3)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from drmm_ref import drmm as D
from drmm_ref.numerics import identity_tolerance

from ._helpers import assert_fd_close, assert_identity_close, central_fd_gradient, host


@pytest.fixture(scope="module")
def small():
    """A 3-layer net with pooling, padding and several channels (small enough for exact checks)."""
    net = D.Network((2, 8, 8), (D.Layer(3, 3, 1, 2), D.Layer(2, 2, 0, 1), D.Layer(3, 2, 1, 2)), 3, name="test3")
    return D.init_params(net, 1, bias_scale=0.2, class_bias_scale=0.2, switch_prior=(0.3, 0.6, 0.8))


def _rng_like(params, seed, n=5):
    s = D.sample(params, n, seed)
    return s.classes, s.latents


def test_render_linear_in_class_template(small):
    classes, lat = _rng_like(small, 0)
    rng = np.random.default_rng(1)
    mu1, mu2 = (rng.standard_normal(small.class_templates.shape) for _ in range(2))
    r1 = D.render(small.replace(class_templates=mu1), classes, lat)
    r2 = D.render(small.replace(class_templates=mu2), classes, lat)
    r12 = D.render(small.replace(class_templates=2.0 * mu1 - 0.5 * mu2), classes, lat)
    for l in range(small.net.L + 1):
        assert_identity_close(r12.renderings[l], 2.0 * r1.renderings[l] - 0.5 * r2.renderings[l], err_msg=f"z^({l})")


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_render_linear_in_each_layers_filters(small, layer):
    classes, lat = _rng_like(small, 2)
    rng = np.random.default_rng(layer)
    w1, w2 = (rng.standard_normal(small.filters[layer - 1].shape) for _ in range(2))

    def with_w(w):
        filters = list(small.filters)
        filters[layer - 1] = w
        return D.render(small.replace(filters=tuple(filters)), classes, lat)

    r1, r2, r12 = with_w(w1), with_w(w2), with_w(-1.5 * w1 + 3.0 * w2)
    for l in range(layer):  # levels below the layer are linear in W^(layer); levels above do not depend on it
        assert_identity_close(r12.renderings[l], -1.5 * r1.renderings[l] + 3.0 * r2.renderings[l], err_msg=f"z^({l})")
    for l in range(layer, small.net.L + 1):
        assert_identity_close(r12.renderings[l], r1.renderings[l])


def test_render_switched_off_layer_is_blank(small):
    classes, lat = _rng_like(small, 3)
    off = D.Latents(lat.positions, (lat.switches[0], np.zeros_like(lat.switches[1]), lat.switches[2]))
    r = D.render(small, classes, off)
    assert np.all(host(r.renderings[1]) == 0.0) and np.all(host(r.image) == 0.0)
    assert np.any(host(r.renderings[2]) != 0.0)


def test_sample_respects_priors():
    """Frequencies within 5 standard errors (two-sided false alarm 5.7e-7 per comparison, 10 comparisons:
    < 6e-6 for the whole test; the seed is fixed, so the test is deterministic)."""
    net = D.preset("tiny")
    params = D.init_params(net, 0, class_prior=(0.3, 0.7), switch_prior=(0.2, 0.7), noise_variance=0.04)
    n = 20_000
    s = D.sample(params, n, seed=2024)
    z = 5.0

    def within(freq, p, count):
        assert abs(freq - p) <= z * math.sqrt(p * (1 - p) / count), (freq, p, count)

    classes = host(s.classes)
    for c, pc in enumerate((0.3, 0.7)):
        within(np.mean(classes == c), pc, n)
    for l, on in enumerate((0.2, 0.7)):
        a = host(s.latents.switches[l])
        within(a.mean(), on, a.size)
    t = host(s.latents.positions[0])
    for pos in range(4):
        within(np.mean(t == pos), 0.25, t.size)
    assert np.all(host(s.latents.positions[1]) == 0)  # pool 1: a single position
    resid = host(s.images - s.rendering.image)
    dof = resid.size
    assert abs(np.mean(resid ** 2) / 0.04 - 1.0) <= z * math.sqrt(2.0 / dof)


def test_sample_without_noise_is_the_rendering(small):
    s = D.sample(small, 4, seed=9, noise=False)
    assert_identity_close(s.images, D.render(small, s.classes, s.latents).image)
    s2 = D.sample(small, 4, seed=9, classes=2)
    assert np.all(host(s2.classes) == 2)


def test_log_joint_against_direct_formula(small):
    s = D.sample(small, 6, seed=4)
    lj = host(D.log_joint(small, s.images, s.classes, s.latents))
    s2 = small.noise_variance
    mu = host(D.render(small, s.classes, s.latents).image)
    expected = (-np.sum((host(s.images) - mu) ** 2, axis=(1, 2, 3)) / (2 * s2)
                - 0.5 * small.net.n_pixels * np.log(2 * np.pi * s2) + np.log(host(small.class_prior))[host(s.classes)])
    for l, (ly, on) in enumerate(zip(small.net.layers, host(small.switch_prior))):
        a = host(s.latents.switches[l]).reshape(6, -1)
        expected += a.sum(1) * np.log(on) + (~a).sum(1) * np.log(1 - on) - a.shape[1] * np.log(ly.pool ** 2)
    np.testing.assert_allclose(lj, expected, rtol=1e-12)


def test_expected_rendering_is_the_prior_mean(small):
    """Monte Carlo mean of z^(0) over the latents of layers 1..l, z^(l) fixed, within 6 standard errors."""
    n = 20_000
    s = D.sample(small, n, seed=5, classes=1, noise=False)
    level = 2
    z = host(s.rendering.renderings[level])[:1]
    expected = host(D.expected_rendering(small, z, level))[0]
    # Resample only layers 1..level with z^(level) held fixed.
    lat = D.draw_latents(small, n, seed=6)
    zz = np.repeat(z, n, axis=0)
    for m in range(level, 0, -1):
        ly = small.net.layers[m - 1]
        zz = host(D.render_layer(zz, lat.positions[m - 1], lat.switches[m - 1], small.filters[m - 1],
                                 ly.padding, ly.pool))
    mean, se = zz.mean(0), zz.std(0) / math.sqrt(n)
    assert np.all(np.abs(mean - expected) <= 6 * se + 1e-12)
    img = host(s.images[:1])
    assert_identity_close(D.expected_rendering(small, img, 0), img)


def test_render_vjp_is_exact_for_every_block(small):
    """f = <z^(0), G0> + <z^(1), G1> is affine in each block: f(B + dB) - f(B) = <Bbar, dB> exactly."""
    classes, lat = _rng_like(small, 7)
    rng = np.random.default_rng(8)
    base = D.render(small, classes, lat)
    g0 = rng.standard_normal(base.renderings[0].shape)
    g1 = rng.standard_normal(base.renderings[1].shape)
    grads = D.render_vjp(small, base, g0, {1: g1})

    def f(p):
        r = D.render(p, classes, lat)
        return float(np.sum(host(r.renderings[0]) * g0) + np.sum(host(r.renderings[1]) * g1))

    tol = identity_tolerance("float64")
    for l in range(1, small.net.L + 1):
        dw = rng.standard_normal(small.filters[l - 1].shape)
        filters = list(small.filters)
        filters[l - 1] = filters[l - 1] + dw
        lhs = f(small.replace(filters=tuple(filters))) - f(small)
        rhs = float(np.sum(host(grads.filters[l - 1]) * dw))
        assert abs(lhs - rhs) <= tol * 100 * max(1.0, abs(lhs)), (l, lhs, rhs)
    dmu = rng.standard_normal(small.class_templates.shape)
    lhs = f(small.replace(class_templates=small.class_templates + dmu)) - f(small)
    assert abs(lhs - float(np.sum(host(grads.class_templates) * dmu))) <= tol * 100 * max(1.0, abs(lhs))


def _far_from_kinks(params, images, step):
    fw = D.bottom_up(params, images)
    if min(float(np.min(np.abs(host(u)))) for u in fw.preactivations) <= 1e4 * step:
        return False
    for ly, u in zip(params.net.layers, fw.preactivations):
        if ly.pool > 1:
            r = np.maximum(host(u), 0.0)
            n, c, h, w = r.shape
            p = ly.pool
            win = r.reshape(n, c, h // p, p, w // p, p).transpose(0, 1, 2, 4, 3, 5)
            win = np.sort(win.reshape(n, c, h // p, w // p, -1))
            live = win[..., -1] > 0
            if live.any() and np.min((win[..., -1] - win[..., -2])[live]) <= 1e4 * step:
                return False
    return True


@pytest.mark.parametrize("constant", [False, True])
def test_backward_parameter_gradients_match_finite_differences(constant):
    net = D.Network((1, 6, 6), (D.Layer(2, 3, 1, 2), D.Layer(2, 2, 0, 1)), 2, constant_templates=constant)
    step = 1e-6
    for seed in range(50):  # first seed whose units and windows are all far from kinks (deterministic)
        params = D.init_params(net, seed, bias_scale=0.5, class_bias_scale=0.5)
        images = np.random.default_rng(seed).standard_normal((2,) + net.image_shape)
        if _far_from_kinks(params, images, step):
            break
    else:  # pragma: no cover
        pytest.fail("no kink-free example found")
    sbar = np.random.default_rng(99).standard_normal((2, net.n_classes))
    grads = D.backward(params, D.bottom_up(params, images), sbar)

    def objective(**change):
        return lambda v: float(np.sum(host(D.bottom_up(params.replace(**{k: f(v) for k, f in change.items()}),
                                                       images).scores) * sbar))

    for l in range(net.L):
        def set_w(v, l=l):
            return tuple(v if i == l else w for i, w in enumerate(params.filters))

        def set_b(v, l=l):
            return tuple(v if i == l else b for i, b in enumerate(params.biases))

        assert_fd_close(grads.filters[l], central_fd_gradient(objective(filters=set_w), params.filters[l], step))
        assert_fd_close(grads.biases[l], central_fd_gradient(objective(biases=set_b), params.biases[l], step))
    assert_fd_close(grads.class_templates,
                    central_fd_gradient(objective(class_templates=lambda v: v), params.class_templates, step))
    assert_fd_close(grads.class_biases,
                    central_fd_gradient(objective(class_biases=lambda v: v), params.class_biases, step))
    assert_fd_close(grads.input, central_fd_gradient(
        lambda v: float(np.sum(host(D.bottom_up(params, v).scores) * sbar)), images, step))
