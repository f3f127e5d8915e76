"""relu, logsumexp, softmax: values, stability, kink convention, VJPs by finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp as scipy_logsumexp

from drmm_ref import _backend
from drmm_ref import primitives as P

from ._helpers import assert_fd_close, assert_identity_close, assert_same_array_kind, central_fd_gradient, host

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)


@st.composite
def array_and_axis(draw):
    shape = draw(shapes)
    naxes = draw(st.integers(1, len(shape)))
    axis = tuple(sorted(draw(st.permutations(range(len(shape))))[:naxes]))
    return shape, (axis[0] if len(axis) == 1 else axis), draw(seeds)


@given(shapes, seeds)
def test_relu_values_and_kink_convention(xp, shape, seed):
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal(shape)
    raw.reshape(-1)[0] = 0.0  # always one kink
    u = _backend.asarray(raw, xp=xp)
    out = P.relu(u)
    assert_same_array_kind(out, u, xp)
    np.testing.assert_array_equal(host(out), np.maximum(raw, 0.0))
    g = _backend.asarray(rng.standard_normal(shape), xp=xp)
    vjp = host(P.relu_vjp(g, u))
    np.testing.assert_array_equal(vjp, np.where(raw > 0, host(g), 0.0))
    assert vjp.reshape(-1)[0] == 0.0  # relu'(0) = 0


@given(shapes, seeds)
def test_relu_vjp_matches_central_differences_away_from_kink(shape, seed):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(shape)
    u = np.sign(z) * (1e-3 + np.abs(z))  # at least 1e-3 from the kink; the FD step is 1e-6
    g = rng.standard_normal(shape)
    assert_fd_close(P.relu_vjp(g, u), central_fd_gradient(lambda v: np.sum(P.relu(v) * g), u))


@given(array_and_axis(), st.sampled_from(["float64", "float32"]))
def test_logsumexp_and_softmax_match_scipy(xp, case, dtype):
    shape, axis, seed = case
    raw = (np.random.default_rng(seed).standard_normal(shape) * 5).astype(dtype)
    x = _backend.asarray(raw, xp=xp)
    lse = P.logsumexp(x, axis)
    assert_same_array_kind(lse, x, xp)
    assert_identity_close(lse, scipy_logsumexp(raw.astype(np.float64), axis=axis).astype(dtype))
    s = P.softmax(x, axis)
    assert_identity_close(xp.sum(s, axis=axis), np.ones_like(host(lse)))


def test_logsumexp_is_stable_for_extreme_inputs(xp):
    raw = np.array([[1e4, 1e4 - 1.0, -1e4], [-1e4, -1e4, -1e4], [-np.inf, -np.inf, -np.inf]], dtype=np.float32)
    out = host(P.logsumexp(_backend.asarray(raw, xp=xp), axis=1))
    assert np.all(np.isfinite(out[:2]))
    np.testing.assert_allclose(out[0], 1e4 + np.log1p(np.exp(-1.0)), rtol=1e-6)
    np.testing.assert_allclose(out[1], -1e4 + np.log(3.0), rtol=1e-6)
    assert out[2] == -np.inf  # an all -inf slice gives -inf, not NaN
    s = host(P.softmax(_backend.asarray(raw[:2], xp=xp), axis=1))
    assert np.all(np.isfinite(s))


def test_logsumexp_keepdims_shape():
    x = np.zeros((2, 3, 4))
    assert P.logsumexp(x, (1, 2), keepdims=True).shape == (2, 1, 1)
    assert P.logsumexp(x, -1).shape == (2, 3)


@given(array_and_axis())
def test_logsumexp_and_softmax_vjps_match_central_differences(case):
    shape, axis, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    g = rng.standard_normal(P.logsumexp(x, axis).shape)
    assert_fd_close(P.logsumexp_vjp(g, x, axis), central_fd_gradient(lambda v: np.sum(P.logsumexp(v, axis) * g), x))
    gs = rng.standard_normal(shape)
    assert_fd_close(P.softmax_vjp(gs, x, axis), central_fd_gradient(lambda v: np.sum(P.softmax(v, axis) * gs), x))


def test_pointwise_bad_input():
    with pytest.raises(TypeError, match="u must be a real floating array"):
        P.relu(np.arange(3))
    with pytest.raises(ValueError, match="grad_out has shape"):
        P.relu_vjp(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        P.logsumexp(np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="repeats an axis"):
        P.logsumexp(np.zeros((2, 2)), (1, -1))
    with pytest.raises(TypeError, match="x must be a real floating array"):
        P.softmax(np.arange(4), 0)
