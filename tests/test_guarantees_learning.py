"""Learning-layer guarantees (docs/guarantees.md, docs/learning.md): the CGLS block step never raises RC,
whatever k_CG; the balance term is finite when a class's mean probability underflows; optimiser settings
and labels are checked, never rounded."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from drmm_ref.drmm import Layer, Network, init_params, preset, render
from drmm_ref.learning import (SGD, Adam, backprop_step, balance_term, block_names, block_step, cross_entropy,
                               e_step, eg_step, entropy_term, reconstruction, trainable)
from drmm_ref.learning._checks import backend_problem, check_labels
from drmm_ref.learning._tree import with_trainable

from ._helpers import host

TINY = preset("tiny")


# ----------------------------------------------------------------------------------- CGLS
def _problem(net, seed, n=8, dtype="float64", data_seed=2):
    params = init_params(net, seed, dtype=dtype)
    rng = np.random.default_rng(data_seed)
    images = rng.standard_normal((n,) + net.image_shape).astype(dtype)
    labels = rng.integers(0, net.n_classes, n)
    est = e_step(params, images, labels)
    return params, images, est, render(params, est.classes, est.latents)


def _true_rc(params, images, est, block, theta):
    """RC recomputed by ``render`` (in the working dtype), summed in float64."""
    q = with_trainable(params, {block: theta})
    image = render(q, est.classes, est.latents).image
    return float(reconstruction(np.asarray(images, np.float64), np.asarray(image, np.float64))[0])


@pytest.mark.parametrize("seed,k_cg,damping", [(2, 10, 0.3), (37, 30, 0.0), (2, 200, 0.0), (37, 200, 1.0)])
def test_cgls_after_convergence_does_not_blow_up_regression(seed, k_cg, damping):
    """Regression: tiny net, init_params(seed=2), 8 standard-normal images and labels from default_rng(2),
    block_step(class_templates, k_cg=10, damping=0.3): RC went 0.509 -> 5.4e21 -> 2.5e82 once k_cg
    exceeded the block's rank (the recurrence ran on rounding noise)."""
    params, images, est, rend = _problem(TINY, seed)
    theta, info = block_step(params, images, rend, "class_templates", k_cg=k_cg, damping=damping)
    after = _true_rc(params, images, est, "class_templates", theta)
    assert math.isfinite(after) and after <= info.rc_before
    assert info.rc_final == after
    assert info.iterations < k_cg and info.stopped in ("converged", "no_descent")
    its = (info.rc_before,) + info.rc_iterates
    assert all(b <= a for a, b in zip(its, its[1:]))


def _small_net(draw):
    c0 = draw(st.integers(1, 2))
    side = draw(st.sampled_from([6, 8]))
    k1 = draw(st.integers(2, 3))
    conv1 = side - k1 + 1
    pool1 = draw(st.sampled_from([p for p in (1, 2) if conv1 % p == 0]))
    h1 = conv1 // pool1
    layers = [Layer(draw(st.integers(1, 3)), k1, 0, pool1)]
    if draw(st.booleans()) and h1 >= 2:
        layers.append(Layer(draw(st.integers(1, 2)), draw(st.integers(1, min(2, h1))), 0, 1))
    return Network((c0, side, side), tuple(layers), n_classes=draw(st.integers(2, 3)), name="prop")


@settings(max_examples=30, deadline=None)
@given(st.data(), st.integers(0, 2**16), st.sampled_from(["float64", "float32"]), st.sampled_from([0.0, 0.3, 3.0]))
def test_every_cgls_iterate_has_rc_no_higher_than_the_one_before(data, seed, dtype, damping):
    """The promise of docs/learning.md, on random small nets with k_CG far above every block's rank.

    Each prefix of the iteration is run on its own (``k_cg = 1, 2, ...``, CGLS is deterministic), and
    the RC of its result is recomputed by ``render`` (not by the CG recurrence): it never rises from
    one iterate to the next, and never rises above the RC before the step.
    """
    net = _small_net(data.draw)
    block = data.draw(st.sampled_from(block_names(net.L)))
    params, images, est, rend = _problem(net, seed, n=4, dtype=dtype, data_seed=seed)
    theta, info = block_step(params, images, rend, block, k_cg=60, damping=damping)
    # render() and the block operator round in the working dtype in different orders
    slack = 1e-12 if dtype == "float64" else 1e-6
    previous = info.rc_before
    assert _true_rc(params, images, est, block, theta) <= info.rc_before * (1 + slack)
    for k in range(1, min(info.iterations, 8) + 1):
        theta_k, info_k = block_step(params, images, rend, block, k_cg=k, damping=damping)
        rc_k = _true_rc(params, images, est, block, theta_k)
        assert math.isfinite(rc_k) and rc_k <= info.rc_before * (1 + slack)
        assert info_k.rc_final <= info.rc_before  # recomputed by the step itself: exact
        assert rc_k <= previous * (1 + slack), (k, rc_k, previous)
        previous = rc_k
    its = (info.rc_before,) + info.rc_iterates
    assert all(b <= a for a, b in zip(its, its[1:]))


