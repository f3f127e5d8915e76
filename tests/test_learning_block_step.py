"""The exact block step on RC at fixed latents (CGLS, SPEC §3).

Checked two ways: the block operator against ``render`` (forward) and against the adjoint identity;
the step's RC against the RC of every gradient step on the same block (the gradient taken from
``drmm.render_vjp``, RC evaluated by ``drmm.render`` -- neither goes through the CGLS code).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from drmm_ref.drmm import Layer, Network, init_params, render, render_vjp
from drmm_ref.learning import block_names, block_operator, block_step, e_step, reconstruction, trainable
from drmm_ref.learning._tree import gradients_tree, with_trainable
from drmm_ref.numerics import adjoint_relative_error

from ._helpers import host

NET = Network((1, 10, 10), (Layer(3, 3, 1, 2), Layer(4, 3, 0, 1), Layer(2, 2, 0, 1)), n_classes=3, name="cg-net")


def _setup(seed, xp=None, net=NET):
    params = init_params(net, seed, bias_scale=0.05, xp=xp if xp is not None else "numpy")
    rng = np.random.default_rng(seed)
    images = params.xp.asarray(rng.random((6,) + net.image_shape))
    labels = params.xp.asarray(rng.integers(0, net.n_classes, size=6))
    est = e_step(params, images, labels)
    return params, images, est


def _rc(params, images, est, block=None, theta=None):
    if block is not None:
        params = with_trainable(params, {block: theta})
    return float(reconstruction(images, render(params, est.classes, est.latents).image)[0])


@pytest.mark.parametrize("block", block_names(NET.L))
def test_block_operator_is_the_rendering_and_has_an_exact_adjoint(block, xp):
    params, images, est = _setup(1, xp)
    op = block_operator(params, est.rendering, block)
    theta = trainable(params)[block]
    assert np.allclose(host(op.apply(theta)), host(est.rendering.image), rtol=1e-12, atol=1e-12)
    rng = np.random.default_rng(2)
    t = xp.asarray(rng.standard_normal(op.shape))
    y = xp.asarray(rng.standard_normal(tuple(images.shape)))
    at, aty = op.apply(t), op.adjoint(y)
    err = adjoint_relative_error(np.reshape(host(at), (1, -1)), np.reshape(host(y), (1, -1)),
                                 np.reshape(host(t), (1, -1)), np.reshape(host(aty), (1, -1)))
    assert err < 1e-12


@pytest.mark.parametrize("block", block_names(NET.L))
def test_block_step_beats_every_gradient_step(block):
    """RC after one block step <= RC before, and <= RC of a gradient step of any size on that block."""
    params, images, est = _setup(4)
    before = _rc(params, images, est)
    theta, info = block_step(params, images, est.rendering, block, k_cg=3)
    after = _rc(params, images, est, block, theta)
    assert info.rc_before == pytest.approx(before, rel=1e-12)
    assert after == pytest.approx(info.rc_after, rel=1e-9)
    assert after <= before
    # gradient of RC on the block alone, by the model package's render VJP
    _, grad_image = reconstruction(images, est.rendering.image)
    g = gradients_tree(render_vjp(params, est.rendering, grad_image), NET.L)[block]
    old = trainable(params)[block]
    # RC(theta - a g) is a quadratic in a: its exact minimiser from three evaluations, plus a grid
    r0, r1, r2 = (_rc(params, images, est, block, old - a * g) for a in (0.0, 1.0, 2.0))
    curvature = (r2 - 2 * r1 + r0) / 2
    slope = r1 - r0 - curvature
    best = -slope / (2 * curvature)
    steps = [best] + list(np.logspace(-4, 4, 33))
    gradient_rcs = [_rc(params, images, est, block, old - a * g) for a in steps]
    assert after <= min(gradient_rcs) * (1 + 1e-10)
    # the first CGLS iterate is the exact line search
    assert info.rc_iterates[0] == pytest.approx(min(gradient_rcs), rel=1e-8)


@given(seed=st.integers(0, 10_000), k_cg=st.integers(1, 6))
def test_cgls_iterates_never_raise_rc(seed, k_cg):
    params, images, est = _setup(seed)
    block = block_names(NET.L)[seed % (NET.L + 1)]
    theta, info = block_step(params, images, est.rendering, block, k_cg=k_cg)
    seq = (info.rc_before,) + info.rc_iterates
    assert all(b <= a * (1 + 1e-12) + 1e-15 for a, b in zip(seq, seq[1:]))
    # damped mini-batch updates stay below the old RC (RC_B is a convex quadratic)
    old = trainable(params)[block]
    for eta in (0.25, 0.5, 1.0):
        assert _rc(params, images, est, block, old + eta * (theta - old)) <= info.rc_before * (1 + 1e-12)


def test_block_step_float32_accumulates_in_float64():
    params, images, est = _setup(7)
    p32 = params.to("numpy", dtype="float32")
    x32 = p32.xp.astype(images, p32.xp.float32)
    est32 = e_step(p32, x32, est.classes)
    theta, info = block_step(p32, x32, est32.rendering, "filters_2", k_cg=5)
    assert theta.dtype == p32.dtype
    assert _rc(p32, x32, est32, "filters_2", theta) <= info.rc_before * (1 + 1e-5)


def test_block_step_damping_and_argument_checks():
    params, images, est = _setup(2)
    _, free = block_step(params, images, est.rendering, "class_templates", k_cg=4)
    _, damped = block_step(params, images, est.rendering, "class_templates", k_cg=4, damping=10.0)
    assert damped.rc_after >= free.rc_after - 1e-12  # the proximal term holds the step back
    with pytest.raises(ValueError, match="block"):
        block_step(params, images, est.rendering, "biases_1")
    with pytest.raises(ValueError, match="k_cg"):
        block_step(params, images, est.rendering, "filters_1", k_cg=0)