def test_block_step_settings_are_checked():
    params, images, est, rend = _problem(TINY, 0)
    for kw, match in (({"k_cg": 0}, "k_cg"), ({"k_cg": 2.5}, "k_cg"), ({"damping": -1.0}, "damping"),
                      ({"damping": float("nan")}, "damping"), ({"tol": float("inf")}, "tol")):
        with pytest.raises((ValueError, TypeError), match=match):
            block_step(params, images, rend, "class_templates", **kw)


# ----------------------------------------------------------------------------------- terms
def test_balance_term_when_a_class_mean_probability_underflows_regression():
    """Regression: scores [[120, 0, 0]] * 2 in float32 gave NaN (0 * log 0); the value is log 3."""
    v, g = balance_term(np.array([[120, 0, 0]] * 2, np.float32))
    assert abs(float(v) - math.log(3)) < 1e-6 and np.all(np.isfinite(host(g)))
    v, g = balance_term(np.array([[1e4, 0.0]] * 3))
    assert float(v) == pytest.approx(math.log(2), abs=1e-12) and np.all(np.isfinite(host(g)))


@given(st.integers(0, 2**16), st.floats(1e-3, 1e4), st.sampled_from(["float32", "float64"]))
def test_balance_and_entropy_terms_are_finite_and_in_range(seed, scale, dtype):
    s = (np.random.default_rng(seed).standard_normal((5, 4)) * scale).astype(dtype)
    for v, g in (balance_term(s), entropy_term(s), entropy_term(s, "kl_to_prior")):
        assert np.isfinite(float(v)) and np.all(np.isfinite(host(g)))
    v = float(balance_term(s)[0])
    assert -1e-5 <= v <= math.log(4) + 1e-5


def test_balance_gradient_matches_finite_differences_in_the_log_domain_form():
    from ._helpers import assert_fd_close, central_fd_gradient

    s = np.random.default_rng(0).standard_normal((4, 3)) * 3
    _, g = balance_term(s)
    assert_fd_close(g, central_fd_gradient(lambda x: float(balance_term(x)[0]), s))


# ----------------------------------------------------------------------------------- optimisers
@pytest.mark.parametrize("make,match", [(lambda: Adam(lr=float("inf")), "lr"), (lambda: Adam(lr=float("nan")), "lr"),
                                        (lambda: Adam(lr=0.0), "lr"), (lambda: Adam(eps=-1.0), "eps"),
                                        (lambda: Adam(beta2=1.0), "beta2"), (lambda: SGD(lr=float("inf")), "lr"),
                                        (lambda: SGD(momentum=float("nan")), "momentum"),
                                        (lambda: Adam(lr="0.1"), "lr")])
def test_optimiser_settings_must_be_finite_regression(make, match):
    """Regression: Adam(lr=inf) and --lr inf were accepted."""
    with pytest.raises((ValueError, TypeError), match=match):
        make()


# ----------------------------------------------------------------------------------- labels
def test_float_labels_are_refused_not_truncated_regression():
    """Regression: eg_step / backprop_step with labels [0.7, 1.0] trained class 0 against an empty one-hot row."""
    params = init_params(TINY, 0)
    opt = Adam()
    state = opt.init(trainable(params))
    x = np.random.default_rng(0).standard_normal((2,) + TINY.image_shape)
    for step in (eg_step, backprop_step):
        with pytest.raises(TypeError, match="labels must be an integer array"):
            step(params, opt, state, x, np.array([0.7, 1.0]))
    with pytest.raises(TypeError, match="labels must be an integer array"):
        cross_entropy(np.zeros((2, 2)), np.array([0.5, 1.0]))


def test_empty_batches_are_refused_at_the_learning_boundary():
    params = init_params(TINY, 0)
    opt = Adam()
    state = opt.init(trainable(params))
    x, y = np.zeros((0,) + TINY.image_shape), np.zeros(0, np.int64)
    for call in (lambda: eg_step(params, opt, state, x, y), lambda: backprop_step(params, opt, state, x, y),
                 lambda: e_step(params, x, y)):
        with pytest.raises(ValueError, match="images must hold at least one image"):
            call()


def test_check_labels_names_the_problem():
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        check_labels(np.zeros(2, np.int64), 3, 10)
    with pytest.raises(ValueError, match="labels is empty"):
        check_labels(np.zeros(0, np.int64), None, 10)
    with pytest.raises(ValueError, match=r"out of range.*0\.\.9 or -1"):
        check_labels(np.array([0, 10]), 2, 10)
    with pytest.raises(ValueError, match=r"out of range.*\(0\.\.9\)"):
        check_labels(np.array([0, -1]), 2, 10, allow_unlabelled=False)
    check_labels(np.array([0, -1, 9]), 3, 10)


def test_backend_problem_is_reported_before_anything_runs():
    assert backend_problem("numpy") is None
    assert "unknown backend" in backend_problem("torch")
    import importlib.util

    if importlib.util.find_spec("cupy") is None:
        assert "not installed" in backend_problem("cupy")
